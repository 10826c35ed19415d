"""SFT batches: whole conversations packed into rows of block_size + 1 tokens.

Choice: packing, with attention allowed across the conversations that share a row.

- Each epoch the conversations are shuffled (seeded by (seed, epoch)) and packed greedily in
  that order ("next fit"): a conversation goes into the current row if it fits whole, else the
  row is closed, its free tail padded with `<|pad|>` (loss mask 0), and a new row begins. A
  conversation is never split across rows, so every trained token sees its whole prompt.
- Targets are -100 wherever the loss mask is 0: the loss covers only assistant content and its
  `<|end|>`. Each conversation starts with `<|endoftext|>` (mask 0), so no token is ever trained
  to predict across a conversation boundary.
- Why not block attention between conversations: the model's forward takes plain causal
  attention (`is_causal=True`, the fast fused kernels); a per-row block-diagonal mask would need
  an explicit mask tensor, which on most GPUs falls back to slower attention kernels, and the
  model (and its Hugging Face export) would need per-token positions. Pre-training already
  concatenates documents the same way, so the model has learned that `<|endoftext|>` starts
  something new. One conversation per row would leave (block - length) / block of every row
  as padding; packing fills rows to `fill_fraction` (printed at the start of a run; higher
  when conversations are short relative to the block).
- Conversations longer than block_size + 1 (normally truncated or dropped by tokenize_dataset,
  but a run may use a shorter block than the data was tokenized for) are truncated here and
  counted; ones left with no trained token are skipped and counted.

Data position is a pure function of (seed, global row index), where the global row index of a
micro-batch follows from (step, micro_step, rank): a resumed run reads exactly the rows the
uninterrupted run would have, with no replay.
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError
from tokenizer.encoding import PAD_ID
from tokenizer.tokenized_data import TokenizedSplit
from training.losses import IGNORE_INDEX


def next_fit_rows(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Start index (into `lengths`) of each packed row, plus a final len(lengths).

    Items are taken in order; an item that does not fit in the current row starts a new one.
    Every length must be <= capacity.
    """
    starts = [0]
    used = 0
    for index, length in enumerate(lengths.tolist()):
        if used + length > capacity:
            starts.append(index)
            used = 0
        used += length
    starts.append(len(lengths))
    return np.asarray(starts, np.int64)


class PackedSFTData:
    """Packed rows over one tokenized sft split (memory-mapped, read lazily)."""

    def __init__(self, split: TokenizedSplit, block_size: int, seed: int, shuffle: bool = True):
        if split.loss_mask is None or split.doc_offsets is None:
            raise UserError(
                f"{split.directory} holds {split.stage} data, not sft data (no loss mask); "
                "make it with `python3 -m tokenizer.tokenize_dataset --stage sft`"
            )
        self.split = split
        self.block_size = block_size
        self.seed = seed
        self.shuffle = shuffle
        capacity = block_size + 1
        offsets = np.asarray(split.doc_offsets, np.int64)
        starts, lengths = offsets[:-1], np.diff(offsets)
        truncated = lengths > capacity
        lengths = np.minimum(lengths, capacity)
        # A conversation is useful only if some position after its first token is trained.
        trained = np.array(
            [
                split.loss_mask[s + 1 : s + n].any()
                for s, n in zip(starts.tolist(), lengths.tolist())
            ],
            dtype=bool,
        )
        self.starts = starts[trained]
        self.lengths = lengths[trained]
        self.stats = {
            "conversations": int(len(lengths)),
            "truncated_to_block": int(truncated.sum()),
            "skipped_no_trained_tokens": int((~trained).sum()),
        }
        if len(self.starts) == 0:
            raise UserError(
                f"{split.directory}: no conversation has an assistant token to train on "
                f"({self.stats}); check the SFT data and its tokenization"
            )
        self._epoch_rows: list[int] = []  # rows in each epoch packed so far
        self._cached_epoch = -1
        self._cached_order = np.empty(0, np.int64)
        self._cached_row_starts = np.empty(0, np.int64)

    # -- packing -------------------------------------------------------------------------
    def _pack_epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(conversation order, row starts into that order) for one epoch."""
        if epoch != self._cached_epoch:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                order = rng.permutation(len(self.starts))
            else:
                order = np.arange(len(self.starts))
            self._cached_order = order
            self._cached_row_starts = next_fit_rows(self.lengths[order], self.block_size + 1)
            self._cached_epoch = epoch
        return self._cached_order, self._cached_row_starts

    def fill_fraction(self) -> float:
        """Share of row positions holding conversation tokens (not padding), epoch 0."""
        return float(self.lengths.sum()) / (self.rows_in_epoch(0) * (self.block_size + 1))

    def rows_in_epoch(self, epoch: int) -> int:
        while len(self._epoch_rows) <= epoch:
            _, row_starts = self._pack_epoch(len(self._epoch_rows))
            self._epoch_rows.append(len(row_starts) - 1)
        return self._epoch_rows[epoch]

    def locate(self, global_row: int) -> tuple[int, int]:
        """(epoch, row within that epoch) of a row counted from the start of the run."""
        epoch = 0
        while global_row >= self.rows_in_epoch(epoch):
            global_row -= self.rows_in_epoch(epoch)
            epoch += 1
        return epoch, global_row

    def row(self, global_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and loss mask of one packed row, both [block_size + 1] (int64, uint8)."""
        epoch, row = self.locate(global_row)
        order, row_starts = self._pack_epoch(epoch)
        tokens = np.full(self.block_size + 1, PAD_ID, np.int64)
        mask = np.zeros(self.block_size + 1, np.uint8)
        used = 0
        for conversation in order[row_starts[row] : row_starts[row + 1]].tolist():
            start, length = int(self.starts[conversation]), int(self.lengths[conversation])
            tokens[used : used + length] = self.split.tokens[start : start + length]
            mask[used : used + length] = self.split.loss_mask[start : start + length]
            used += length
        return tokens, mask

    # -- batches -------------------------------------------------------------------------
    def batch(self, first_row: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [batch_size, block_size] for rows first_row .. first_row+B-1."""
        return rows_to_batch([self.row(first_row + i) for i in range(batch_size)])


def rows_to_batch(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [B, block_size] from B packed rows (tokens, loss mask), from one
    corpus or several (a mixture: training/data_mixture.py)."""
    tokens = torch.from_numpy(np.stack([r[0] for r in rows]))  # [B, block_size + 1]
    mask = torch.from_numpy(np.stack([r[1] for r in rows])).bool()  # [B, block_size + 1]
    inputs = tokens[:, :-1]  # [B, T]
    targets = tokens[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)  # [B, T]
    return inputs.contiguous(), targets.contiguous()
