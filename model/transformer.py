"""A Llama-shaped decoder-only Transformer, readable in one sitting.

    token ids [B, T]
      -> embed_tokens                                   [B, T, C]
      -> n_layer x Block:
           x = x + attention(attention_norm(x))         RMSNorm -> causal GQA self-attention + RoPE
           x = x + mlp(mlp_norm(x))                     RMSNorm -> SwiGLU MLP
      -> norm -> lm_head                                [B, T, padded_vocab]

No biases anywhere. The LM head may share the embedding matrix (`tie_embeddings`).
Parameter names map one-to-one onto Hugging Face `LlamaForCausalLM` (model/export/llama_names.py):
`embed_tokens`, `layers.{i}.attention.{q,k,v,o}_proj`, `layers.{i}.attention_norm`,
`layers.{i}.mlp.{gate,up,down}_proj`, `layers.{i}.mlp_norm`, `norm`, `lm_head`.
RoPE uses HF Llama's convention (rotate_half over the two halves of each head, not interleaved
pairs), so exported weights give the same logits.

`forward(idx)` is the training path. Generation passes a `KVCache` (model/kv_cache.py), one row
per stream: new keys and values are written into it and each row attends to its own cached
prefix. The attention kernel is chosen in one function, `attend`: swap it (FlexAttention with
document masks, say) without touching the blocks.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.torch_version import TorchVersion
from torch.utils.checkpoint import checkpoint

from model.config import ModelConfig
from model.kv_cache import CachePass, KVCache


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Rotation frequencies [head_dim / 2]; with Llama 3's scaling, as transformers computes it:
    long wavelengths slowed down by `factor`, short ones kept, a smooth blend between."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if scaling is None:
        return inv_freq
    factor, old_length = scaling["factor"], scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv_freq
    scaled = torch.where(wavelength > old_length / low, inv_freq / factor, inv_freq)
    smooth = (old_length / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= old_length / high) & (wavelength <= old_length / low)
    return torch.where(medium, blended, scaled)


def rope_tables(
    head_dim: int, length: int, theta: float, scaling: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [length, head_dim] in HF Llama's layout (frequencies repeated twice)."""
    inv_freq = rope_frequencies(head_dim, theta, scaling)  # [head_dim/2]
    positions = torch.arange(length, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)  # [length, head_dim/2]
    angles = torch.cat((freqs, freqs), dim=-1)  # [length, head_dim]
    return angles.cos(), angles.sin()


# SDPA reads grouped key/value heads itself from torch 2.5 (enable_gqa).
SDPA_HAS_GQA = TorchVersion(torch.__version__) >= (2, 5)


