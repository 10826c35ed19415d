"""The optimizer the engine steps, one torch.optim.Optimizer, and its schedule.

--optimizer=muon: Muon for every 2-D weight inside the blocks (muon_lr), AdamW for the
embedding (embedding_lr), an untied LM head (head_lr) and the norm gains (learning_rate);
embedding_lr and head_lr are given at width 768 and scale as sqrt(768 / n_embd). adamw: AdamW
for everything at learning_rate. Norms and embeddings are never decayed. The schedule, cosine or
wsd (warmup, flat, a linear decay over the last decay_fraction), is a pure function of the step.

Muon (Keller Jordan, 2024: https://kellerjordan.github.io/posts/muon/) steps a matrix
W [fan_out, fan_in] by its Nesterov momentum orthogonalised, O ~ U V^T of update = U S V^T:

    W = W * (1 - lr * weight_decay) - lr * sqrt(max(1, fan_out / fan_in)) * O

so the step's size is set by lr alone, at any width. Newton-Schulz runs on all same-shaped
matrices at once, in bf16 on GPUs that have it; DDP ranks share that work (all-gather).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.adamw import adamw

from training.device import has_native_bf16

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
    weight_decay = config.weight_decay if name in ("decay", "head") else 0.0
    return dict(betas=(config.beta1, config.beta2), eps=1e-8, weight_decay=weight_decay)


def parameter_groups(model: nn.Module, config) -> list[dict]:
    """The groups of the table above, with their settings; AdamW alone: "decay" (matrices, an
    untied head) and "no_decay" (embedding, norms)."""
    groups = named_parameter_groups(model)
    if config.optimizer == "adamw":
        decay, no_decay = groups["matrices"] + groups["head"], groups["embedding"] + groups["norms"]
        groups = [{"params": decay, "name": "decay"}, {"params": no_decay, "name": "no_decay"}]
    else:
        groups = [dict(params=p, name=n, use_muon=n == "matrices") for n, p in groups.items() if p]
        for group in groups:
            if group["name"] in ("embedding", "head"):
                group["lr_scale"] = math.sqrt(REFERENCE_WIDTH / model.config.n_embd)
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


# Keller Jordan's quintic coefficients: singular values land in about [0.7, 1.2], which trains
# as well as the exact polar factor.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrices: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Approximately orthogonalise each matrix of `matrices` [..., m, n] (same shape back),
    on the wide orientation (m <= n) so that the Gram matrix X X^T is the smaller one."""
    a, b, c = NS_COEFFICIENTS
    x = matrices.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT  # [..., n, m] -> wide
    # Scale so the spectral norm is <= 1 (the Frobenius norm bounds it from above).
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT  # [..., m, m]
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def shape_scale(shape: torch.Size) -> float:
    """sqrt(max(1, fan_out / fan_in)): tall matrices (e.g. the MLP's up projections) take a
    proportionally larger step, so each output unit's change has the same size."""
    fan_out, fan_in = shape
    return math.sqrt(max(1.0, fan_out / fan_in))


class MuonWithAdamW(torch.optim.Optimizer):
    """Param groups are Muon groups (`use_muon=True`: 2-D matrices; lr, momentum, weight_decay,
    ns_steps) or AdamW groups (lr, betas, eps, weight_decay). `fused` (the CUDA AdamW kernel) is
    recorded in each AdamW group, as torch.optim.AdamW does, so load_state_dict puts their step
    counts on the parameters' device, where that kernel needs them."""

    def __init__(self, param_groups: list[dict], ns_dtype=torch.float32, fused: bool = False):
        for group in param_groups:
            if group["use_muon"] and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon groups hold 2-D weight matrices only")
            if not group["use_muon"]:
                group.setdefault("fused", fused)
        super().__init__(param_groups, defaults={})
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "no closure (GradScaler never passes one)"
        for group in self.param_groups:
            (self._muon_step if group["use_muon"] else self._adamw_step)(group)

    def _muon_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        buffers = [self._momentum_buffer(p) for p in params]
        lr, momentum = group["lr"], group["momentum"]
        # Momentum, then Nesterov's look-ahead: multi-tensor ops, a few kernel launches for all
        # matrices rather than a few per matrix (on a GPU the step is launch-bound otherwise).
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, buffers, momentum)
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        # One Newton-Schulz run per shape, on all the matrices of that shape at once
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            by_shape[tuple(p.shape)].append(i)
        for shape, indices in by_shape.items():
            stack = torch.stack([updates[i] for i in indices])  # [k, fan_out, fan_in]
            orthogonal = orthogonalise_shared(stack, group["ns_steps"], self.ns_dtype)
            same_shape = [params[i] for i in indices]
            orthogonal = list(orthogonal.to(same_shape[0].dtype).unbind(0))
            torch._foreach_add_(same_shape, orthogonal, alpha=-lr * shape_scale(shape))

    def _momentum_buffer(self, p: torch.nn.Parameter) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state["momentum_buffer"]

    def _adamw_step(self, group: dict) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:  # the layout torch.optim.AdamW uses
                step_device = p.device if group["fused"] else "cpu"
                state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adamw(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            fused=group["fused"] or None,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )


def orthogonalise_shared(stack: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """newton_schulz(stack) [k, m, n], shared between DDP ranks: rank r orthogonalises matrices
    r, r + world, ... (padded with zeros to the same count), an all-gather hands out the rest."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1 or len(stack) == 1:
        return newton_schulz(stack, steps, dtype)
    rank = dist.get_rank()
    per_rank = math.ceil(len(stack) / world)
    mine = stack[rank::world]  # [<= per_rank, m, n]; all_gather needs equal sizes: pad
    mine = torch.cat([mine, mine.new_zeros(per_rank - len(mine), *mine.shape[1:])])
    mine = newton_schulz(mine, steps, dtype).contiguous()  # [per_rank, m, n]
    gathered = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    # gathered[r][j] is matrix r + j * world: interleave back into the stack's order
    return torch.stack(gathered, dim=1).flatten(0, 1)[: len(stack)]  # [k, m, n]
