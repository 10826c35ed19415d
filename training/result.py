"""What a training run gives back (`TrainResult`, for the scripts' closing reports) and what
one optimizer step measured (`StepStats`); both made by training/trainer.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from model.transformer import Transformer
from training.stage import Stage
from training.task_scores import summary


@dataclass
class TrainResult:
    model: Transformer  # the plain module, eval mode, on the training device
    tokenizer: Tokenizer
    stage: Stage  # the stage the engine built (its data, for a script's closing report)
    run_dir: Path
    step: int  # optimizer steps completed, in total
    losses: list[float] = field(default_factory=list)  # train loss of each step run by this call
    val_loss: float | None = None  # the last evaluation's
    val_metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation's scalars
    last_checkpoint: Path | None = None
    stopped_by_signal: int | None = None  # SIGINT/SIGTERM number when stopped early
    skipped_steps: int = 0
    is_main: bool = True  # rank 0 (the process that logs, saves and should print)
    task_scores: dict[str, float] = field(default_factory=dict)  # the last eval/<task>/<metric>

    @property
    def task_summary(self) -> str:
        """The last benchmark scores (eval_tasks), e.g. "hellaswag acc_norm 31.2%"; or ""."""
        return summary(self.task_scores)

    @property
    def val_summary(self) -> str:
        """The last evaluation for a closing report: "val loss 2.0213, 0.6712 bits per byte"."""
        if self.val_loss is None:
            return "val loss n/a"
        bpb = self.val_metrics.get("bpb")  # language-model stages report it; DPO does not
        return f"val loss {self.val_loss:.4f}" + (f", {bpb:.4f} bits per byte" if bpb else "")

    @property
    def should_report(self) -> bool:
        """Whether a script prints its closing report: the run ended normally, on rank 0."""
        return not self.stopped_by_signal and self.is_main

    @property
    def exit_code(self) -> int:
        """128 + the signal number for a run a signal stopped (as shells report it), else 0."""
        return 128 + self.stopped_by_signal if self.stopped_by_signal else 0


@dataclass
class StepStats:
    """What one optimizer step measured (every rank holds the same values)."""

    loss: float  # mean per count unit over the whole step
    grad_norm: float  # before clipping
    tokens: int
    lr: float
    metrics: dict[str, float]  # the stage's metrics, means per count unit
