"""The key/value cache: every layer's keys and values (after RoPE), one row per stream.

Row b holds `lengths[b]` tokens at positions 0 .. lengths[b] - 1, and a mask keeps each row's
queries on its own keys. `model(ids, cache)` with ids [B, T] appends each row's next T tokens:
`begin` once per forward pass, then `CachePass.update` in every layer. A compiled decode step
passes `positions` instead, reads every position (its shapes never change) and keeps `lengths`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from model.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int = 1, max_length: int | None = None):
        self.config, self.max_length = config, max_length or config.block_size
        if self.max_length > config.block_size:  # RoPE has no angles past block_size
            raise ValueError(f"max_length {max_length} exceeds block_size {config.block_size}")
        self.lengths = [0] * batch_size  # tokens cached per row (= position of its next token)
        # per layer [B, KV, max_length, D]: made by allocate() or the first update, like the keys
        self.keys: list[torch.Tensor] | None = None
        self.values: list[torch.Tensor] | None = None

    def allocate(self, device: torch.device | str, dtype: torch.dtype) -> None:
        c = self.config
        shape = (len(self.lengths), c.n_kv_head, self.max_length, c.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(c.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(c.n_layer)]

    def rows(self, start: int, stop: int) -> KVCache:
        """Rows start .. stop - 1, writing into this cache's tensors (their lengths: a copy)."""
        view = copy.copy(self)
        view.lengths = self.lengths[start:stop]
        view.keys = [keys[start:stop] for keys in self.keys]
        view.values = [values[start:stop] for values in self.values]
        return view

    def select(self, rows: torch.Tensor, lengths: list[int], max_length: int) -> KVCache:
        """A new cache of max_length positions, row r a copy of row rows[r]'s first lengths[r]."""
        new = KVCache(self.config, len(lengths), max_length)
        new.allocate(self.keys[0].device, self.keys[0].dtype)
        rows, copied = rows.to(self.keys[0].device), min(self.max_length, max_length)
        for mine, theirs in zip(new.keys + new.values, self.keys + self.values):
            mine[:, :, :copied] = theirs[:, :, :copied].index_select(0, rows)  # [R, KV, P, D]
        new.lengths = list(lengths)
        return new

    def begin(self, num_tokens: int, device, positions: torch.Tensor | None = None) -> CachePass:
        """Where each row's next num_tokens tokens go, and what each may attend to; the rows
        advance by num_tokens, unless a compiled step gives their first new `positions` [B]."""
        T, starts = num_tokens, self.lengths
        offsets = torch.arange(T, device=device)  # [T]
        if positions is not None:
            return CachePass(self, positions[:, None] + offsets, self.max_length, fixed=True)
        window = max(starts) + T
        if window > self.max_length:
            raise ValueError(f"the KV cache holds {self.max_length} positions, asked for {window}")
        self.lengths = [start + T for start in starts]
        if len(set(starts)) > 1:  # rows at different lengths: each row masks its own future
            return CachePass(self, torch.tensor(starts, device=device)[:, None] + offsets, window)
        positions = (offsets + starts[0]).expand(len(starts), T)  # [B, T]
        needs_mask = T > 1 and starts[0] > 0  # one new token sees every key; from 0: the triangle
        return CachePass(self, positions, window, needs_mask=needs_mask, start=starts[0])


@dataclass
class CachePass:
    """One forward pass through a KVCache (made by KVCache.begin)."""

    cache: KVCache
    positions: torch.Tensor  # [B, T] position of each new token in its row
    window: int  # attention reads key positions 0 .. window - 1
    needs_mask: bool = True  # False: no mask at all, or the causal triangle when T > 1
    fixed: bool = False  # every pass has the same shapes (a compiled step)
    start: int | None = None  # every row's first new position, when they are all the same

    def __post_init__(self):
        self.is_causal = not self.needs_mask and self.positions.shape[1] > 1
        self.mask = None  # [B, 1, T, window], True where a query may look
        if self.needs_mask:
            keys = torch.arange(self.window, device=self.positions.device)  # [S]
            self.mask = keys <= self.positions[:, None, :, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store new k, v [B, KV, T, D]; return every row's keys and values [B, KV, S, D]."""
        if self.cache.keys is None:
            self.cache.allocate(k.device, k.dtype)
        keys, values = self.cache.keys[layer], self.cache.values[layer]  # [B, KV, max_len, D]
        if self.start is not None:  # a slice (cheaper)
            keys[:, :, self.start : self.start + k.shape[2]] = k
            values[:, :, self.start : self.start + k.shape[2]] = v
        else:  # an index_put_: a compiled step writes just these entries, in place
            rows = torch.arange(k.shape[0], device=k.device)[:, None]  # [B, 1]
            keys[rows, :, self.positions] = k.transpose(1, 2)  # indexed: [B, T, KV, D]
            values[rows, :, self.positions] = v.transpose(1, 2)
        return keys[:, :, : self.window], values[:, :, : self.window]
