"""Model FLOPs utilization: achieved training FLOP/s over the device's dense bf16 peak.

Training FLOPs per token (PaLM appendix B convention, as nanoGPT's MFU uses; computed by
model/plan.py's flops_per_token, so the planner and the engine agree):

    6 * N_matmul + 12 * n_layer * n_head * head_dim * T

- N_matmul: parameters that take part in a matmul: every non-embedding weight plus the LM head
  (padded_vocab x n_embd; it is a matmul even when tied to the embedding). The embedding lookup
  is a gather, no FLOPs. Forward costs 2 FLOPs per weight per token, backward 4: hence 6.
- the attention term: QK^T and AV each cost 2*T*head_dim per head per token in the forward,
  x3 for forward+backward; counted over the full T x T square, as is customary, even though
  causal attention kernels skip the masked half.

Peaks are dense (no sparsity) bf16 tensor-core figures; an unknown GPU or a CPU gets no MFU.
"""

from __future__ import annotations

import torch

from model.config import ModelConfig
from model.plan import flops_per_token

# Matched in order against torch.cuda.get_device_name() (e.g. "NVIDIA H100 80GB HBM3").
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)


def training_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """FLOPs of forward + backward per trained token at sequence length seq_len."""
    return flops_per_token(config, seq_len)["total"]


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of one device, or None when unknown (CPU, unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16_FLOPS:
        if key in name:
            return flops
    return None
