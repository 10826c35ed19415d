"""The DPO stage: preference pairs in, DPO loss against a frozen reference out.

The policy is the model the engine trains, started from `--init_from` (an SFT checkpoint). The
reference is the same starting weights, frozen, and comes in one of two forms (`--reference`):

- `live`: a second copy of the model in eval mode with requires_grad off, run under the same
  autocast as the policy on every batch. Costs the weights' memory and one more forward pass.
- `precomputed`: the reference scores every pair once before training (training/
  reference_logps.py) and each batch carries its pairs' two numbers. No second model on the GPU.
  Stored values from another checkpoint, block_size or precision are refused.

Per micro-batch of B pairs the policy scores 2B rows in one forward pass (training/dpo_data.py:
chosen rows first, then rejected); `loss_sum` is the sum of the B per-pair losses and `count`
is B, so the engine's train/loss and val/loss are mean per-pair DPO losses (plus, with
`--rpo_alpha`, that weight times the chosen reply's mean per-token NLL: RPO, logged as
nll/chosen); the whole loss is training/dpo_loss.py's `preference_loss`. Metrics (rewards/*,
logps/*) are sums over pairs, which the engine turns into means; validation runs on
`--eval_split` (the test split by default) and is logged as val/rewards/accuracies etc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from common.errors import UserError
from model.checkpoint import load_model
from training.config import TrainConfig, option
from training.data_checks import open_training_data
from training.dpo_data import PreferencePairs, build_batch, load_pairs, sample_positions
from training.dpo_loss import LOSS_TYPES, check_loss_settings, preference_loss, sequence_logps
from training.epochs import EpochCounter
from training.reference_logps import (
    compute_reference_logps,
    read_reference_logps,
    reference_identity,
    write_reference_logps,
)
from training.sft_stage import answer_samples
from training.stage import Batch, RunContext, Stage

REFERENCE_MODES = ("live", "precomputed")


@dataclass(kw_only=True)
class DPOConfig(TrainConfig):
    """TrainConfig plus what DPO adds (the values are in post_training_dpo.py's CONFIG).

    micro_batch_size counts PAIRS (each pair is two rows of at most block_size tokens). The
    engine sizes a step in tokens (micro-batches x micro_batch_size x block_size), so
    `pairs_per_step` > 0 makes a step pairs_per_step x block_size tokens.
    """

    RESUME_MUST_MATCH: ClassVar[tuple[str, ...]] = (
        *TrainConfig.RESUME_MUST_MATCH, "pairs_per_step", "beta", "loss_type", "label_smoothing",
        "rpo_alpha",
    )  # fmt: skip

    pairs_per_step: int = option(
        "preference pairs per optimizer step (> 0: a step is this x block_size tokens, and "
        "tokens_per_step must be 0 or agree)"
    )
    beta: float = option("DPO temperature: how far the policy may move from the reference")
    loss_type: str = option(
        "sigmoid = DPO (with label_smoothing > 0: conservative DPO); robust = robust DPO; "
        "ipo = IPO (length-averaged log-probs)",
        choices=LOSS_TYPES,
    )
    label_smoothing: float = option(
        "assumed fraction of wrong preference labels, in [0, 0.5). sigmoid: conservative DPO "
        "(cDPO), as TRL 0.x computes it (TRL 1.x ignores it for sigmoid); robust: robust DPO"
    )
    rpo_alpha: float = option(
        "weight of an NLL term on the chosen reply, the chosen reply's mean per-token NLL, as in "
        "the RPO paper (Pang et al. 2024; TRL 1.x replaced its own rpo_alpha with an 'sft' loss "
        "term): keeps DPO from lowering the chosen reply's likelihood too"
    )
    reference: str = option(
        "live = keep a frozen copy of the starting model; precomputed = score every pair once "
        "into the data folder (saves the copy's memory and forward pass)",
        choices=REFERENCE_MODES,
    )
    recompute_reference: bool = option(
        "precomputed only: recompute stored reference log-probs even if present"
    )
    eval_split: str = option("held-out split for val/ metrics and text samples")
    num_text_samples: int = option("held-out prompts answered in TensorBoard at each eval")

    def optimizer_step_tokens(self) -> int:
        if self.pairs_per_step:
            return self.pairs_per_step * self.block_size
        return self.tokens_per_step

    def step_size_flag(self, tokens: int) -> str:
        if self.pairs_per_step:
            return f"--pairs_per_step={tokens // self.block_size}"
        return super().step_size_flag(tokens)

    def check(self) -> None:
        super().check()
        if self.pairs_per_step < 0:
            raise UserError(f"--pairs_per_step={self.pairs_per_step} must be >= 0")
        if self.pairs_per_step % self.micro_batch_size:
            raise UserError(
                f"--pairs_per_step={self.pairs_per_step} must be a multiple of "
                f"--micro_batch_size={self.micro_batch_size} (pairs per forward pass)"
            )
        if self.pairs_per_step and self.tokens_per_step not in (0, self.optimizer_step_tokens()):
            raise UserError(
                f"--pairs_per_step={self.pairs_per_step} and --tokens_per_step="
                f"{self.tokens_per_step} disagree; set --pairs_per_step=0 to size steps in "
                "tokens, or leave --tokens_per_step=0"
            )
        check_loss_settings(self.loss_type, self.beta, self.label_smoothing)
        if self.rpo_alpha < 0:
            raise UserError(f"--rpo_alpha={self.rpo_alpha} must be >= 0 (1.0 is the paper's)")
        if not self.init_from:
            raise UserError(
                "DPO needs --init_from=checkpoints/<sft run>: the starting weights are also the "
                "frozen reference"
            )
        if self.num_text_samples < 0:
            raise UserError(f"--num_text_samples={self.num_text_samples} must be >= 0")


class DPOStage(Stage):
    name = "dpo"

    def __init__(self, context: RunContext):
        config = context.config
        self.context = context
        self.config = config
        self.micro_batch_size = config.micro_batch_size
        vocab_size = context.model_config.vocab_size
        splits = open_training_data(
            config.data_dir, self.name, context.tokenizer_sha256, vocab_size,
            splits=("train", config.eval_split),
        )  # fmt: skip
        for split in splits.values():
            split.check_token_ids(vocab_size)
        self.train_pairs = load_pairs(splits["train"], config.block_size)
        self.eval_pairs = load_pairs(splits[config.eval_split], config.block_size)
        self.epochs = EpochCounter(
            names=[config.data_dir],
            weights=[1.0],
            sizes=[len(self.train_pairs)],
            units_per_step=context.micro_batches_per_step * config.micro_batch_size,
            unit="pairs",
        )
        if context.is_main:
            print(f"dpo pairs: train {self.train_pairs.stats}")
            print(f"dpo pairs: {config.eval_split} {self.eval_pairs.stats}")
            print("\n".join(self.epochs.report(context.max_steps)))
        self.identity = reference_identity(config.init_from, config.block_size, context.precision)
        self.reference: torch.nn.Module | None = None
        self.reference_values: dict[str, np.ndarray] = {}
        if config.reference == "live":
            self.reference = load_model(config.init_from, device=context.device)[0]
            self.reference.requires_grad_(False).eval()
            self.extra_forward_passes = 1
            if config.compile:
                self.reference = torch.compile(self.reference)
        else:
            self.reference_values = self._precomputed_values()

    # -- reference -----------------------------------------------------------------------
    def _precomputed_values(self) -> dict[str, np.ndarray]:
        """Stored reference log-probs per split, computed first (on rank 0) where missing."""
        pairs_by_split = {"train": self.train_pairs, self.config.eval_split: self.eval_pairs}
        if self.context.is_main:
            model = None
            for name, pairs in pairs_by_split.items():
                split_dir = pairs.split.directory
                num_pairs = len(pairs.split.pair_offsets)
                stored = None
                if not self.config.recompute_reference:
                    stored = read_reference_logps(split_dir, self.identity, num_pairs)
                if stored is None:
                    if model is None:
                        model = load_model(self.config.init_from, device=self.context.device)[0]
                    values = compute_reference_logps(
                        model,
                        pairs,
                        self.micro_batch_size,
                        self.context.device,
                        self.context.autocast,
                        description=f"reference log-probs ({name})",
                    )
                    write_reference_logps(split_dir, values, self.identity)
            del model
        self.context.barrier()  # other ranks wait for rank 0's files
        values = {}
        for name, pairs in pairs_by_split.items():
            stored = read_reference_logps(
                pairs.split.directory, self.identity, len(pairs.split.pair_offsets)
            )
            if stored is None:
                raise UserError(f"{pairs.split.directory}: reference log-probs are missing")
            values[name] = stored
        return values

    # -- batches -------------------------------------------------------------------------
    def _batch(self, pairs: PreferencePairs, split: str, ks: np.ndarray) -> Batch:
        inputs, targets = build_batch(pairs, ks)
        batch = {"inputs": inputs, "targets": targets}
        if self.reference_values:
            stored = self.reference_values[split][pairs.pair_index[ks]]  # [B, 2]
            batch["reference_logps"] = torch.from_numpy(np.ascontiguousarray(stored.T)).flatten()
        return batch

    def train_micro_batch(self, step: int, micro_index: int) -> Batch:
        micro_batch = step * self.context.micro_batches_per_step + micro_index
        B = self.micro_batch_size
        ks = sample_positions(len(self.train_pairs), self.config.seed, micro_batch * B, B)
        return self._batch(self.train_pairs, "train", ks)

    def validation_batches(self) -> list[Batch]:
        B, pairs = self.micro_batch_size, self.eval_pairs
        count = min(len(pairs), self.config.eval_batches * B)
        return [
            self._batch(pairs, self.config.eval_split, np.arange(first, min(first + B, count)))
            for first in range(0, count, B)
        ]

    def count(self, batch: Batch) -> int:
        return batch["inputs"].shape[0] // 2  # pairs

    def tokens(self, batch: Batch) -> int:
        return batch["inputs"].numel()

    # -- loss ----------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        inputs, targets = batch["inputs"], batch["targets"]
        logps, counts = sequence_logps(model(inputs), targets)  # [2B]: chosen then rejected
        reference_logps = batch.get("reference_logps")  # [2B], same layout, when precomputed
        if reference_logps is None:
            with torch.no_grad():
                reference_logps, _ = sequence_logps(self.reference(inputs), targets)
        config = self.config
        losses, metrics = preference_loss(
            logps, reference_logps, counts, config.loss_type, config.beta,
            config.label_smoothing, config.rpo_alpha,
        )  # fmt: skip
        return losses.sum(), metrics

    # -- text samples --------------------------------------------------------------------
    def eval_prompt(self, k: int) -> list[int]:
        """Token ids of held-out usable pair k's prompt (ends with `<|assistant|>`)."""
        pairs = self.eval_pairs
        start, length = int(pairs.prompt_start[k]), int(pairs.prompt_length[k])
        return pairs.split.tokens[start : start + length].astype(np.int64).tolist()

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        count = min(self.config.num_text_samples, len(self.eval_pairs))
        prompts = [self.eval_prompt(k) for k in range(count)]
        return answer_samples(
            model, self.context.tokenizer, prompts, self.config.sample_max_new_tokens
        )

    # -- resume safety -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"reference_weights_sha256": self.identity["weights_sha256"]}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("reference_weights_sha256")
        if saved is not None and saved != self.identity["weights_sha256"]:
            raise UserError(
                f"--init_from={self.config.init_from} holds different weights than the reference "
                "this run started with; resume with the original checkpoint"
            )
