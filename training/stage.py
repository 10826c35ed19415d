"""The contract between the engine (training/trainer.py) and a stage, and the next-token loss
that pre-training and SFT share.

A stage supplies its data and its loss; the engine does everything else. For each micro-batch
this rank runs in optimizer step `step`:

1. `batch = stage.train_micro_batch(step, micro_index)`: a dict of CPU tensors, a pure function
   of (config.seed, step, micro_index), where micro_index = rank * accumulation_steps +
   micro_step in range(context.micro_batches_per_step). So resume needs no replay, and one
   process accumulating two micro-batches reads what two processes read.
2. `stage.count(batch)`: its count units (trained target tokens, or pairs), known before the
   forward pass; summed over the step's micro-batches and ranks into N.
3. `loss_sum, metrics = stage.loss(model, batch)` under autocast: SUMS over count units. The
   engine backpropagates loss_sum / N (k micro-batches of b give the gradient of one batch of
   k*b) and logs every metric / N under its name. `model(idx) -> logits [B, T, V_pad]`.
4. `stage.tokens(batch)`: tokens processed, for tokens/s and MFU.

At each evaluation the fixed `stage.validation_batches()` (split across ranks) give means per
count unit, `stage.evaluation_scalars(means)` logged as val/<name>; rank 0 logs
`stage.text_samples(model)` (the plain model in eval mode, the RNG forked). `name` is the kind
of tokenized data the stage reads and its checkpoints' "stage"; `epochs` gives train/epoch;
`state_dict()` is saved with every checkpoint.
"""

from __future__ import annotations

import abc
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from model.config import ModelConfig
from tokenizer.encoding import ChatTokenizer
from tokenizer.token_bytes import token_byte_lengths
from training.data import Corpus, EpochCounter, Interleave
from training.device import Distributed, autocast

Batch = dict[str, torch.Tensor]
IGNORE_INDEX = -100  # a target that is not trained (SFT prompts, padding)


@dataclass
class RunContext:
    """What the engine knows when it builds the stage."""

    config: object  # a training.config.TrainConfig (or a stage's subclass)
    model_config: ModelConfig
    tokenizer: ChatTokenizer
    tokenizer_path: Path
    tokenizer_sha256: str
    dist: Distributed
    precision: str  # "bf16" | "fp16" | "fp32"
    accumulation_steps: int  # micro-batches per rank per optimizer step
    micro_batches_per_step: int  # all ranks together
    max_steps: int

    @property
    def tokens_per_step(self) -> int:
        return self.micro_batches_per_step * self.config.micro_batch_size * self.config.block_size

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self):
        return autocast(self.precision, self.device)

    def compiled(self, function):
        """`function` through torch.compile with --compile on a GPU (a loss over [B, T, V]
        logits in one fused kernel, without fp32 copies of them), else as it is."""
        if self.config.compile and self.device.type == "cuda":
            return torch.compile(function)
        return function


class Stage(abc.ABC):
    """One training stage's data and loss (see the module docstring)."""

    name: str  # "pre_training" | "sft" | "dpo"
    extra_forward_passes: int = 0  # forward-only passes per trained token (DPO's reference)
    epochs: EpochCounter | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not isinstance(getattr(cls, "name", None), str):
            raise TypeError(f"stage {cls.__name__} must set the class attribute name")

    @abc.abstractmethod
    def train_micro_batch(self, step: int, micro_index: int) -> Batch: ...

    @abc.abstractmethod
    def validation_batches(self) -> list[Batch]: ...

    @abc.abstractmethod
    def count(self, batch: Batch) -> int: ...

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]: ...

    def tokens(self, batch: Batch) -> int:
        return batch["inputs"].numel()

    def evaluation_scalars(self, means: dict[str, float]) -> dict[str, float]:
        return means

    def text_samples(self, model: torch.nn.Module) -> dict[str, str]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy in fp32; logits [B, T, V_pad], targets [B, T]."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) [B, T] in fp32, 0 where the target is IGNORE_INDEX."""
    trained = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V_pad]
    picked = log_probs.gather(-1, targets.masked_fill(~trained, 0).unsqueeze(-1)).squeeze(-1)
    return picked * trained


