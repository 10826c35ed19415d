"""AdamW with two parameter groups: weight decay on matmul weights only.

Decay pulls weights toward zero. That regularizes the linear layers, but on a norm's gain it
fights the normalization, and on embeddings it shrinks the rows of rare tokens (seldom updated)
toward zero between their updates. So: decay every parameter with >= 2 dims that is not an
nn.Embedding weight (a tied LM head shares the embedding matrix, so it is not decayed either).

The fused CUDA kernel does the whole update in a few launches (much faster than a Python loop
over tensors); on CPU the default implementation is used.
"""

from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for parameter in model.parameters():  # yields a tied parameter once
        if not parameter.requires_grad:
            continue
        if parameter.dim() >= 2 and id(parameter) not in embeddings:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `model` (the plain module, not a compiled or DDP wrapper)."""
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        eps=1e-8,
        fused=device.type == "cuda",
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
