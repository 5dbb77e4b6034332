"""Drift control by showing the model its own frames as context during training.

At play time every context frame after the prompt is one the model generated, with its own
blur and colour errors; in plain teacher forcing it only ever sees true frames. Two ways to
show it such frames, each at the cost of passes without gradients:

- :func:`own_estimates`: a share of the short-window context frames is replaced by the
  model's one-step estimate of that frame from a noised copy (x0_hat = x_s - s v(x_s)). One
  extra forward pass; the errors are those of one frame, never compounded.
- :func:`own_rollouts`: the frames before the last are the model's own free play from the true
  frames before them, drawn with the cached sampler as at play time, so their errors compound
  as they do in play. The loss then asks for the true last frame: the model learns to steer
  back from its own drift (scheduled sampling, as Self Forcing trains on its own rollouts).
"""

from __future__ import annotations

import torch
from torch import Tensor

from far_world.model.far import FARModel
from far_world.model.inference import CachedSampler
from far_world.model.sampler import SamplingSettings


@torch.no_grad()
def own_estimates(
    model: FARModel,
    latents: Tensor,
    actions: Tensor,
    prob: float,
    max_time: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Latents (B,F,C,h,w) where each short-window frame is, with probability ``prob``, the
    model's estimate of it from flow time s ~ U(0, max_time); other frames are returned as given.

    Every frame of the estimating pass is noised at once (diffusion-forcing style), so an estimate
    is conditioned on noisy versions of the frames before it, never on the truth it replaces.
    """
    b, n_frames = latents.shape[:2]
    n_long = n_frames - min(n_frames, model.cfg.short_window)
    device = latents.device
    x0 = latents.float()
    s = model._draw(torch.rand, (b, n_frames), device, generator) * max_time
    s[:, :n_long] = 0.0
    eps = model._draw(torch.randn, tuple(x0.shape), device, generator)
    noisy = (1 - s[..., None, None, None]) * x0 + s[..., None, None, None] * eps
    velocity = model.forward(noisy, actions, s)[0]
    estimates = noisy[:, n_long:] - s[:, n_long:, None, None, None] * velocity
    pick = model._draw(torch.rand, (b, n_frames - n_long), device, generator) < prob
    short = torch.where(pick[..., None, None, None], estimates, x0[:, n_long:])
    return torch.cat([x0[:, :n_long], short], dim=1)


@torch.no_grad()
def own_rollouts(
    model: FARModel,
    latents: Tensor,
    actions: Tensor,
    frames: int,
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Latents (B,F,C,h,w) whose ``frames`` frames before the last are generated one by one,
    under the clip's own actions, from the true frames before them; the rest are returned as given.

    The last frame is left true: it is the target the rollout is scored against.
    """
    n_frames = latents.shape[1]
    start = n_frames - 1 - frames
    if frames < 1 or start < 1:
        raise ValueError(f"a rollout of {frames} frames needs a clip of at least {frames + 2} frames, got {n_frames}")
    sampler = CachedSampler(model)
    cache = sampler.new_cache(latents.shape[0], latents.device)
    sampler.prefill(cache, latents[:, :start], actions[:, :start], settings, generator)
    rolled = latents.float().clone()
    for t in range(start, n_frames - 1):
        rolled[:, t] = sampler.generate(cache, actions[:, t], settings, generator=generator).latents
    return rolled
