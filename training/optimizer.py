"""The optimizer the engine steps: Muon + AdamW (`--optimizer=muon`) or AdamW alone (`adamw`).

Either way it is ONE torch.optim.Optimizer (the engine steps it, GradScaler unscales it, the
checkpoint saves its state_dict). The parameters fall into four named groups:

| group     | parameters                                | --optimizer=muon            | adamw  |
|-----------|-------------------------------------------|-----------------------------|--------|
| matrices  | every 2-D weight inside the blocks        | Muon, muon_lr, muon wd      | lr, wd |
| embedding | token embedding (and the LM head if tied) | AdamW, embedding_lr x width | lr     |
| head      | LM head, when untied                      | AdamW, head_lr x width, wd  | lr, wd |
| norms     | RMSNorm gains                             | AdamW, learning_rate        | lr     |

(adamw: one learning_rate; two torch.optim.AdamW groups, decayed and not.)

Weight decay pulls weights toward zero. That regularizes the linear layers, but on a norm's gain
it fights the normalization, and on embeddings it shrinks the rows of rare tokens (seldom
updated) toward zero between their updates. So norms and embeddings are never decayed.

Learning rates across widths (so one CONFIG serves the 15m, 124m and 170m presets):
- Muon: muon_lr as it is. The orthogonalised update's spectral norm is muon_lr times
  sqrt(max(1, fan_out/fan_in)) at every width, the size at which each layer's output changes
  by the same amount whatever the width (training/muon.py).
- AdamW's embedding and head groups: embedding_lr and head_lr are the rates at width 768 and
  scale as sqrt(768 / n_embd) (nanochat's rule): an Adam step moves every coordinate by about
  lr, so wider rows move further. The norm gains' rate does not depend on the width.
The schedule (training/schedule.py) multiplies every group's peak rate by the same factor.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.muon import MuonWithAdamW
from training.precision import has_native_bf16
from training.schedule import lr_multiplier, muon_momentum_at

REFERENCE_WIDTH = 768  # the width at which embedding_lr and head_lr apply as they are
# Muon-run group -> the config field of its peak learning rate (every other group:
# learning_rate, which is also AdamW's single rate)
PEAK_LR_FIELDS = {"matrices": "muon_lr", "embedding": "embedding_lr", "head": "head_lr"}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's two groups: decayed matrices (an untied LM head too), the rest not decayed."""
    groups = named_parameter_groups(model)
    decay = groups["matrices"] + groups["head"]
    no_decay = groups["embedding"] + groups["norms"]
    return [
        {"params": decay, "name": "decay", "weight_decay": weight_decay},
        {"params": no_decay, "name": "no_decay", "weight_decay": 0.0},
    ]


def group_settings(name: str, config) -> dict:
    """Group `name`'s hyperparameters other than its learning rate and Muon's momentum (those
    follow the schedule): the same at build time and at every step, so a resumed run uses the
    command line's values, not the checkpoint's."""
    if name == "matrices":  # Muon
        return {"weight_decay": config.muon_weight_decay, "ns_steps": config.muon_ns_steps}
    decayed = name in ("decay", "head")
    return {"betas": (config.beta1, config.beta2), "eps": 1e-8,
            "weight_decay": config.weight_decay if decayed else 0.0}  # fmt: skip


def named_parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """{matrices, embedding, head, norms} -> parameters: every trainable parameter once."""
    embedding = model.embed_tokens.weight
    head = model.lm_head.weight
    hidden = {id(p) for p in model.layers.parameters() if p.dim() == 2}
    groups: dict[str, list[nn.Parameter]] = {"matrices": [], "embedding": [], "head": [],
                                             "norms": []}  # fmt: skip
    for parameter in model.parameters():  # yields a tied parameter once
        if not parameter.requires_grad:
            continue
        if id(parameter) in hidden:
            groups["matrices"].append(parameter)
        elif parameter is embedding:  # also the LM head when tied
            groups["embedding"].append(parameter)
        elif parameter is head:
            groups["head"].append(parameter)
        else:
            groups["norms"].append(parameter)
    return groups


def width_scale(name: str, n_embd: int) -> float:
    """The factor on a Muon run's configured learning rate of group `name` at width n_embd."""
    if name in ("embedding", "head"):
        return math.sqrt(REFERENCE_WIDTH / n_embd)
    return 1.0


def muon_parameter_groups(model: nn.Module, config) -> list[dict]:
    """Muon for the block matrices, AdamW for the rest; each group with its name and width
    scale (set_hyperparameters reads them)."""
    groups = []
    for name, params in named_parameter_groups(model).items():
        if not params:
            continue
        group = {"params": params, "name": name, "use_muon": name == "matrices",
                 "lr_scale": width_scale(name, model.config.n_embd)}  # fmt: skip
        groups.append(group | group_settings(name, config))
    return groups


def build_optimizer(model: nn.Module, config, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over `model` (the plain module, not a compiled or DDP wrapper).

    The fused CUDA AdamW kernel does the whole update in a few launches (much faster than a
    Python loop over tensors); on CPU the default implementation is used.
    """
    fused = device.type == "cuda"
    if config.optimizer == "muon":
        bf16 = device.type == "cuda" and has_native_bf16(device)
        optimizer = MuonWithAdamW(
            muon_parameter_groups(model, config),
            ns_dtype=torch.bfloat16 if bf16 else torch.float32,
            fused=fused,
        )
    else:
        optimizer = torch.optim.AdamW(
            parameter_groups(model, config.weight_decay),
            lr=config.learning_rate,
            betas=(config.beta1, config.beta2),
            eps=1e-8,
            fused=fused,
        )
    set_hyperparameters(optimizer, config, step=0, max_steps=1)
    return optimizer


def set_hyperparameters(optimizer: torch.optim.Optimizer, config, step: int, max_steps: int):
    """Set every group's hyperparameters for optimizer step `step`: its learning rate (and
    Muon's momentum) from the schedule, the rest from group_settings.

    Read from the config at every step, not kept in the groups (a resumed optimizer takes its
    groups from the checkpoint), so a run resumed with another learning rate or weight decay
    uses it. Returns the learning rate of `learning_rate`'s groups, logged as train/lr.
    """
    multiplier = lr_multiplier(step, config, max_steps)
    for group in optimizer.param_groups:
        name = group.get("name")  # (none in checkpoints from before groups were named)
        field = PEAK_LR_FIELDS.get(name, "learning_rate")
        group["lr"] = getattr(config, field) * group.get("lr_scale", 1.0) * multiplier
        if name:
            group.update(group_settings(name, config))
        if group.get("use_muon"):
            group["momentum"] = muon_momentum_at(step, config)
    return config.learning_rate * multiplier
