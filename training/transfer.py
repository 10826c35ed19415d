"""Moving data between host and GPU without stalling it: batches in, scalars out.

A GPU runs ahead of the Python that queues its work until something on the host waits for a
result (`.item()`, `.tolist()`, a copy from pageable memory). The engine waits once per step:
`to_host` reads every scalar it needs in one transfer.
"""

from __future__ import annotations

import torch

from training.stage import Batch


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device` without making the host wait for the GPU.

    On CUDA it goes through a contiguous page-locked (pinned) buffer: only from such memory is
    the copy asynchronous. (A strided source, such as the inputs slice of a [B, T+1] window
    array, would otherwise be made contiguous in pageable memory and copied synchronously.)
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    pinned.copy_(tensor)
    return pinned.to(device, non_blocking=True)


def batch_to_device(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of a batch on `device` (other values are passed through)."""
    return {
        key: host_to_device(value, device) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def to_host(scalars: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """{name: float} for scalar tensors, read in ONE host sync (plain numbers pass through)."""
    tensors = {name: v for name, v in scalars.items() if isinstance(v, torch.Tensor)}
    values = {name: float(v) for name, v in scalars.items() if name not in tensors}
    if tensors:
        # float64: token counts stay exact; the one .tolist() is the sync
        stacked = torch.stack([v.detach().double().reshape(()) for v in tensors.values()])
        values |= dict(zip(tensors, stacked.tolist()))
    return {name: values[name] for name in scalars}
