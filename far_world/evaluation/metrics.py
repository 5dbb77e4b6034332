"""Frame metrics computed as the video-prediction literature does (data range 1, per frame).

PSNR and SSIM follow torchmetrics' definitions (SSIM: 11x11 Gaussian window, sigma 1.5,
k1 0.01, k2 0.03, valid region only), so numbers are comparable with published tables.
One departure: torchmetrics gives +inf dB for identical frames; we cap PSNR at
``PSNR_CAP_DB`` (MSE clamped at 1e-10), so that a mean over frames stays finite when a
prediction is exact somewhere (a static scene copied by the copy-last-frame baseline).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg

from far_world.model.edges import gaussian_blur, luminance, sobel

PSNR_CAP_DB = 100.0


def _to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(frames))
    if t.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {t.dtype}")
    return t.reshape(-1, *t.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0


def psnr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB of uint8 frames (..., H, W, 3); returns shape (...)."""
    lead = np.asarray(reference).shape[:-3]
    mse = (_to_float(reference) - _to_float(estimate)).pow(2).flatten(1).mean(1).clamp_min(10 ** (-PSNR_CAP_DB / 10))
    return (10 * torch.log10(1.0 / mse)).numpy().reshape(lead)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(reference: np.ndarray, estimate: np.ndarray, window: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Per-frame SSIM of uint8 frames (..., H, W, 3) (mean over channels and valid pixels)."""
    lead = np.asarray(reference).shape[:-3]
    x, y = _to_float(reference), _to_float(estimate)
    c = x.shape[1]
    kernel = _gaussian_window(window, sigma).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).numpy().reshape(lead)


def sobel_energy(frames: np.ndarray, smooth_sigma: float = 0.0) -> np.ndarray:
    """Mean Sobel gradient magnitude of each frame's luminance (0..1 scale): uint8 (..., H, W, 3) -> (...).

    ``smooth_sigma`` > 0 blurs first, so that one-pixel grain (which real frames lack) adds
    little: a model that scores sharp only without smoothing is making noise, not detail.
    """
    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, *frames.shape[-3:]))).permute(0, 3, 1, 2).float() / 255.0
    y = luminance(x)
    if smooth_sigma > 0:
        y = gaussian_blur(y, smooth_sigma)
    gx, gy = sobel(y)
    return torch.sqrt(gx**2 + gy**2).flatten(1).mean(1).numpy().reshape(lead)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (the distance behind FID and FVD):
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), for means (D,) and covariances (D, D)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    # Singular covariances (fewer samples than feature dims, as with few videos) can make the
    # square root non-finite: a tiny ridge on both makes it well defined.
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"feature statistics need (N>=2, D) features, got shape {features.shape}")
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def highlight_share(frames: np.ndarray, threshold: int = 120) -> np.ndarray:
    """Share of each frame's pixels whose every channel is at least ``threshold``: uint8
    (..., H, W, 3) -> (...).

    Small light things on darker surroundings, such as doom's medkits, are the first detail a
    blurred frame smears away; counted against the real frames' share, they tell whether a world
    still draws them, which the sharpness ratio, dominated by walls and horizons, does not.
    """
    return (frames.min(axis=-1) >= threshold).reshape(*frames.shape[:-3], -1).mean(-1)
