"""The learning-rate schedule: linear warmup, then cosine decay to a floor.

A pure function of the step: resuming a run needs no scheduler state, only the step.
"""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    Warmup rises linearly to ``base_lr`` over ``warmup_steps`` (the first step already has
    base_lr / warmup_steps, never 0: a step at lr 0 would be wasted), then a cosine falls to
    ``min_ratio * base_lr`` at ``total_steps`` and stays there if training runs longer.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