class LanguageModelStage(Stage):
    """Next-token cross-entropy on {"inputs", "targets"} [B, T]; the count unit is a trained
    target. Validation batches also carry "target_bytes" [B, T] (for bits per byte: special
    tokens left out, as nanochat does) and, for a mixture, "corpus" [B] (val/loss/<name>)."""

    mixture: Interleave | None = None  # which corpus each slot reads (None: one corpus)
    corpus_tags: tuple[str, ...] = ()  # a mixture's corpora, in the order of batch["corpus"]

    def __init__(self, context: RunContext):
        self.context = context
        self.token_bytes = torch.from_numpy(token_byte_lengths(context.tokenizer))  # [V]
        self.cross_entropy_sum = context.compiled(cross_entropy_sum)
        self.token_log_probs = context.compiled(token_log_probs)

    def mix(self, corpora: list[Corpus]) -> None:
        if len(corpora) > 1:
            self.mixture = Interleave([corpus.weight for corpus in corpora])
            self.corpus_tags = tuple(corpus.name for corpus in corpora)

    def validation_batch(self, batch: Batch, corpus: int) -> Batch:
        """`batch` with its target bytes and, in a mixture, its corpus's index."""
        trained = batch["targets"] != IGNORE_INDEX
        target_bytes = self.token_bytes[batch["targets"].masked_fill(~trained, 0)] * trained
        batch = {**batch, "target_bytes": target_bytes}  # [B, T]
        if self.corpus_tags:
            batch["corpus"] = torch.full((len(batch["inputs"]),), corpus)  # [B]
        return batch

    def count(self, batch: Batch) -> int:
        return int((batch["targets"] != IGNORE_INDEX).sum())

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        logits, targets = model(batch["inputs"]), batch["targets"]  # [B, T, V_pad], [B, T]
        if "target_bytes" not in batch:
            return self.cross_entropy_sum(logits, targets), {}
        nats = -self.token_log_probs(logits, targets)  # [B, T]
        target_bytes = batch["target_bytes"]
        text_nats = nats * (target_bytes > 0)
        metrics = {"text_nats": text_nats.sum(), "text_bytes": target_bytes.sum().float()}
        for index, name in enumerate(self.corpus_tags if "corpus" in batch else ()):
            rows = (batch["corpus"] == index).float()[:, None]  # [B, 1]
            metrics[f"corpus/{name}/nats"] = (nats * rows).sum()
            metrics[f"corpus/{name}/count"] = ((targets != IGNORE_INDEX) * rows).sum()
            metrics[f"corpus/{name}/text_nats"] = (text_nats * rows).sum()
            metrics[f"corpus/{name}/text_bytes"] = (target_bytes * rows).sum().float()
        return nats.sum(), metrics

    def evaluation_scalars(self, means: dict[str, float]) -> dict[str, float]:
        return language_model_scalars(means)


def language_model_scalars(means: dict[str, float]) -> dict[str, float]:
    """loss, ppl, bpb (bits per byte) and loss/<name>, bpb/<name> per corpus of a mixture."""
    scalars = dict(means)
    text_nats, text_bytes = scalars.pop("text_nats", None), scalars.pop("text_bytes", None)
    scalars["ppl"] = math.exp(min(scalars["loss"], 50.0))
    if text_bytes:
        scalars["bpb"] = text_nats / (text_bytes * math.log(2))
    names = [key.split("/")[1] for key in scalars if key.startswith("corpus/")]
    for name in dict.fromkeys(names):  # means per count unit: their ratios are per corpus
        nats, count, corpus_nats, corpus_bytes = (
            scalars.pop(f"corpus/{name}/{part}")
            for part in ("nats", "count", "text_nats", "text_bytes")
        )
        scalars[f"loss/{name}"] = nats / max(count, 1e-30)
        if corpus_bytes:
            scalars[f"bpb/{name}"] = corpus_nats / (corpus_bytes * math.log(2))
    return scalars
