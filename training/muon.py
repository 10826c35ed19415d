"""Muon for the blocks' weight matrices and AdamW for the rest, as ONE torch optimizer.

Muon (Keller Jordan, 2024: https://kellerjordan.github.io/posts/muon/) updates a matrix
W [fan_out, fan_in] with its Nesterov momentum, orthogonalised:

    buffer = lerp(buffer, grad, 1 - momentum)
    update = lerp(grad, buffer, momentum)
    O      = newton_schulz(update)                         ~ U V^T where update = U S V^T
    W      = W * (1 - lr * weight_decay) - lr * sqrt(max(1, fan_out / fan_in)) * O

Orthogonalising sets every singular value of the update to about 1, so its size is set by lr
alone, at any width and gradient scale (gradient clipping only changes the momentum's average).
Newton-Schulz runs on all same-shaped matrices at once, in bf16 on GPUs that have it, else fp32;
under DDP the ranks share that work and all-gather the results, so every rank applies the same
update. Groups with `use_muon=False` take torch's functional AdamW (fused on a GPU), with
torch.optim.AdamW's state layout. (torch.optim.Muon needs PyTorch 2.9, takes 2-D parameters
only, orthogonalises one matrix at a time and cannot share the work between ranks.)
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch.optim.adamw import adamw

# Keller Jordan's quintic coefficients: singular values land in about [0.7, 1.2], which trains
# as well as the exact polar factor.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(matrices: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Approximately orthogonalise each matrix of `matrices` [..., m, n] (same shape back).

    Works on the wide orientation (m <= n) so the Gram matrix X X^T is the smaller one.
    """
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


def _wide(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix, transposed if it is tall (a view): [m, n] with m <= n."""
    return matrix.mT if matrix.size(0) > matrix.size(1) else matrix


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
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

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
        # One stack per wide shape for Newton-Schulz (tall matrices are orthogonalised
        # transposed, so q [C, C] and the MLP's gate/up [H, C] and down [C, H] make two stacks).
        stacks: dict[tuple, list[int]] = defaultdict(list)
        for i, update in enumerate(updates):
            stacks[tuple(_wide(update).shape)].append(i)
        by_shape: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
        for indices in stacks.values():
            stack = torch.stack([_wide(updates[i]) for i in indices])  # [k, m, n], m <= n
            orthogonal = orthogonalise_shared(stack, group["ns_steps"], self.ns_dtype)
            orthogonal = orthogonal.to(params[indices[0]].dtype)
            for i, o in zip(indices, orthogonal.unbind(0)):
                tall = params[i].size(0) > params[i].size(1)
                same_shape = by_shape[tuple(params[i].shape)]
                same_shape[0].append(params[i])
                same_shape[1].append(o.mT if tall else o)  # back to [fan_out, fan_in]
        for shape, (same_params, orthogonals) in by_shape.items():
            torch._foreach_add_(same_params, orthogonals, alpha=-lr * shape_scale(shape))

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
            params, grads, exp_avgs, exp_avg_sqs, [], steps,
            fused=group["fused"] or None, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )  # fmt: skip


def orthogonalise_shared(stack: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """newton_schulz(stack) [k, m, n], the work shared between DDP ranks when there are several.

    Rank r orthogonalises matrices r, r + world, r + 2 world, ... (padded with zero matrices to
    the same count on every rank); an all-gather hands every rank all k results.
    """
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
