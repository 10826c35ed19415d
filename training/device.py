"""Where a run computes: the device and its precision (auto: bf16 on GPUs that have it, else fp16
with a GradScaler; fp32 on CPU), the DDP process group `torchrun` sets up (NCCL on GPUs, gloo on
CPU; one process without it), host <-> device transfers, peak FLOP/s and memory.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import UserError
from model.generate import pick_device

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Dense bf16 peaks, matched in order against torch.cuda.get_device_name()
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)


@dataclass
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def training_device(option: str) -> torch.device:
    """--device as model.generate.pick_device reads it, for cpu or cuda; plain cuda is
    cuda:LOCAL_RANK under torchrun."""
    if option == "cuda":
        option = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    device = pick_device(option)
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device={option}: training runs on cpu or cuda")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def setup_distributed(device_option: str) -> Distributed:
    """Join the torchrun process group if there is one; pick this process's device."""
    world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = training_device(device_option)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    return Distributed(rank=rank, world_size=world_size, device=device)


def all_reduce(tensor: torch.Tensor, distributed: Distributed, op=dist.ReduceOp.SUM):
    """`tensor` reduced over all ranks, in place (unchanged in one process)."""
    if distributed.enabled:
        dist.all_reduce(tensor, op=op)
    return tensor


def barrier(distributed: Distributed) -> None:
    if distributed.enabled:
        dist.barrier()


def resolve_precision(option: str, device: torch.device) -> str:
    """The concrete precision ("bf16" | "fp16" | "fp32") for `--precision` on `device`."""
    on_cuda = device.type == "cuda"
    bf16_ok = on_cuda and has_native_bf16(device)
    if option == "auto":
        return ("bf16" if bf16_ok else "fp16") if on_cuda else "fp32"
    if option == "fp16" and not on_cuda:
        raise UserError("--precision=fp16 needs a CUDA GPU; use --precision=bf16 or fp32 on CPU")
    if option == "bf16" and on_cuda and not bf16_ok:
        raise UserError(
            f"{torch.cuda.get_device_name(device)} has no bf16 support; use --precision=fp16"
        )
    return option


def has_native_bf16(device: torch.device) -> bool:
    """Ampere (compute capability 8.0) and newer, or ROCm. Not torch.cuda.is_bf16_supported():
    it says yes on a T4 or V100 too, which only emulate bf16 (slowly)."""
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def autocast(precision: str, device: torch.device):
    """The forward passes' autocast context (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16's loss scaling (its narrow exponent loses small gradients); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def enable_fast_fp32_matmuls() -> None:
    """TF32 for the matmuls left in fp32 (Ampere and newer); harmless elsewhere."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device` without making the host wait: on CUDA through a contiguous
    pinned buffer, the only memory a copy is asynchronous from."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor)
    return pinned.to(device, non_blocking=True)


def batch_to_device(batch: dict, device: torch.device) -> dict:
    return {
        key: host_to_device(value, device) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def to_host(scalars: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """{name: float}, every tensor read in ONE host sync (float64: counts stay exact)."""
    tensors = {name: v for name, v in scalars.items() if isinstance(v, torch.Tensor)}
    values = {name: float(v) for name, v in scalars.items() if name not in tensors}
    if tensors:
        stacked = torch.stack([v.detach().double().reshape(()) for v in tensors.values()])
        values |= dict(zip(tensors, stacked.tolist()))
    return {name: values[name] for name in scalars}


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of one device, None when unknown (CPU, unlisted GPU): no MFU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by tensors; on CPU, the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9
