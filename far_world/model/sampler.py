"""Few-step Euler integration of the rectified flow, with classifier-free guidance on the action,
and the settings a frame is drawn with.

The flow runs from pure noise at s = 1 to the clean frame at s = 0 along x_s = (1-s) x0 + s eps,
whose velocity dx/ds = eps - x0 is what the model predicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


GUIDANCE_SCOPES = ("all", "frame", "history")


def _is_count(value: Any) -> bool:
    """An integer >= 1, given as an int or an integral float (not a bool)."""
    return not isinstance(value, bool) and int(value) == value and value >= 1


@dataclass(frozen=True)
class SamplingSettings:
    """How frames are drawn, passed to every generation call (a value: callers never share state).

    steps: Euler steps a frame. guidance: the action guidance weight w (1 = off).
    flex_rope_slope: FlexRoPE's temporal decay, one slope or one per head (0 = plain RoPE).
    context_noise: flow time to which each frame joining the context is noised once (0 = clean,
    as FAR); a drift-control knob. A model trained with context-noise augmentation is told the
    level as context; one trained without it sees the frame as one being denoised at that flow
    time, as diffusion forcing trained it to (Diffusion Forcing's stabilized rollouts).
    time_shift: k in the Euler grid's warp s -> k s / (1 + (k - 1) s). 1 keeps even steps; k < 1
    moves them towards the clean end, where a frame's fine detail is decided, so that a few
    steps do not leave it to one large final jump (which lands on a blurred average).
    start_time: the flow time s0 the integration starts from. 1 starts from pure noise, as
    trained; s0 < 1 starts from the row's last context frame noised to s0 (SDEdit's warm
    start), so that what the noise leaves of that frame (its colours, its layout) anchors the
    next one, a drift-control knob that can also hold back motion. The grid is scaled to [0, s0].
    guidance_scope: what the unconditional branch drops. "all": the action of every frame, context
    included, so that branch keeps its own cache and every context pass runs twice. "frame": the
    new frame's action only, the context shared with the conditional branch, so only the Euler
    passes run twice; it asks "what does this key change here", and training met it, since
    action dropout drops single frames' actions. "history": the unconditional branch keeps the
    action and drops the context, a frame drawn from nothing, as the first frame of a training
    clip is; w > 1 then pushes the frame away from the world's generic frame towards what its
    context shows (history guidance). On the maze it holds the context's colours so firmly that
    the view turns less with the keys (docs/RESULTS.md), so no world plays with it by default.
    guided_steps: guidance on the first n Euler steps only (None: all), where the noise is high
    and a frame's layout, and so the motion a key asks for, is decided; the later steps, which
    refine detail, then run one branch at the unguided cost.
    """

    steps: int = 4
    guidance: float = 1.0
    flex_rope_slope: float | tuple[float, ...] = 0.0
    context_noise: float = 0.0
    time_shift: float = 1.0
    start_time: float = 1.0
    guidance_scope: str = "all"
    guided_steps: int | None = None

    def __post_init__(self) -> None:
        if not _is_count(self.steps):
            raise ValueError(f"sampling steps must be an integer >= 1, got {self.steps!r}")
        if self.guided_steps is not None and not _is_count(self.guided_steps):
            raise ValueError(f"guided_steps must be an integer >= 1 or None, got {self.guided_steps!r}")
        if self.guidance_scope not in GUIDANCE_SCOPES:
            raise ValueError(f"guidance_scope must be one of {GUIDANCE_SCOPES}, got {self.guidance_scope!r}")
        slope = self.flex_rope_slope
        slope = tuple(float(s) for s in slope) if isinstance(slope, Sequence) else float(slope)
        if min(slope if isinstance(slope, tuple) else (slope,), default=0.0) < 0:
            raise ValueError(f"flex_rope_slope must be >= 0, got {self.flex_rope_slope!r}")
        if not 0.0 <= float(self.context_noise) < 1.0:
            raise ValueError(f"context_noise must be in [0, 1), got {self.context_noise!r}")
        if not float(self.time_shift) > 0.0:
            raise ValueError(f"time_shift must be > 0, got {self.time_shift!r}")
        if not 0.0 < float(self.start_time) <= 1.0:
            raise ValueError(f"start_time must be in (0, 1], got {self.start_time!r}")
        # Normalized in place (frozen): equal settings compare and hash equal however they were given.
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "guidance", float(self.guidance))
        object.__setattr__(self, "flex_rope_slope", slope)
        object.__setattr__(self, "context_noise", float(self.context_noise))
        object.__setattr__(self, "time_shift", float(self.time_shift))
        object.__setattr__(self, "start_time", float(self.start_time))
        object.__setattr__(self, "guided_steps", None if self.guided_steps is None else int(self.guided_steps))

    @property
    def guided_step_count(self) -> int:
        """Euler steps a frame that also run the unconditional branch (0 without guidance)."""
        if self.guidance == 1.0:
            return 0
        return self.steps if self.guided_steps is None else min(self.guided_steps, self.steps)

    def replace(self, **changes: Any) -> "SamplingSettings":
        """A copy with the given fields changed; ``None`` keeps a field's value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **defaults: Any) -> "SamplingSettings":
        """From a checkpoint's ``inference`` defaults (``sampling_steps`` is the stored name of
        ``steps``), over ``defaults``; unknown keys are ignored, as older files may hold others."""
        names = {"sampling_steps": "steps", **{f.name: f.name for f in dataclasses.fields(cls)}}
        return cls(**{**defaults, **{names[k]: v for k, v in d.items() if k in names}})

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded beside results (``sampling_steps`` as the checkpoint stores it)."""
        d = dataclasses.asdict(self)
        d["sampling_steps"] = d.pop("steps")
        return d


def flow_times(steps: int, time_shift: float = 1.0) -> Tensor:
    """The Euler grid 1 = s_0 > s_1 > ... > s_steps = 0: even steps warped by ``time_shift``
    (``SamplingSettings``), float32 (steps+1,)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    even = torch.linspace(1.0, 0.0, steps + 1)
    return time_shift * even / (1.0 + (time_shift - 1.0) * even)


def guide(v_cond: Tensor, v_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance v_u + w (v_c - v_u): w = 1 is the conditional model alone."""
    return v_uncond + guidance * (v_cond - v_uncond)


def sample_euler(
    velocity: Callable[[Tensor, float], Tensor],
    noise: Tensor,
    steps: int,
    guidance: float,
    time_shift: float = 1.0,
    start_time: float = 1.0,
    guided_steps: int | None = None,
) -> Tensor:
    """Integrate from ``noise`` (B,...) at s = ``start_time`` (the grid scaled to it) to s = 0.

    ``velocity(x, s)`` returns the model's velocity for x at flow time s. With guidance != 1 it is
    called once a step on [x ; x] (2B rows): the first B rows are read as conditioned on the
    action, the last B as unconditional, so both branches share one batched forward pass. Past
    the first ``guided_steps`` steps (None: never) it is called on x alone, the conditional model.
    """
    times = (start_time * flow_times(steps, time_shift)).tolist()
    x = noise
    for step, (s, s_next) in enumerate(zip(times[:-1], times[1:])):
        if guidance != 1.0 and (guided_steps is None or step < guided_steps):
            v_cond, v_uncond = velocity(torch.cat([x, x]), s).chunk(2)
            v = guide(v_cond, v_uncond, guidance)
        else:
            v = velocity(x, s)
        x = x + (s_next - s) * v
    return x
