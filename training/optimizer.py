"""The optimizer the engine steps and its schedule: Muon + AdamW (`--optimizer=muon`) or AdamW.

Either way it is one torch.optim.Optimizer (GradScaler unscales it, the checkpoint saves it):

| group     | parameters                                | --optimizer=muon            | adamw  |
|-----------|-------------------------------------------|-----------------------------|--------|
| matrices  | every 2-D weight inside the blocks        | Muon, muon_lr, muon wd      | lr, wd |
| embedding | token embedding (and the LM head if tied) | AdamW, embedding_lr x width | lr     |
| head      | LM head, when untied                      | AdamW, head_lr x width, wd  | lr, wd |
| norms     | RMSNorm gains                             | AdamW, learning_rate        | lr     |

Norms and embeddings are never decayed (decay fights a norm's gain and shrinks rare tokens'
rows). Across widths: Muon's update size does not depend on the width; an Adam step moves each
coordinate by about lr, so embedding_lr and head_lr (given at width 768) scale as
sqrt(768 / n_embd). The schedule is a pure function of the step (no state to resume), a
multiplier on every group's peak: cosine (linear warmup, then half a cosine down to
min_lr / learning_rate) or wsd (warmup, flat, a linear decay over the last decay_fraction).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.device import has_native_bf16
from training.muon import MuonWithAdamW

REFERENCE_WIDTH = 768  # the width at which embedding_lr and head_lr apply as they are
PEAK_LR_FIELDS = {"matrices": "muon_lr", "embedding": "embedding_lr", "head": "head_lr"}


def named_parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """{matrices, embedding, head, norms} -> parameters: every trainable parameter once."""
    hidden = {id(p) for p in model.layers.parameters() if p.dim() == 2}
    groups: dict[str, list] = {"matrices": [], "embedding": [], "head": [], "norms": []}
    for parameter in model.parameters():  # yields a tied parameter once
        if not parameter.requires_grad:
            continue
        if id(parameter) in hidden:
            groups["matrices"].append(parameter)
        elif parameter is model.embed_tokens.weight:  # also the LM head when tied
            groups["embedding"].append(parameter)
        elif parameter is model.lm_head.weight:
            groups["head"].append(parameter)
        else:
            groups["norms"].append(parameter)
    return groups


def group_settings(name: str, config) -> dict:
    """A group's settings other than its learning rate and momentum (those follow the
    schedule); set at every step, so a resumed run takes the command line's values."""
    if name == "matrices":  # Muon
        return {"weight_decay": config.muon_weight_decay, "ns_steps": config.muon_ns_steps}
    decayed = name in ("decay", "head")
    return {"betas": (config.beta1, config.beta2), "eps": 1e-8,
            "weight_decay": config.weight_decay if decayed else 0.0}  # fmt: skip


def parameter_groups(model: nn.Module, config) -> list[dict]:
    """The groups of the table above, with their settings; AdamW alone: "decay" (matrices, an
    untied head) and "no_decay" (embedding, norms)."""
    groups = named_parameter_groups(model)
    if config.optimizer == "adamw":
        groups = [{"params": groups["matrices"] + groups["head"], "name": "decay"},
                  {"params": groups["embedding"] + groups["norms"], "name": "no_decay"}]  # fmt: skip
    else:
        width_scale = math.sqrt(REFERENCE_WIDTH / model.config.n_embd)
        groups = [{"params": params, "name": name, "use_muon": name == "matrices",
                   "lr_scale": width_scale if name in ("embedding", "head") else 1.0}
                  for name, params in groups.items() if params]  # fmt: skip
    return [group | group_settings(group["name"], config) for group in groups]


def build_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over `model` (the plain module); the fused AdamW kernel on a GPU."""
    fused, groups = device.type == "cuda", parameter_groups(model, config)
    if config.optimizer == "muon":
        bf16 = fused and has_native_bf16(device)  # Newton-Schulz in bf16 on GPUs that have it
        optimizer = MuonWithAdamW(groups, torch.bfloat16 if bf16 else torch.float32, fused)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused)
    set_hyperparameters(optimizer, config, step=0, max_steps=1)
    return optimizer


def set_hyperparameters(optimizer: torch.optim.Optimizer, config, step: int, max_steps: int):
    """Every group's learning rate (and Muon's momentum) at `step`, its other settings from the
    config; returns learning_rate's scheduled value (train/lr)."""
    multiplier = lr_multiplier(step, config, max_steps)
    for group in optimizer.param_groups:
        peak = getattr(config, PEAK_LR_FIELDS.get(group["name"], "learning_rate"))
        group["lr"] = peak * group.get("lr_scale", 1.0) * multiplier
        group.update(group_settings(group["name"], config))
        if group.get("use_muon"):
            group["momentum"] = muon_momentum_at(step, config)
    return config.learning_rate * multiplier


def lr_multiplier(step: int, config, max_steps: int) -> float:
    """The fraction of the peak learning rates at optimizer step `step` (0-based)."""
    floor, warmup = config.min_lr / config.learning_rate, config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "cosine":
        progress = min((step - warmup) / max(1, max_steps - 1 - warmup), 1.0)
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (1 - floor)
    decay_start = max(warmup, max_steps - round(config.decay_fraction * max_steps))  # wsd
    if step < decay_start:
        return 1.0
    return 1.0 + min((step - decay_start) / max(1, max_steps - 1 - decay_start), 1.0) * (floor - 1)


def muon_momentum_at(step: int, config) -> float:
    """Muon's momentum: linear from muon_momentum_start to muon_momentum over the warm-up (a
    long memory averages the first, fast-changing gradients poorly)."""
    if step >= config.muon_momentum_warmup:
        return config.muon_momentum
    start, end = config.muon_momentum_start, config.muon_momentum
    return start + step / config.muon_momentum_warmup * (end - start)
