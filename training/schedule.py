"""Learning-rate schedules, as pure functions of the step (so resume needs no scheduler state).

cosine:  linear warmup 0 -> lr over warmup_steps, then half a cosine from lr to min_lr,
         reaching min_lr at the last step.
wsd:     warmup-stable-decay: linear warmup, then constant lr, then in the last
         decay_fraction of the run a linear decay to min_lr. The stable phase lets a run be
         extended (or branched) without re-planning its whole schedule.
"""

from __future__ import annotations

import math


def learning_rate_at(step: int, config, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based) in a run of `max_steps` steps."""
    peak, floor, warmup = config.learning_rate, config.min_lr, config.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    last = max_steps - 1
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, last - warmup)
        return floor + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (peak - floor)
    if config.schedule == "wsd":
        decay_start = max(warmup, max_steps - round(config.decay_fraction * max_steps))
        if step < decay_start:
            return peak
        progress = (step - decay_start) / max(1, last - decay_start)
        return peak + min(progress, 1.0) * (floor - peak)
    raise ValueError(f"unknown schedule {config.schedule!r}")
