"""Few-step distillation: each step of the play-time sampler taught to land where many small steps do.

A few Euler steps of a flow model each jump along the velocity at their start, which points at
the mean of the frames that could follow: the frame lands near that mean, which is a blur.
Many small steps follow the flow's curved paths to a sharp sample instead. On the Minecraft
world the free-play sharpness ratio is 0.51 at 3 steps and 0.86 at 10 (docs/RESULTS.md), but
10 steps are too slow to play.

So the student (the model being trained) takes the play-time grid's steps, s_k -> s_{k+1}, and
is trained so that one Euler step with its velocity lands where a frozen teacher (the weights
it started from) lands in ``substeps`` smaller steps over the same interval: a flow-map target,
as in progressive distillation. The starting points are the data's own x_s = (1 - s) x0 + s eps,
and the clips are laid out as at play time: every frame is clean context but the last, which
is denoised. Only the velocity at the grid's flow times is taught, so the student is meant to
be played on that grid (``distill_steps`` Euler steps, even spacing). The grid's first steps may
be left to the flow loss (``from_step``), so that only the later ones, which draw the detail, are
distilled: on doom the PSNR that distillation costs was lost mostly at the first step, which
lays out the frame from pure noise; on the maze it was not (docs/RESULTS.md).

The teacher may also be guided on the new frame's action over the grid's first steps (what
``--guidance-scope frame --guided-steps n`` does at play time), so that the student, played
unguided, moves as the guided teacher does, at the unguided frame rate.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from far_world.model.far import CONTEXT, FARModel
from far_world.model.sampler import flow_times, guide


def frozen_teacher(model: FARModel) -> FARModel:
    """A frozen copy of ``model``: the teacher whose many-step sampler the student learns."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    return teacher


def last_frame_timesteps(rows: int, frames: int, s: Tensor) -> Tensor:
    """Timesteps (rows, frames): every frame clean context but the last, at flow time s (rows,)."""
    timesteps = torch.full((rows, frames), CONTEXT, device=s.device)
    timesteps[:, -1] = s
    return timesteps


def _last_velocity(model: FARModel, context: Tensor, x_last: Tensor, actions: Tensor, s: Tensor) -> Tensor:
    clip = torch.cat([context, x_last[:, None]], dim=1)
    return model.velocity(clip, actions, last_frame_timesteps(*clip.shape[:2], s))[:, -1]


def _guided_last_velocity(
    model: FARModel, context: Tensor, x_last: Tensor, actions: Tensor, s: Tensor, guidance: Tensor
) -> Tensor:
    """The last frame's velocity, guided on its own action with weight ``guidance`` (rows,); the
    unconditional branch runs only for the rows whose weight is not 1."""
    velocity = _last_velocity(model, context, x_last, actions, s)
    guided = (guidance != 1.0).nonzero()[:, 0]
    if len(guided) == 0:
        return velocity
    unconditional = model._action_components(actions[guided], 2).clone()
    unconditional[:, -1] = model.null_action
    v_uncond = _last_velocity(model, context[guided], x_last[guided], unconditional, s[guided])
    velocity = velocity.clone()
    velocity[guided] = guide(velocity[guided], v_uncond, guidance[guided, None, None, None])
    return velocity


@torch.no_grad()
def teacher_landing(
    teacher: FARModel,
    context: Tensor,
    x_s: Tensor,
    actions: Tensor,
    s: Tensor,
    s_next: Tensor,
    substeps: int,
    guidance: Tensor | None = None,
) -> Tensor:
    """Where the teacher's Euler integration of the last frame from s to s_next (rows,) lands, in
    ``substeps`` even steps. context (B,F-1,C,h,w) clean frames; x_s (B,C,h,w); actions (B,F[,K]);
    guidance (rows,): the teacher's guidance weight per row (None: unguided)."""
    x = x_s.float()
    guidance = torch.ones_like(s) if guidance is None else guidance
    for j in range(substeps):
        a = s + (s_next - s) * (j / substeps)
        b = s + (s_next - s) * ((j + 1) / substeps)
        x = x + (b - a)[:, None, None, None] * _guided_last_velocity(teacher, context, x, actions, a, guidance)
    return x


def distillation_loss(
    model: FARModel,
    teacher: FARModel,
    latents: Tensor,
    actions: Tensor,
    student_steps: int,
    substeps: int,
    generator: torch.Generator | None = None,
    guidance: float = 1.0,
    guided_steps: int = 1,
    from_step: int = 0,
) -> Tensor:
    """Squared error between the student's velocity for the last frame at a grid point s_k and
    the velocity that would carry it to the teacher's landing at s_{k+1}, for k drawn evenly from
    ``from_step`` to the grid's last step.

    latents (B,F,C,h,w), actions (B,F) or (B,F,K) as in ``FARModel.training_loss``; the actions
    are dropped to null as there (``action_dropout``), for teacher and student alike, so that
    guidance, which reads the null-action velocity too, is distilled with the rest. The teacher
    is guided with weight ``guidance`` on the rows whose grid step is one of the first
    ``guided_steps``.
    """
    if not 0 <= from_step < student_steps:
        raise ValueError(f"need 0 <= from_step < student_steps, got {from_step} and {student_steps}")
    b = latents.shape[0]
    device = latents.device
    x0 = latents.float()
    actions = model.dropped_actions(actions, generator)
    grid = flow_times(student_steps).to(device)
    taught = student_steps - from_step
    k = from_step + model._draw(torch.rand, (b,), device, generator).mul(taught).long().clamp_max(taught - 1)
    s, s_next = grid[k], grid[k + 1]
    eps = model._draw(torch.randn, tuple(x0[:, -1].shape), device, generator)
    x_s = (1 - s)[:, None, None, None] * x0[:, -1] + s[:, None, None, None] * eps
    context = x0[:, :-1]
    row_guidance = torch.where(k < guided_steps, guidance, 1.0).to(x0.dtype)
    landing = teacher_landing(teacher, context, x_s, actions, s, s_next, substeps, row_guidance)
    target = (x_s - landing) / (s - s_next)[:, None, None, None]
    velocity = _last_velocity(model, context, x_s, actions, s)
    return (velocity - target).pow(2).mean()
