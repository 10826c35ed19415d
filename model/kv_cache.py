"""A preallocated key/value cache for fast autoregressive generation.

Without a cache, producing token t+1 recomputes attention keys and values for all t previous
tokens. The cache keeps each layer's keys and values (after RoPE) in tensors sized for the whole
context, so each new token costs one position per layer. Used only at inference; the training
forward pass never touches it.
"""

from __future__ import annotations

import torch

from model.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int, max_length: int | None = None):
        self.max_length = max_length or config.block_size
        c = config
        self.shape = (c.n_layer, batch_size, c.n_kv_head, self.max_length, c.head_dim)
        # Allocated on the first update, on the model's device and in the dtype the model
        # produces (fp32, or bf16 under autocast), so attention never mixes dtypes.
        self.keys: torch.Tensor | None = None  # [L, B, KV, max_len, D]
        self.values: torch.Tensor | None = None  # [L, B, KV, max_len, D]
        self.length = 0  # tokens cached so far (= the position of the next token)

    def reset(self) -> None:
        self.length = 0

    def update(self, layer_index: int, k: torch.Tensor, v: torch.Tensor):
        """Store new k, v [B, KV, T, D] after the cached prefix; return what attention needs.

        Returns (keys, values, is_causal, mask): keys/values [B, KV, start + T, D] cover the
        prefix and the new tokens; is_causal/mask are arguments for scaled_dot_product_attention.
        """
        start, T = self.length, k.shape[2]
        end = start + T
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions, asked for {end}")
        if self.keys is None or self.keys.dtype != k.dtype or self.keys.device != k.device:
            if start > 0:
                raise ValueError("KV cache dtype/device changed mid-sequence; reset() it first")
            self.keys = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
            self.values = torch.zeros(self.shape, device=k.device, dtype=k.dtype)
        self.keys[layer_index, :, :, start:end] = k
        self.values[layer_index, :, :, start:end] = v
        keys = self.keys[layer_index, :, :, :end]  # [B, KV, end, D]
        values = self.values[layer_index, :, :, :end]  # [B, KV, end, D]
        if start == 0:  # plain prefill: the usual causal triangle
            return keys, values, T > 1, None
        if T == 1:  # one new token attends to everything cached
            return keys, values, False, None
        # T new tokens after a prefix: query i (position start + i) sees keys 0..start + i
        query_pos = torch.arange(start, end, device=k.device)[:, None]  # [T, 1]
        key_pos = torch.arange(end, device=k.device)[None, :]  # [1, end]
        return keys, values, False, key_pos <= query_pos  # mask [T, end], True = attend

    def advance(self, num_tokens: int) -> None:
        """Called by the model once every layer has stored the new tokens."""
        self.length += num_tokens
