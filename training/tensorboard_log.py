"""TensorBoard logging (rank 0 only) and the memory figure logged with it.

Scalar names the engine writes: train/loss, train/lr, train/grad_norm, perf/tokens_per_s,
perf/mfu (GPUs with a known peak), perf/peak_memory_gb, val/loss, val/ppl, plus each stage
metric under its own name (train) and under val/<name> (validation), the benchmark scores as
eval/<task>/<metric> (training/task_scores.py); text samples go to samples/<name>. View with
`tensorboard --logdir checkpoints`.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch


class TensorBoardLog:
    """A SummaryWriter that exists only on the main rank; other ranks get no-ops."""

    def __init__(self, log_dir: Path, enabled: bool, purge_step: int | None = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events at steps >= purge_step (logged by the old run after the
            # checkpoint we resume from), so the curves do not show the redone steps twice.
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def texts(self, values: dict[str, str], step: int) -> None:
        if self.writer is not None:
            for name, text in values.items():
                # TensorBoard renders markdown; indenting by 4 spaces keeps the text verbatim.
                self.writer.add_text(f"samples/{name}", "    " + text.replace("\n", "\n    "), step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors; on CPU, the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9
