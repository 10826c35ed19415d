"""The model's architecture, as one dataclass, plus named presets.

`ModelConfig` holds architecture only (no optimizer, no data): what you need to rebuild the
network from a checkpoint's config.json. `__post_init__` derives the sizes the code needs and
rejects impossible shapes with a one-line `UserError`.

Derived fields (not constructor arguments):
- `padded_vocab_size`: `vocab_size` rounded up to a multiple of 64, so the embedding and LM-head
  matmuls get tensor-core friendly shapes. Ids >= vocab_size are never produced by the
  tokenizer and never sampled;
- `mlp_hidden` (when given as 0): the SwiGLU width `8/3 * n_embd` rounded UP to a multiple of
  64. SwiGLU has three matrices instead of two, so 8/3 keeps the MLP's parameter count equal to a
  classic 4x GELU MLP; the multiple of 64 keeps matmul shapes fast without changing the count
  much (llama2.c's 15M model gets exactly its 768, GPT-2-small's width gets exactly 2048).

`head_dim` 0 means `n_embd // n_head`; `rope_scaling` is Llama 3's frequency scaling (dict:
rope_type "llama3", factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
or None. Our presets leave both alone; models imported by model.import_hf may set them.

Presets (`vocab_size` is a default; training scripts set it from the tokenizer):

| preset | layers | n_embd | heads | kv heads | head_dim | mlp  | block | vocab  | tied | params  |
|--------|--------|--------|-------|----------|----------|------|-------|--------|------|---------|
| debug  | 2      | 128    | 4     | 2        | 32       | 384  | 128   | 512    | no   | 0.52M   |
| 15m    | 6      | 288    | 6     | 6        | 48       | 768  | 256   | 32768  | yes  | 15.41M  |
| 124m   | 12     | 768    | 12    | 12       | 64       | 2048 | 1024  | 50304  | yes  | 123.59M |
| 170m   | 12     | 1024   | 16    | 8        | 64       | 2752 | 1024  | 32768  | yes  | 172.78M |

- `15m` is llama2.c's TinyStories "stories15M" shape (dim 288, 6 layers, 6 heads, 256 tokens).
- `124m` is GPT-2 small's shape (12 x 768, 12 heads, 1024 tokens, GPT-2's padded vocab 50304),
  so its counts and speed compare directly with nanoGPT.
- `170m` is the "one L4 for one day" size: 12 layers of width 1024 with 16 query heads of 64 and
  8 key/value heads (grouped-query attention halves the KV cache). At ~40% MFU on an L4 it
  sees ~3.5B tokens a day, about 20 tokens per parameter (see `python3 -m model.plan`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from common.errors import UserError

VOCAB_MULTIPLE = 64
MLP_MULTIPLE = 64
LLAMA3_ROPE_KEYS = (
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
)


def round_up(value: int, multiple: int) -> int:
    return ((value + multiple - 1) // multiple) * multiple


@dataclass
class ModelConfig:
    vocab_size: int = 512  # real vocabulary (tokenizer size); embeddings are padded beyond it
    block_size: int = 128  # longest context (RoPE tables and KV cache are this long)
    n_layer: int = 2
    n_head: int = 4  # query heads
    n_kv_head: int = 0  # key/value heads for grouped-query attention; 0 = same as n_head
    n_embd: int = 128
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 = derive (8/3 * n_embd, multiple of 64)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False  # LM head shares the token-embedding matrix
    head_dim: int = 0  # width of one attention head; 0 = n_embd // n_head
    rope_scaling: dict | None = None  # Llama 3's RoPE frequency scaling (module docstring)

    padded_vocab_size: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"model config: {name} must be a positive integer, got {value!r}")
        for name in ("n_kv_head", "mlp_hidden", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"model config: {name} must be an integer >= 0, got {value!r}")
        if self.n_kv_head == 0:
            self.n_kv_head = self.n_head
        if self.head_dim == 0 and self.n_embd % self.n_head != 0:
            raise UserError(
                f"model config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "pick n_embd = n_head * head_dim"
            )
        if self.n_head % self.n_kv_head != 0:
            raise UserError(
                f"model config: n_head={self.n_head} is not divisible by n_kv_head="
                f"{self.n_kv_head}; each key/value head must serve a whole group of query heads"
            )
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        if self.head_dim % 2 != 0:
            raise UserError(
                f"model config: head_dim = {self.head_dim} is odd; "
                "RoPE rotates pairs of dimensions, so it must be even"
            )
        if not (self.rope_theta > 0 and self.norm_eps > 0):
            raise UserError("model config: rope_theta and norm_eps must be positive")
        keys = {"rope_type", *LLAMA3_ROPE_KEYS}
        scaling = self.rope_scaling
        if scaling is not None and (scaling.get("rope_type") != "llama3" or set(scaling) != keys):
            raise UserError(
                f"model config: rope_scaling must be None or Llama 3's {sorted(keys)}"
                f" with rope_type llama3, got {scaling!r}"
            )
        self.padded_vocab_size = round_up(self.vocab_size, VOCAB_MULTIPLE)
        if self.mlp_hidden == 0:
            self.mlp_hidden = round_up(8 * self.n_embd // 3, MLP_MULTIPLE)

    def to_dict(self) -> dict:
        """The constructor fields only (derived sizes are recomputed on load)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of to_dict. Unknown keys are errors; derived keys must agree if present."""
        init_names = {f.name for f in dataclasses.fields(cls) if f.init}
        derived_names = {f.name for f in dataclasses.fields(cls) if not f.init}
        unknown = sorted(set(data) - init_names - derived_names)
        if unknown:
            raise UserError(f"model config: unknown keys {unknown}; known: {sorted(init_names)}")
        config = cls(**{k: v for k, v in data.items() if k in init_names})
        for name in derived_names & set(data):
            if data[name] != getattr(config, name):
                raise UserError(
                    f"model config: {name}={data[name]} disagrees with the value derived "
                    f"from the other fields ({getattr(config, name)})"
                )
        return config


PRESETS: dict[str, dict] = {
    "debug": dict(
        vocab_size=512, block_size=128, n_layer=2, n_head=4, n_kv_head=2, n_embd=128,
        tie_embeddings=False,
    ),
    "15m": dict(
        vocab_size=32768, block_size=256, n_layer=6, n_head=6, n_kv_head=6, n_embd=288,
        tie_embeddings=True,
    ),
    "124m": dict(
        vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_kv_head=12, n_embd=768,
        tie_embeddings=True,
    ),
    "170m": dict(
        vocab_size=32768, block_size=1024, n_layer=12, n_head=16, n_kv_head=8, n_embd=1024,
        tie_embeddings=True,
    ),
}  # fmt: skip


def from_preset(name: str, **overrides) -> ModelConfig:
    """A preset's config with some fields replaced, e.g. from_preset("15m", vocab_size=4096)."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig) if f.init}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(f"unknown model config override(s) {unknown}; known: {sorted(fields)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
