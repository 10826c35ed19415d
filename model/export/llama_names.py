"""Our parameter names in Hugging Face Llama's naming, shared by both exports.

`model/export/hf.py` writes these names into model.safetensors; `model/export/gguf.py` hands
them to the `gguf` package's own table (the one llama.cpp's converter uses), which turns them
into llama.cpp's names. So the mapping is written once, here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from model.transformer import Transformer


def hf_name(name: str) -> str:
    """Our parameter name -> LlamaForCausalLM's (e.g. layers.0.attention.q_proj.weight ->
    model.layers.0.self_attn.q_proj.weight)."""
    if name == "lm_head.weight":
        return name
    if name == "norm.weight":
        return "model.norm.weight"
    if name == "embed_tokens.weight":
        return "model.embed_tokens.weight"
    layer_part = name.replace(".attention_norm.", ".input_layernorm.")
    layer_part = layer_part.replace(".mlp_norm.", ".post_attention_layernorm.")
    layer_part = layer_part.replace(".attention.", ".self_attn.")
    return "model." + layer_part


def hf_tensors(model: Transformer) -> Iterator[tuple[str, torch.Tensor]]:
    """(Llama name, tensor) for every weight; a tied LM head is left out (both formats restore
    it from the embedding)."""
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue
        yield hf_name(name), tensor.detach()
