"""Pre-training batches: random windows of block_size + 1 tokens from the memory-mapped shards.

The token stream of a split is all its documents back to back (each begins with
`<|endoftext|>`), so a window may span documents; the model learns that `<|endoftext|>` starts
something new. A window w gives inputs w[:-1] and targets w[1:].

Training windows start at offsets drawn from `numpy.random.default_rng([seed, step,
micro_index])`: the data of any step is a pure function of its numbers, so a resumed run reads
exactly what an uninterrupted one would, without replaying the loader. Windows are sampled
with replacement (over a long run this is ~equal to epochs over shuffled windows).

Validation uses a fixed set of windows evenly spaced over the validation split, so successive
val/loss values compare like with like.

A mixture of corpora (training/data_mixture.py) picks each window's corpus by slot, then its
start from the same [seed, step, micro_index] generator (`mixed_windows`).
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError
from tokenizer.tokenized_data import TokenizedSplit


class WindowSampler:
    """Cuts (inputs, targets) windows out of one split's token array."""

    def __init__(self, split: TokenizedSplit, block_size: int, vocab_size: int):
        self.split = split
        self.tokens = split.tokens
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.last_start = len(self.tokens) - (block_size + 1)  # largest valid window start
        if self.last_start < 0:
            raise UserError(
                f"{split.directory} holds {len(self.tokens)} tokens, fewer than one window of "
                f"block_size + 1 = {block_size + 1}; use more data or a smaller --block_size"
            )

    def windows(self, starts: np.ndarray) -> dict[str, torch.Tensor]:
        """{"inputs": [B, T] int64, "targets": [B, T] int64} for window start offsets [B]."""
        rows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts.tolist()])
        largest = int(rows.max())
        if largest >= self.vocab_size:  # cheap per-batch guard against a damaged shard
            raise UserError(
                f"{self.split.directory}: token id {largest} near offset {int(starts[0])} is "
                f"outside the model's vocabulary ({self.vocab_size}); re-tokenize the data"
            )
        rows = torch.from_numpy(rows.astype(np.int64))  # [B, T+1]
        return {"inputs": rows[:, :-1], "targets": rows[:, 1:]}  # [B, T] each

    def random_starts(self, batch_size: int, seed: int, step: int, micro_index: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, micro_index])
        return rng.integers(0, self.last_start, size=batch_size, endpoint=True)

    def evenly_spaced_starts(self, count: int) -> np.ndarray:
        return np.linspace(0, self.last_start, num=count).round().astype(np.int64)


def mixed_windows(
    samplers: list[WindowSampler], corpus: np.ndarray, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Windows [B] where window i comes from samplers[corpus[i]], at a start drawn by `rng`."""
    highs = np.array([sampler.last_start for sampler in samplers])[corpus]  # [B]
    starts = rng.integers(0, highs, endpoint=True)  # [B], each within its own corpus
    batch_size, block_size = len(corpus), samplers[0].block_size
    inputs = torch.empty(batch_size, block_size, dtype=torch.int64)  # [B, T]
    targets = torch.empty(batch_size, block_size, dtype=torch.int64)  # [B, T]
    for index, sampler in enumerate(samplers):
        rows = np.flatnonzero(corpus == index)
        if len(rows):
            part = sampler.windows(starts[rows])
            inputs[rows], targets[rows] = part["inputs"], part["targets"]
    return {"inputs": inputs, "targets": targets}
