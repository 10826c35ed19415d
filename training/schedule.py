"""Learning-rate schedules, as pure functions of the step (so resume needs no scheduler state).

The schedule is a multiplier on every param group's peak learning rate (Muon runs have
several: training/optimizer.py); it ends at min_lr / learning_rate, the same fraction for all.

cosine:  linear warmup 0 -> 1 over warmup_steps, then half a cosine from 1 down to the floor,
         reaching it at the last step.
wsd:     warmup-stable-decay: linear warmup, then constant, then in the last decay_fraction
         of the run a linear decay to the floor. The stable phase lets a run be extended (or
         branched) without re-planning its whole schedule.

Muon's momentum warms up too: linearly from muon_momentum_start to muon_momentum over the
first muon_momentum_warmup steps (a long-memory momentum is a poor average of the first,
fast-changing gradients).
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, config, max_steps: int) -> float:
    """Fraction of the peak learning rate at optimizer step `step` (0-based) of `max_steps`."""
    floor, warmup = config.min_lr / config.learning_rate, config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    last = max_steps - 1
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, last - warmup)
        return floor + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (1 - floor)
    if config.schedule == "wsd":
        decay_start = max(warmup, max_steps - round(config.decay_fraction * max_steps))
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, last - decay_start)
        return 1.0 + min(progress, 1.0) * (floor - 1.0)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def learning_rate_at(step: int, config, max_steps: int) -> float:
    """`learning_rate`'s value at optimizer step `step` (0-based) in a run of `max_steps`."""
    return config.learning_rate * lr_multiplier(step, config, max_steps)


def muon_momentum_at(step: int, config) -> float:
    """Muon's momentum at optimizer step `step`."""
    if step >= config.muon_momentum_warmup:
        return config.muon_momentum
    fraction = step / config.muon_momentum_warmup
    return config.muon_momentum_start + fraction * (
        config.muon_momentum - config.muon_momentum_start
    )
