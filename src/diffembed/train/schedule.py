"""The learning-rate schedule of both training recipes: linear warm-up, then linear, cosine or
warmup-stable-decay (``wsd``)."""

from __future__ import annotations

import math


def lr_factor(
    step: int,
    warmup_steps: int,
    total_steps: int,
    *,
    decay: str = "linear",
    peak: float = 1.0,
    floor: float = 0.0,
    decay_steps: int = 0,
) -> float:
    """Learning rate at 0-based ``step`` for a ``peak`` rate (1 = the multiplier): linear
    warm-up over ``warmup_steps`` steps (from ``peak / warmup_steps``) to ``peak``, then
    ``decay``: ``linear`` reaching 0 at ``total_steps``, ``cosine`` reaching ``floor * peak``
    at ``total_steps``, or ``wsd`` (warmup-stable-decay): ``peak`` until the last
    ``decay_steps`` steps, then ``1 - sqrt`` of the decay's progress down to ``floor * peak``
    at the last step, ``total_steps - 1`` (the cooldown shape of Hägele et al. 2024)."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if decay == "wsd":
        # The first decay step is already below the peak; the last step is at the floor.
        progress = (step + 1 - (total_steps - decay_steps)) / max(1, decay_steps)
        if progress <= 0:
            return peak
        return peak * (floor + (1 - floor) * (1 - math.sqrt(min(1.0, progress))))
    if decay == "linear":
        return peak * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    if decay != "cosine":
        raise ValueError(f"decay must be linear, cosine or wsd, got {decay!r}")
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return peak * (floor + (1 - floor) * cosine)
