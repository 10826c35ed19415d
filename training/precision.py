"""Mixed precision: which dtype the forward pass runs in, and the gradient scaler fp16 needs.

| --precision | CUDA                                   | CPU                       |
|-------------|----------------------------------------|---------------------------|
| auto        | bf16 on Ampere+ GPUs, else fp16        | fp32                      |
| bf16        | autocast to bfloat16                   | autocast to bfloat16      |
| fp16        | autocast to float16 + GradScaler       | error (needs a GPU)       |
| fp32        | float32 (TF32 matmuls on Ampere+)      | float32                   |

Weights, gradients and optimizer state always stay float32 (autocast only changes the dtype of
the matmuls). fp16's narrow exponent range lets small gradients underflow to zero, so its loss
is multiplied by a dynamic scale before backward (GradScaler); bf16 has fp32's range and needs
none. With precision other than fp16 the scaler below is disabled and every call is a no-op.
"""

from __future__ import annotations

import contextlib

import torch

from common.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_precision(option: str, device: torch.device) -> str:
    """The concrete precision ("bf16" | "fp16" | "fp32") for `--precision` on `device`."""
    if option not in ("auto", *DTYPES):
        raise UserError(f"--precision={option!r} is not one of auto, bf16, fp16, fp32")
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
    """bf16 tensor cores: NVIDIA Ampere (compute capability 8.0) and newer, or a ROCm GPU.

    Not torch.cuda.is_bf16_supported(): it also says yes on a T4 or V100, which only emulate
    bf16 (slowly); those GPUs should train in fp16 with the GradScaler.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(device).major >= 8


def autocast(precision: str, device: torch.device):
    """Context manager for forward passes (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def enable_fast_fp32_matmuls() -> None:
    """TF32 for the matmuls left in fp32 (Ampere and newer); harmless elsewhere."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
