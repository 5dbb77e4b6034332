"""Image gradients: the edges that a blurred frame loses, measured and trained on in one place."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_LUMA = (0.299, 0.587, 0.114)
_SOBEL = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def luminance(images: Tensor) -> Tensor:
    """RGB (N,3,H,W) -> luma (N,1,H,W), Rec. 601 weights."""
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur of (N,C,H,W) with a 2-sigma radius ('valid' borders)."""
    radius = max(1, round(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).repeat(images.shape[1], 1)
    c = images.shape[1]
    return F.conv2d(F.conv2d(images, g.view(c, 1, 1, -1), groups=c), g.view(c, 1, -1, 1), groups=c)


def sobel(images: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel responses of every channel of (N,C,H,W) ('valid' borders)."""
    c = images.shape[1]
    kx = torch.tensor(_SOBEL, dtype=images.dtype, device=images.device)
    gx = F.conv2d(images, kx.expand(c, 1, 3, 3), groups=c)
    gy = F.conv2d(images, kx.t().expand(c, 1, 3, 3).contiguous(), groups=c)
    return gx, gy


def gradient_l1(estimate: Tensor, target: Tensor) -> Tensor:
    """Mean |Sobel(estimate) - Sobel(target)| over channels and both directions, (N,C,H,W) floats.

    Pixel L1 charges lost texture no more than a faint tint of the same mean error, and flat
    regions dominate its average; this term is blind to the tint and charges the texture.
    """
    ex, ey = sobel(estimate)
    tx, ty = sobel(target)
    return 0.5 * ((ex - tx).abs().mean() + (ey - ty).abs().mean())


def detail_weights(latents: Tensor, strength: float) -> Tensor:
    """Per-position loss weights (..., 1, h, w) of latent frames (..., C, h, w), mean 1 per frame.

    A position weighs 1 + strength * d / mean(d), d its mean |latent - its 3x3 neighbourhood's
    mean| over channels: small things that differ from their surroundings (doom's medkits, a
    wall's edge) cover a few latent cells and count for little in a plain mean, so a model that
    draws the surroundings alone loses almost nothing by leaving them out.
    """
    lead, (c, h, w) = latents.shape[:-3], latents.shape[-3:]
    flat = latents.reshape(-1, c, h, w).float()
    local_mean = F.avg_pool2d(flat, 3, stride=1, padding=1, count_include_pad=False)
    d = (flat - local_mean).abs().mean(dim=1, keepdim=True)
    weights = 1.0 + strength * d / d.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    weights = weights / weights.mean(dim=(2, 3), keepdim=True)
    return weights.reshape(*lead, 1, h, w)
