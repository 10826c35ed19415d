"""DPO: preference pairs in, the DPO loss of the policy against a frozen reference out.

The reference is the --init_from weights, `live` (a frozen copy run on every batch) or
`precomputed` (every pair scored once, stored beside the pairs, refused when made by other
weights, block_size or precision). B pairs are 2B rows, chosen then rejected, scored in one
forward pass; targets are the reply tokens. With z = (log pi(chosen) - log pi(rejected)) -
(log ref(chosen) - log ref(rejected)) and e = label_smoothing (TRL's names and formulas):

    sigmoid  -(1-e) log s(beta z) - e log s(-beta z)             DPO; e > 0: cDPO
    robust   (-(1-e) log s(beta z) + e log s(-beta z)) / (1-2e)  Chowdhury et al. 2024
    ipo      (z - 1/(2 beta))^2, on per-token mean log-probs     Azar et al. 2023

--rpo_alpha adds that times the chosen reply's mean per-token NLL (RPO, Pang et al. 2024).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.atomic import atomic_write_bytes, atomic_write_text, sha256_file
from common.errors import UserError
from model.checkpoint import WEIGHTS_FILE, load_model, read_checkpoint_config, resolve_checkpoint
from tokenizer.tokenized_data import TokenizedSplit
from training.config import option, whole_micro_batches
from training.data import EpochCounter, open_corpora
from training.device import barrier
from training.sft_stage import SFTConfig, answer_samples
from training.stage import IGNORE_INDEX, Batch, RunContext, Stage, token_log_probs

LOSS_TYPES = ("sigmoid", "robust", "ipo")
VALUES_FILE, IDENTITY_FILE = "reference_logps.bin", "reference_logps.json"


@dataclass(kw_only=True)
class DPOConfig(SFTConfig):
    """SFTConfig plus what DPO adds; micro_batch_size counts PAIRS (2 rows each)."""

    pairs_per_step: int = option("pairs per optimizer step (> 0: the step's size)", at_least=0)
    beta: float = option("how far the policy may move from the reference", positive=True)
    loss_type: str = option("sigmoid (DPO, cDPO), robust or ipo", choices=LOSS_TYPES)
    label_smoothing: float = option("assumed share of wrong labels", at_least=0, below=0.5)
    rpo_alpha: float = option("weight of the chosen reply's mean NLL (RPO)", at_least=0)
    reference: str = option(
        "live: a frozen copy of the model; precomputed: scored once, on disk",
        choices=("live", "precomputed"),
    )
    recompute_reference: bool = option("precomputed: recompute stored reference log-probs")

    def micro_batches_per_step(self, world_size: int) -> int:
        if self.pairs_per_step:
            return whole_micro_batches(
                "pairs_per_step", self.pairs_per_step, self.micro_batch_size, world_size
            )
        return super().micro_batches_per_step(world_size)

    def check(self) -> None:
        super().check()
        step_tokens = self.pairs_per_step * self.block_size
        if self.pairs_per_step and self.tokens_per_step not in (0, step_tokens):
            raise UserError(
                f"--pairs_per_step={self.pairs_per_step} and --tokens_per_step="
                f"{self.tokens_per_step} disagree; leave --tokens_per_step=0"
            )
        if self.loss_type == "ipo" and self.label_smoothing:
            raise UserError("--label_smoothing applies to the sigmoid and robust losses, not ipo")
        if not self.init_from:
            raise UserError("DPO needs --init_from=checkpoints/<sft run>: its weights, frozen")


@dataclass
class PreferencePairs:
    """The usable pairs of one dpo split, replies cut to the block. `pair_index[k]` is the k-th
    usable pair's row in pair_offsets.bin (the key into stored reference log-probs)."""

    split: TokenizedSplit
    pair_index: np.ndarray  # [K] int64
    prompt_start: np.ndarray  # [K]
    prompt_length: np.ndarray  # [K]
    chosen_start: np.ndarray  # [K]
    chosen_length: np.ndarray  # [K], after the cut to block_size + 1
    rejected_start: np.ndarray  # [K]
    rejected_length: np.ndarray  # [K]
    stats: dict
    pad_id: int  # fills a row's end: never a target

    def __len__(self) -> int:
        return len(self.pair_index)


