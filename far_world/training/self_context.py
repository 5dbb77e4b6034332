"""Drift control by showing the model its own estimates as context during training.

At play time every context frame after the prompt is one the model generated, with its own
blur and colour errors; in plain teacher forcing it only ever sees true frames. Here a share of
the short-window context frames is replaced by the model's one-step estimate of that frame
from a noised copy (x0_hat = x_s - s v(x_s)): the kind of imperfect frame it will meet in free
play, at the cost of one extra forward pass without gradients. Long-term frames stay true:
the model reads them only through its compressed long-term stream.
"""

from __future__ import annotations

import torch
from torch import Tensor

from far_world.model.far import FARModel


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
