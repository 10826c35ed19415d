"""Validation: the one evaluation path of every stage, split across DDP ranks.

Rank r evaluates batches r, r + world_size, ... of the stage's fixed validation list. Loss and
metric SUMS and the count units are summed over all ranks in one all-reduce, so every rank gets
the same means per count unit, whatever the number of ranks: {"loss": ..., metric: ...}. The
stage turns those into the scalars it reports (`Stage.evaluation_scalars`: val/ppl, val/bpb).
"""

from __future__ import annotations

import math

import torch

from training.distributed import all_reduce_sum
from training.stage import Batch, RunContext, Stage
from training.transfer import batch_to_device, to_host


@torch.no_grad()
def evaluate(
    stage: Stage, model: torch.nn.Module, batches: list[Batch], context: RunContext
) -> dict[str, float]:
    """`stage.evaluation_scalars` of the means over `batches` (model in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    world_size, rank = context.world_size, context.rank
    sums: dict[str, torch.Tensor] = {}
    count = 0.0
    for j in range(math.ceil(len(batches) / world_size)):
        index = rank + j * world_size
        # Ranks left without a batch run batch 0 with weight 0, so every rank runs the
        # same number of forwards and reports the same metric names.
        weight = 1.0 if index < len(batches) else 0.0
        batch = batches[index if index < len(batches) else 0]
        count += weight * stage.count(batch)
        with context.autocast():
            loss_sum, metrics = stage.loss(model, batch_to_device(batch, context.device))
        for name, value in {"loss": loss_sum, **metrics}.items():
            sums[name] = sums.get(name, 0.0) + weight * value.detach().float()
    model.train(was_training)
    names = ["count", *sorted(sums)]
    count_tensor = torch.tensor(count, device=context.device)
    stats = torch.stack([count_tensor] + [sums[name] for name in names[1:]])
    totals = to_host(dict(zip(names, all_reduce_sum(stats, context.dist))))
    count = max(totals.pop("count"), 1.0)
    return stage.evaluation_scalars({name: value / count for name, value in totals.items()})