def sdpa_can_group_heads(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether SDPA's own grouped-query support runs a fused kernel for these inputs.

    With enable_gqa the flash/cuDNN kernels read each key/value head once for its whole group
    of query heads (no H // KV copies in memory, none saved for the backward pass). They need
    fp16/bf16 on an Ampere or newer GPU and no explicit mask; anywhere else SDPA would fall back
    to its slow "math" kernel, so we repeat the key/value heads ourselves instead.
    (Under torch.compile every test here is a constant: no graph break.)
    """
    return (
        SDPA_HAS_GQA
        and mask is None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and torch.cuda.get_device_properties(q.device).major >= 8
    )


def decoding_backends():
    """SDPA kernels for generation with a KV cache: every fused one except cuDNN's, which builds
    an execution plan for each new key length, and decoding grows the key length by one per token
    (benchmarks/README.md, GPU figures)."""
    return sdpa_kernel(
        [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    )


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    growing_keys: bool = False,
) -> torch.Tensor:
    """Attention output [B, H, T, D] for queries q [B, H, T, D] over keys/values [B, KV, S, D].

    The one place that picks the attention kernel: swap this function (FlexAttention with
    document masks, say) and the blocks stay as they are. mask [.., T, S] is True where a query
    may look; is_causal is the usual triangle; growing_keys says S changes from call to call
    (decoding with a KV cache). Grouped-query attention: query head h reads key/value head
    h // (H // KV).
    """
    H, KV = q.shape[1], k.shape[1]
    with decoding_backends() if growing_keys and q.is_cuda else contextlib.nullcontext():
        if KV != H and sdpa_can_group_heads(q, mask):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True
            )
        if KV != H:
            k = k.repeat_interleave(H // KV, dim=1)  # [B, H, S, D]
            v = v.repeat_interleave(H // KV, dim=1)  # [B, H, S, D]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, D] by per-position angles; cos/sin [T, D] or [B, 1, T, D] (float32)."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast x may be bf16
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # HF's rotate_half
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.head_dim
        C, D = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(C, self.n_head * D, bias=False)
        self.k_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.v_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.o_proj = nn.Linear(self.n_head * D, C, bias=False)

    def forward(self, x, cos, sin, cache_pass: CachePass | None = None):
        B, T, _ = x.shape
        H, KV, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, H, D).transpose(1, 2)  # [B, H, T, D]
        k = k.view(B, T, KV, D).transpose(1, 2)  # [B, KV, T, D]
        v = v.view(B, T, KV, D).transpose(1, 2)  # [B, KV, T, D]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if cache_pass is None:
            y = attend(q, k, v, is_causal=True)  # [B, H, T, D]
        else:
            # k, v become each row's cached prefix plus the new tokens: [B, KV, S, D]
            k, v = cache_pass.update(self.layer_index, k, v)
            growing = not cache_pass.fixed
            y = attend(q, k, v, cache_pass.mask, cache_pass.is_causal, growing_keys=growing)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # [B, T, C]
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(config.mlp_hidden, config.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attention = Attention(config, layer_index)
        self.mlp_norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache_pass: CachePass | None = None):
        x = x + self.attention(self.attention_norm(x), cos, sin, cache_pass)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # RoPE tables are derived, not learned: not saved with the weights (persistent=False).
        cos, sin = rope_tables(
            config.head_dim, config.block_size, config.rope_theta, config.rope_scaling
        )
        self.register_buffer("rope_cos", cos, persistent=False)  # [block_size, head_dim]
        self.register_buffer("rope_sin", sin, persistent=False)  # [block_size, head_dim]
        # The training engine sets this to trade compute for memory (recompute each block
        # in the backward pass instead of storing its activations).
        self.gradient_checkpointing = False
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Initialise every tensor (GPT-2 style, with scaled residual projections).

        | tensor                                    | init                              |
        |-------------------------------------------|-----------------------------------|
        | embed_tokens.weight  [V_pad, C]           | normal(0, 0.02)                   |
        | layers.i.attention.q/k/v_proj.weight      | normal(0, 0.02)                   |
        | layers.i.attention.o_proj.weight          | normal(0, 0.02 / sqrt(2*n_layer)) |
        | layers.i.mlp.gate_proj/up_proj.weight     | normal(0, 0.02)                   |
        | layers.i.mlp.down_proj.weight             | normal(0, 0.02 / sqrt(2*n_layer)) |
        | layers.i.attention_norm/mlp_norm.weight   | ones                              |
        | norm.weight                               | ones                              |
        | lm_head.weight (untied only) [V_pad, C]   | normal(0, 0.02)                   |

        The two projections that write into the residual stream are scaled down by
        sqrt(2 * n_layer) (two per block) so the residual's variance does not grow with depth.
        """
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=std)
        for layer in self.layers:
            attention, mlp = layer.attention, layer.mlp
            for linear in (attention.q_proj, attention.k_proj, attention.v_proj):
                nn.init.normal_(linear.weight, mean=0.0, std=std)
            nn.init.normal_(attention.o_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(mlp.gate_proj.weight, mean=0.0, std=std)
            nn.init.normal_(mlp.up_proj.weight, mean=0.0, std=std)
            nn.init.normal_(mlp.down_proj.weight, mean=0.0, std=residual_std)
            nn.init.ones_(layer.attention_norm.weight)
            nn.init.ones_(layer.mlp_norm.weight)
        nn.init.ones_(self.norm.weight)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=std)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Trainable parameters (a tied matrix counts once).

        non_embedding=True leaves out the vocabulary-sized matrices (the token embedding and,
        when untied, the LM head): the count that scaling laws and 6*N FLOP estimates use.
        """
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a tied one once
        if non_embedding:
            total -= self.embed_tokens.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, padded_vocab_size] for token ids idx [B, T].

        Without a cache, position t sees tokens 0..t of idx (causal). With a cache, row b of idx
        holds the next T tokens of stream b, after the tokens that row of the cache holds; the
        cache advances by T. A compiled decode step passes those rows' first positions
        `positions` [B] instead (model/kv_cache.py). last_only=True returns only the last
        position's logits [B, 1, V] (generation needs no more, and the LM head is the costliest
        matmul of a small model).
        """
        B, T = idx.shape
        if kv_cache is None:
            if idx.shape[1] > self.config.block_size:
                raise ValueError(
                    f"sequence of {T} tokens exceeds block_size {self.config.block_size}"
                )
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # [T, head_dim]
            cache_pass = None
        else:
            cache_pass = kv_cache.begin(T, idx.device, positions)
            cos = self.rope_cos[cache_pass.positions][:, None]  # [B, 1, T, head_dim]
            sin = self.rope_sin[cache_pass.positions][:, None]  # [B, 1, T, head_dim]
        x = self.embed_tokens(idx)  # [B, T, C]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache_pass)
        if last_only:
            x = x[:, -1:, :]  # [B, 1, C]
        x = self.norm(x)
        return self.lm_head(x)  # [B, T, padded_vocab_size]
