"""Language-model losses, computed in float32 over the padded vocabulary.

Targets equal to IGNORE_INDEX (-100) are not trained on (SFT prompt tokens, padding). Losses are
SUMS, not means: the engine divides by the number of targets in the whole optimizer step, so
a step's gradient does not depend on how its tokens were split into micro-batches.
Padded vocabulary ids (>= vocab_size) are never targets; their logits simply learn to be small.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy. logits [B, T, V_pad] (any dtype), targets [B, T]."""
    return F.cross_entropy(
        logits.float().flatten(0, 1),  # [B*T, V_pad], fp32 so log-softmax does not lose digits
        targets.flatten(),  # [B*T]
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def count_targets(targets: torch.Tensor) -> int:
    """Number of trained positions (targets that are not IGNORE_INDEX)."""
    return int((targets != IGNORE_INDEX).sum())


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position [B, T] in fp32; 0 where the target is IGNORE_INDEX."""
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)  # any valid id; masked out below
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V_pad]
    picked = log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked * mask
