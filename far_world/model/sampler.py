"""Few-step Euler integration of the rectified flow, with classifier-free guidance on the action.

The flow runs from pure noise at s = 1 to the clean frame at s = 0 along x_s = (1-s) x0 + s eps,
whose velocity dx/ds = eps - x0 is what the model predicts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def flow_times(steps: int) -> Tensor:
    """The Euler grid 1 = s_0 > s_1 > ... > s_steps = 0, evenly spaced: float32 (steps+1,)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1)


def guide(v_cond: Tensor, v_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance v_u + w (v_c - v_u): w = 1 is the conditional model alone."""
    return v_uncond + guidance * (v_cond - v_uncond)


def sample_euler(velocity: Callable[[Tensor, float], Tensor], noise: Tensor, steps: int, guidance: float) -> Tensor:
    """Integrate from ``noise`` (B,...) at s = 1 to s = 0.

    ``velocity(x, s)`` returns the model's velocity for x at flow time s. With guidance != 1 it is
    called once a step on [x ; x] (2B rows): the first B rows are read as conditioned on the
    action, the last B as unconditional, so both branches share one batched forward pass.
    """
    times = flow_times(steps).tolist()
    guided = guidance != 1.0
    x = noise
    for s, s_next in zip(times[:-1], times[1:]):
        if guided:
            v_cond, v_uncond = velocity(torch.cat([x, x]), s).chunk(2)
            v = guide(v_cond, v_uncond, guidance)
        else:
            v = velocity(x, s)
        x = x + (s_next - s) * v
    return x
