"""A preallocated key/value cache for fast autoregressive generation, one row per stream.

Without a cache, producing token t+1 recomputes attention keys and values for all t previous
tokens. The cache keeps each layer's keys and values (after RoPE) in tensors sized for the whole
context, so each new token costs one position per layer. Used only at inference; the training
forward pass never touches it.

Each row of the batch is an independent stream (a request of the server, say) with its own
length: row b's tokens sit at positions 0 .. lengths[b] - 1 of row b, and a mask keeps each
row's queries on its own row's keys, so streams never see each other. A forward pass with a
cache goes:  step = cache.begin(T)  ->  per layer step.update(k, v)  ->  cache.advance(T).

Two ways to read the cache:
- dynamic (default): attention reads the first max(lengths) + T positions only, and needs no
  mask at all while every row is at the same length (the one-stream case). Shapes change with
  every token, which is right for eager PyTorch on CPU or GPU.
- static: the caller passes the positions as a tensor, and every step reads all max_length
  positions with a mask (or the key_positions the caller sets), so a compiled decode step keeps
  its shapes: captured once as a CUDA graph and replayed for every token, or on a CPU compiled
  once with a key window that may grow (model/decoding.py).
Each layer has its own tensors, and new entries are written with index_put_: a compiled step
then writes just those entries in place (a scatter into a view of one tensor for all layers
made it rewrite the whole cache at every token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.config import ModelConfig


class KVCache:
    def __init__(
        self,
        config: ModelConfig,
        batch_size: int = 1,
        max_length: int | None = None,
        static: bool = False,
    ):
        self.max_length = max_length or config.block_size
        if self.max_length > config.block_size:  # RoPE has no angles past block_size
            raise ValueError(f"max_length {max_length} exceeds block_size {config.block_size}")
        c = config
        self.shape = (c.n_layer, batch_size, c.n_kv_head, self.max_length, c.head_dim)
        self.static = static
        # static: the key positions a pass attends over, [S] (None: all max_length). A compiled
        # step on a CPU narrows it to what the rows hold, as a tensor whose length may vary
        # from step to step without recompiling (model/decoding.py).
        self.key_positions: torch.Tensor | None = None
        # Allocated by allocate(), or on the first update on the model's device and in the dtype
        # the model produces (fp32, or bf16 under autocast), so attention never mixes dtypes.
        # One tensor per layer, not one [L, ...] tensor: a compiled step then writes each in
        # place (torch.compile copies a whole tensor when the graph writes into a view of it).
        self.keys: list[torch.Tensor] | None = None  # L x [B, KV, max_len, D]
        self.values: list[torch.Tensor] | None = None  # L x [B, KV, max_len, D]
        self.lengths = [0] * batch_size  # tokens cached per row (= position of its next token)

    @property
    def batch_size(self) -> int:
        return self.shape[1]

    @property
    def length(self) -> int:
        """Tokens cached, when every row holds the same number (the one-stream case)."""
        if len(set(self.lengths)) != 1:
            raise ValueError(f"rows hold different numbers of tokens: {self.lengths}")
        return self.lengths[0]

    def allocate(
        self, device: torch.device | str, dtype: torch.dtype, spare_positions: int = 0
    ) -> None:
        """Zeroed tensors; spare_positions more than max_length, which no row ever uses (a
        compiled step's key window then never spans a whole tensor: model/decoding.py)."""
        n_layer, B, KV, S, D = self.shape
        layer_shape = (B, KV, S + spare_positions, D)
        self.keys = [torch.zeros(layer_shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.values = [torch.zeros(layer_shape, device=device, dtype=dtype) for _ in range(n_layer)]

    def reset(self) -> None:
        self.lengths = [0] * self.batch_size

    def rows(self, start: int, stop: int) -> KVCache:
        """A cache over rows start .. stop - 1 of this one, sharing its tensors (a view).

        It writes into this cache's tensors; its lengths are its own (the caller copies them
        back: model/decoding.py does).
        """
        if self.keys is None:
            raise ValueError("allocate() the cache before taking rows of it")
        view = KVCache.__new__(KVCache)
        view.max_length, view.static = self.max_length, False  # a prefill: the dynamic path
        view.key_positions = None
        view.shape = (self.shape[0], stop - start, *self.shape[2:])
        view.keys = [keys[start:stop] for keys in self.keys]  # L x [rows, KV, max_len, D]
        view.values = [values[start:stop] for values in self.values]
        view.lengths = self.lengths[start:stop]
        return view

    def begin(
        self, num_tokens: int, device: torch.device, positions: torch.Tensor | None = None
    ) -> CachePass:
        """Where the next num_tokens tokens of every row go, and what each may attend to.

        positions [B] (static caches only): the position of each row's first new token.
        """
        T = num_tokens
        first = torch.arange(T, device=device)  # [T]
        if self.static:
            if positions is None:
                raise ValueError("a static cache needs the positions of the new tokens")
            key_positions = self.key_positions
            if key_positions is None:
                key_positions = torch.arange(self.max_length, device=device)  # [S]
            window = key_positions.shape[0]
            return CachePass.masked(self, positions[:, None] + first, window, None, key_positions)
        starts = self.lengths
        window = max(starts) + T
        if window > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions, asked for {window}")
        if len(set(starts)) > 1:  # rows at different lengths: each row masks its own future
            return CachePass.masked(
                self, torch.tensor(starts, device=device)[:, None] + first, window
            )
        start = starts[0]
        positions = (first + start).expand(self.batch_size, T)  # [B, T]
        if start > 0 and T > 1:  # a chunk after a prefix: query i sees keys 0 .. start + i
            return CachePass.masked(self, positions, window, aligned_start=start)
        # from position 0 the usual causal triangle; one new token sees everything cached
        return CachePass(self, positions, window, None, start == 0 and T > 1, start)

    def advance(self, num_tokens: int) -> None:
        """Called by the model once every layer has stored the new tokens."""
        if not self.static:  # a static cache's lengths are the caller's (model/decoding.py)
            self.lengths = [length + num_tokens for length in self.lengths]


@dataclass
class CachePass:
    """One forward pass through a KVCache: where its tokens go and what each may attend to.

    Made by KVCache.begin(); every layer calls update() with its new keys and values.
    """

    cache: KVCache
    positions: torch.Tensor  # [B, T] position of each new token in its row
    window: int  # attention reads key positions 0 .. window - 1 of every row
    mask: torch.Tensor | None  # [B, 1, T, window], True = attend; None = no mask needed
    is_causal: bool  # the usual triangle (a prefill from position 0)
    aligned_start: int | None = None  # every row's first new position, when they are equal

    @classmethod
    def masked(cls, cache, positions, window, aligned_start=None, key_positions=None) -> CachePass:
        """Each query sees the keys of its own row up to its own position (key_positions: the
        positions 0 .. window - 1 as a tensor, when the caller has one)."""
        if key_positions is None:
            key_positions = torch.arange(window, device=positions.device)  # [S]
        mask = key_positions <= positions[:, None, :, None]  # [B, 1, T, S]
        return cls(cache, positions, window, mask, False, aligned_start)

    def update(self, layer_index: int, k: torch.Tensor, v: torch.Tensor):
        """Store new k, v [B, KV, T, D]; return every row's keys and values [B, KV, S, D]."""
        cache = self.cache
        first = cache.keys[0] if cache.keys is not None else None
        if first is None or first.dtype != k.dtype or first.device != k.device:
            if any(cache.lengths):
                raise ValueError("KV cache dtype/device changed mid-sequence; reset() it first")
            cache.allocate(k.device, k.dtype)
        keys, values = cache.keys[layer_index], cache.values[layer_index]  # [B, KV, max_len, D]
        start = self.aligned_start
        if start is not None:  # rows aligned: a slice, no scatter
            keys[:, :, start : start + k.shape[2]] = k
            values[:, :, start : start + k.shape[2]] = v
        else:  # row b's token t goes to position positions[b, t] of row b
            # An index_put_ (not scatter_): torch.compile writes just the new entries in place,
            # where a scatter_ becomes a rewrite of the whole cache at every step.
            rows = torch.arange(k.shape[0], device=k.device)[:, None]  # [B, 1]
            keys[rows, :, self.positions] = k.transpose(1, 2)  # indexed: [B, T, KV, D]
            values[rows, :, self.positions] = v.transpose(1, 2)
        return keys[:, :, : self.window], values[:, :, : self.window]  # [B, KV, S, D]