def load_pairs(split: TokenizedSplit, block_size: int, pad_id: int) -> PreferencePairs:
    """Check a split's pair offsets; skip (and count) pairs whose prompt fills the block, with
    an empty side, or identical once cut; cut (and count) replies past block_size + 1."""
    rows = np.asarray(split.pair_offsets, np.int64).reshape(-1, 4)  # [N, 4]
    p, c, r, e = rows.T
    if not (ordered := (p <= c) & (c <= r) & (r <= e) & (e <= len(split.tokens))).all():
        bad = int(np.flatnonzero(~ordered)[0])
        raise UserError(
            f"{split.directory}/pair_offsets.bin row {bad} = {rows[bad].tolist()} is "
            "not [prompt_start <= chosen_start <= rejected_start <= end]; "
            "re-tokenize this dataset"
        )
    prompt_length, chosen_length, rejected_length = c - p, r - c, e - r
    room = np.maximum(block_size + 1 - prompt_length, 0)  # reply tokens that fit
    too_long = prompt_length >= block_size
    empty = (chosen_length == 0) | (rejected_length == 0) | (prompt_length == 0)
    cut_chosen, cut_rejected = np.minimum(chosen_length, room), np.minimum(rejected_length, room)
    truncated = (cut_chosen < chosen_length) | (cut_rejected < rejected_length)
    identical = np.zeros(len(rows), bool)
    for k in np.flatnonzero(~too_long & ~empty & (cut_chosen == cut_rejected)).tolist():
        a, b, n = int(c[k]), int(r[k]), int(cut_chosen[k])
        identical[k] = np.array_equal(split.tokens[a : a + n], split.tokens[b : b + n])
    keep = ~too_long & ~empty & ~identical
    stats = {
        "pairs": len(rows),
        "skipped_prompt_fills_context": int(too_long.sum()),
        "skipped_empty": int((empty & ~too_long).sum()),
        "skipped_identical": int(identical.sum()),
        "usable": int(keep.sum()),
        "replies_truncated": int((truncated & keep).sum()),
    }
    if not keep.any():
        raise UserError(
            f"{split.directory}: no usable preference pair at block_size "
            f"{block_size} ({stats}); use a larger block_size or shorter prompts"
        )
    k = np.flatnonzero(keep)
    return PreferencePairs(
        split, k, p[k], prompt_length[k], c[k], cut_chosen[k], r[k], cut_rejected[k], stats, pad_id
    )


def sample_positions(count: int, seed: int, first: int, size: int) -> np.ndarray:
    """Pairs at run positions first .. first+size-1: each epoch (position // count) visits
    every pair once, in an order seeded by (seed, epoch)."""
    positions = np.arange(first, first + size, dtype=np.int64)
    out = np.empty(size, np.int64)
    for epoch in np.unique(positions // count).tolist():
        where = positions // count == epoch
        order = np.random.default_rng([seed, epoch]).permutation(count)
        out[where] = order[positions[where] % count]
    return out


def build_batch(pairs: PreferencePairs, ks: np.ndarray) -> Batch:
    """Inputs and targets [2B, T] for usable pairs ks: prompt + chosen rows, then prompt +
    rejected, right-padded to the longest (T <= block_size); targets only on reply tokens."""
    tokens, sequences = pairs.split.tokens, []
    replies = (
        (pairs.chosen_start, pairs.chosen_length),
        (pairs.rejected_start, pairs.rejected_length),
    )
    for starts, lengths in replies:
        for k in ks.tolist():
            prompt = tokens[pairs.prompt_start[k] : pairs.prompt_start[k] + pairs.prompt_length[k]]
            reply = tokens[starts[k] : starts[k] + lengths[k]]
            sequences.append((np.concatenate([prompt, reply]), len(prompt)))
    T = max(len(s) for s, _ in sequences) - 1
    inputs = torch.full((len(sequences), T), pairs.pad_id, dtype=torch.long)  # [2B, T]
    targets = torch.full((len(sequences), T), IGNORE_INDEX, dtype=torch.long)  # [2B, T]
    for row, (sequence, prompt_length) in enumerate(sequences):
        sequence = torch.from_numpy(sequence.astype(np.int64))
        inputs[row, : len(sequence) - 1] = sequence[:-1]
        # position t predicts token t + 1: a reply token once t + 1 >= the prompt's length
        targets[row, prompt_length - 1 : len(sequence) - 1] = sequence[prompt_length:]
    return {"inputs": inputs, "targets": targets}


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor, log_probs=token_log_probs):
    """(summed reply log-probs [N], reply token counts [N]) of logits [N, T, V], targets [N, T]."""
    return log_probs(logits, targets).sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


def dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="sigmoid", label_smoothing=0.0):
    """(per-pair losses [B], chosen rewards [B], rejected rewards [B]) from the policy's (pc, pr)
    and the reference's (rc, rr) log-probs [B] of the chosen and rejected replies; the rewards
    are detached, and no gradient reaches the reference."""
    z = (pc - pr) - (rc - rr).detach()
    e = label_smoothing
    if loss_type == "ipo":
        losses = (z - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(beta * z) + e * F.logsigmoid(-beta * z)) / (1 - 2 * e)
    else:  # sigmoid
        losses = -(1 - e) * F.logsigmoid(beta * z) - e * F.logsigmoid(-beta * z)
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


