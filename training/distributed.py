"""Process group setup for DDP under `torchrun`, and the few collectives the engine needs.

`torchrun --nproc_per_node=N script.py ...` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE in the environment. Each then joins one process group: NCCL when it trains on a
GPU (one GPU per process, cuda:LOCAL_RANK), gloo on CPU. Run without torchrun, the engine is a
plain single process and every collective here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import UserError


@dataclass
class Distributed:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(option: str, local_rank: int = 0) -> torch.device:
    """`auto` -> cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu."""
    if option == "auto":
        option = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(option)
    except RuntimeError:
        raise UserError(
            f"--device={option!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device={option}: CUDA is not available here; use --device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise UserError(f"--device={device}: only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(device)
    return device


def setup_distributed(device_option: str) -> Distributed:
    """Join the torchrun process group if there is one; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_option, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, distributed: Distributed) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place (no-op for one process)."""
    if distributed.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, distributed: Distributed) -> torch.Tensor:
    if distributed.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier(distributed: Distributed) -> None:
    if distributed.enabled:
        dist.barrier()
