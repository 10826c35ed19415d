"""The key/value cache: every layer's keys and values, one row per stream, for generation.

Without a cache each new token would recompute the keys and values of all earlier tokens. The
cache keeps them (after RoPE) in tensors sized for the whole context, so a new token costs one
position per layer. Row b holds `lengths[b]` tokens at positions 0 .. lengths[b] - 1; a mask
keeps each row's queries on its own keys, so streams never see each other.

    cache = KVCache(config, batch_size=4)
    model(ids, cache)                  # ids [4, T]: each row's next T tokens; lengths += T
    part = cache.rows(1, 2)            # a view of row 1 (shared tensors, its own lengths)
    wide = cache.select(rows, lengths, max_length)   # copies: row r continues rows[r]

A forward pass with a cache calls `begin` once and `CachePass.update` in every layer. Given
`positions` (a compiled decode step), every pass reads all max_length positions, so its shapes
never change, and the caller keeps `lengths`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int = 1, max_length: int | None = None):
        self.max_length = max_length or config.block_size
        if self.max_length > config.block_size:  # RoPE has no angles past block_size
            raise ValueError(f"max_length {max_length} exceeds block_size {config.block_size}")
        self.n_layer = config.n_layer
        self.row_shape = (config.n_kv_head, self.max_length, config.head_dim)
        self.lengths = [0] * batch_size  # tokens cached per row (= position of its next token)
        # allocated by allocate(), or by the first update in the dtype and on the device of the
        # keys (fp32, or bf16 under autocast); one tensor per layer, each [B, KV, max_len, D]
        self.keys: list[torch.Tensor] | None = None
        self.values: list[torch.Tensor] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.lengths)

    @property
    def length(self) -> int:
        """Tokens cached, when every row holds the same number."""
        if len(set(self.lengths)) != 1:
            raise ValueError(f"rows hold different numbers of tokens: {self.lengths}")
        return self.lengths[0]

    def allocate(self, device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (self.batch_size, *self.row_shape)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.n_layer)]

    def rows(self, start: int, stop: int) -> KVCache:
        """Rows start .. stop - 1 as a cache that writes into this one's tensors; its lengths
        are a copy (the caller keeps this cache's lengths)."""
        view = KVCache.__new__(KVCache)
        view.max_length, view.n_layer, view.row_shape = (
            self.max_length,
            self.n_layer,
            self.row_shape,
        )
        view.lengths = self.lengths[start:stop]
        view.keys = [keys[start:stop] for keys in self.keys]
        view.values = [values[start:stop] for values in self.values]
        return view

    def select(self, rows: torch.Tensor, lengths: list[int], max_length: int) -> KVCache:
        """A new cache whose row r copies the first lengths[r] positions of row rows[r] (the
        rest of those rows, up to max_length positions, is free for their continuations)."""
        new = KVCache.__new__(KVCache)
        new.max_length, new.n_layer = max_length, self.n_layer
        new.row_shape = (self.row_shape[0], max_length, self.row_shape[2])
        new.lengths = list(lengths)
        new.allocate(self.keys[0].device, self.keys[0].dtype)
        rows, copied = rows.to(self.keys[0].device), min(self.max_length, max_length)
        for mine, theirs in zip(new.keys + new.values, self.keys + self.values):
            mine[:, :, :copied] = theirs[:, :, :copied].index_select(0, rows)  # [R, KV, P, D]
        return new

    def begin(
        self, num_tokens: int, device: torch.device, positions: torch.Tensor | None = None
    ) -> CachePass:
        """Where each row's next num_tokens tokens go, and what each may attend to.

        positions [B] (a compiled step): each row's first new position; all max_length keys
        are read, and lengths are the caller's. Otherwise the rows advance by num_tokens.
        """
        T, B = num_tokens, self.batch_size
        offsets = torch.arange(T, device=device)  # [T]
        if positions is not None:
            return CachePass(self, positions[:, None] + offsets, self.max_length, fixed=True)
        starts, window = self.lengths, max(self.lengths) + T
        if window > self.max_length:
            raise ValueError(f"the KV cache holds {self.max_length} positions, asked for {window}")
        self.lengths = [start + T for start in starts]
        if len(set(starts)) > 1:  # rows at different lengths: each row masks its own future
            return CachePass(self, torch.tensor(starts, device=device)[:, None] + offsets, window)
        positions = (offsets + starts[0]).expand(B, T)  # [B, T]
        if T == 1:  # one new token sees every cached one
            return CachePass(self, positions, window, needs_mask=False)
        return CachePass(self, positions, window, needs_mask=starts[0] > 0)


@dataclass
class CachePass:
    """One forward pass through a KVCache (made by KVCache.begin)."""

    cache: KVCache
    positions: torch.Tensor  # [B, T] position of each new token in its row
    window: int  # attention reads key positions 0 .. window - 1
    needs_mask: bool = True  # False: no mask (one token), or the plain causal triangle
    fixed: bool = False  # every pass has the same shapes (a compiled step)

    def __post_init__(self):
        T = self.positions.shape[1]
        self.is_causal = not self.needs_mask and T > 1  # a prefill from position 0
        self.mask = None  # [B, 1, T, window], True where a query may look
        if self.needs_mask:
            keys = torch.arange(self.window, device=self.positions.device)  # [S]
            self.mask = keys <= self.positions[:, None, :, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store new k, v [B, KV, T, D]; return every row's keys and values [B, KV, S, D]."""
        cache = self.cache
        if cache.keys is None:
            cache.allocate(k.device, k.dtype)
        keys, values = cache.keys[layer], cache.values[layer]  # [B, KV, max_len, D]
        # an index_put_: a compiled step writes just these entries, in place
        rows = torch.arange(k.shape[0], device=k.device)[:, None]  # [B, 1]
        keys[rows, :, self.positions] = k.transpose(1, 2)  # indexed: [B, T, KV, D]
        values[rows, :, self.positions] = v.transpose(1, 2)
        return keys[:, :, : self.window], values[:, :, : self.window]