def preference_metrics(chosen_rewards, rejected_rewards, policy_chosen, policy_rejected) -> dict:
    """SUMS over the pairs (micro-batches, accumulation and ranks then add up exactly)."""
    return {
        "rewards/chosen": chosen_rewards.sum(),
        "rewards/rejected": rejected_rewards.sum(),
        "rewards/margins": (chosen_rewards - rejected_rewards).sum(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
        "logps/chosen": policy_chosen.detach().sum(),
        "logps/rejected": policy_rejected.detach().sum(),
    }


def reference_identity(init_from: str, block_size: int, precision: str) -> dict:
    """What makes stored reference values valid for a run: same weights, cut and precision."""
    step_dir = resolve_checkpoint(init_from)
    return {
        "checkpoint": str(step_dir),
        "weights_sha256": sha256_file(step_dir / WEIGHTS_FILE),
        "step": read_checkpoint_config(step_dir).get("step"),
        "block_size": block_size,
        "precision": precision,
    }


def read_reference_logps(split_dir: Path, identity: dict, num_pairs: int) -> np.ndarray | None:
    """float32 [num_pairs, 2] stored values; None if missing; UserError if another run's."""
    identity_path, values_path = split_dir / IDENTITY_FILE, split_dir / VALUES_FILE
    try:
        stored = json.loads(identity_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # missing or unreadable: recomputed
    for key in ("weights_sha256", "block_size", "precision"):
        if stored.get(key) != identity[key]:
            raise UserError(
                f"{values_path} was computed with {key}={stored.get(key)!r} (checkpoint "
                f"{stored.get('checkpoint')}), but this run's reference has {identity[key]!r}; "
                "pass --recompute_reference to replace it"
            )
    values = np.fromfile(values_path, dtype="<f4") if values_path.is_file() else None
    if stored.get("num_pairs") != num_pairs or values is None or values.size != num_pairs * 2:
        return None  # incomplete: recomputed
    return values.reshape(num_pairs, 2)


@torch.no_grad()
def write_reference_logps(model, pairs: PreferencePairs, context: RunContext, identity: dict):
    """Score every usable pair of a split with the reference (NaN: skipped pairs); the .bin
    first, the .json last, each atomically: an interrupted run leaves nothing finished-looking."""
    values = np.full((len(pairs.split.pair_offsets), 2), np.nan, np.float32)
    size, split_dir = context.config.micro_batch_size, pairs.split.directory
    for first in tqdm(range(0, len(pairs), size), desc=f"reference log-probs ({split_dir.name})"):
        ks = np.arange(first, min(first + size, len(pairs)))
        batch = build_batch(pairs, ks)
        with context.autocast():  # the precision of the training forward passes
            logits = model(batch["inputs"].to(context.device))  # [2B, T, V_pad]
        sums = sequence_logps(logits, batch["targets"].to(context.device))[0].float().cpu()
        values[pairs.pair_index[ks]] = sums.view(2, -1).T.numpy()  # [B, (chosen, rejected)]
    (split_dir / IDENTITY_FILE).unlink(missing_ok=True)
    atomic_write_bytes(split_dir / VALUES_FILE, values.astype("<f4").tobytes())
    record = {**identity, "num_pairs": int(values.shape[0])}
    atomic_write_text(split_dir / IDENTITY_FILE, json.dumps(record, indent=2) + "\n")


class DPOStage(Stage):
    name = "dpo"

    def __init__(self, context: RunContext):
        config = context.config
        self.context, self.config = context, config
        if "," in config.data_dir:
            raise UserError(
                f"--data_dir={config.data_dir}: DPO reads one tokenized folder, not a mixture"
            )
        (corpus,) = open_corpora(context, self.name, ("train", config.eval_split))
        self.pairs = {
            name: load_pairs(split, config.block_size, context.tokenizer.pad_id)
            for name, split in corpus.splits.items()
        }
        self.train_pairs, self.eval_pairs = self.pairs["train"], self.pairs[config.eval_split]
        pairs_per_step = context.micro_batches_per_step * config.micro_batch_size
        self.epochs = EpochCounter([corpus], [len(self.train_pairs)], pairs_per_step, "pairs")
        if context.is_main:
            print(f"dpo pairs: train {self.train_pairs.stats}")
            print(f"dpo pairs: {config.eval_split} {self.eval_pairs.stats}")
            print(self.epochs.report(context.max_steps))
        self.identity = reference_identity(config.init_from, config.block_size, context.precision)
        self.log_probs = context.compiled(token_log_probs)
        self.reference, self.reference_values = None, {}
        if config.reference == "live":
            self.reference = load_model(config.init_from, device=context.device)[0]
            self.reference.requires_grad_(False).eval()
            self.extra_forward_passes = 1  # MFU counts it as a third of a training pass
            if config.compile:
                self.reference = torch.compile(self.reference)
        else:
            self.reference_values = self.precomputed_values()

    def precomputed_values(self) -> dict[str, np.ndarray]:
        """Stored reference log-probs per split, computed first (on rank 0) where missing."""

        def stored(pairs: PreferencePairs) -> np.ndarray | None:
            return read_reference_logps(
                pairs.split.directory, self.identity, len(pairs.split.pair_offsets)
            )

        if self.context.is_main:
            recompute = self.config.recompute_reference
            missing = [pairs for pairs in self.pairs.values() if recompute or stored(pairs) is None]
            model = load_model(self.config.init_from, self.context.device)[0] if missing else None
            for pairs in missing:
                write_reference_logps(model, pairs, self.context, self.identity)
        barrier(self.context.dist)  # the other ranks wait for rank 0's files
        values = {name: stored(pairs) for name, pairs in self.pairs.items()}
        if any(value is None for value in values.values()):
            raise UserError(f"{self.config.data_dir}: reference log-probs are missing")
        return values

    def batch(self, split: str, ks: np.ndarray) -> Batch:
        batch = build_batch(self.pairs[split], ks)
        if self.reference_values:
            stored = self.reference_values[split][self.pairs[split].pair_index[ks]]  # [B, 2]
            batch["reference_logps"] = torch.from_numpy(np.ascontiguousarray(stored.T)).flatten()
        return batch  # reference_logps [2B]: chosen then rejected, as the rows

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        size = self.config.micro_batch_size
        first = (step * self.context.micro_batches_per_step + micro_index) * size
        return self.batch(
            "train", sample_positions(len(self.train_pairs), self.config.seed, first, size)
        )

    def validation_batches(self) -> list[Batch]:
        size = self.config.micro_batch_size
        count = min(len(self.eval_pairs), self.config.eval_batches * size)
        return [
            self.batch(self.config.eval_split, np.arange(first, min(first + size, count)))
            for first in range(0, count, size)
        ]

    def count(self, batch: Batch) -> int:
        return batch["inputs"].shape[0] // 2  # pairs

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        inputs, targets, config = batch["inputs"], batch["targets"], self.config
        logps, counts = sequence_logps(model(inputs), targets, self.log_probs)  # [2B] each
        reference_logps = batch.get("reference_logps")
        if reference_logps is None:
            with torch.no_grad():
                reference_logps = sequence_logps(self.reference(inputs), targets, self.log_probs)[0]
        B = len(logps) // 2
        chosen_nll = -logps[:B] / counts[:B]  # [B] mean NLL per chosen token (RPO)
        if config.loss_type == "ipo":  # on per-token mean log-probs
            logps, reference_logps = logps / counts, reference_logps / counts
        pc, pr, rc, rr = logps[:B], logps[B:], reference_logps[:B], reference_logps[B:]
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            pc, pr, rc, rr, config.beta, config.loss_type, config.label_smoothing
        )
        metrics = preference_metrics(chosen_rewards, rejected_rewards, pc, pr)
        if config.rpo_alpha:
            losses = losses + config.rpo_alpha * chosen_nll
            metrics["nll/chosen"] = chosen_nll.detach().sum()
        return losses.sum(), metrics

    def eval_prompt(self, k: int) -> list[int]:
        """Token ids of held-out usable pair k's prompt (it opens the answer)."""
        start, length = int(self.eval_pairs.prompt_start[k]), int(self.eval_pairs.prompt_length[k])
        return self.eval_pairs.split.tokens[start : start + length].astype(np.int64).tolist()

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        count = min(self.config.num_text_samples, len(self.eval_pairs))
        prompts = [self.eval_prompt(k) for k in range(count)]
        return answer_samples(
            model, self.context.tokenizer, prompts, self.config.sample_max_new_tokens
        )

    def state_dict(self) -> dict:
        return {"reference_weights_sha256": self.identity["weights_sha256"]}

    def load_state_dict(self, state: dict) -> None:
        if state["reference_weights_sha256"] != self.identity["weights_sha256"]:
            raise UserError(
                f"--init_from={self.config.init_from} holds other weights than the reference "
                "this run started with; resume with the original checkpoint"
            )
