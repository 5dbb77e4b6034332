"""Fidelity per horizon: the model against baselines measured on the same windows in the same run.

Baselines bracket the model: ``copy_last_frame`` (predict that nothing changes) is the floor a
world model must beat; ``autoencoder_ceiling`` (decode(encode(truth))) is the best any rollout
through this autoencoder can score, because every generated frame is decoded by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from far_world.evaluation.fvd import fvd
from far_world.evaluation.metrics import psnr, ssim
from far_world.evaluation.perceptual import LPIPS, lpips_distance
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, rollout
from far_world.world import WorldModel


@dataclass
class HorizonScores:
    """Mean PSNR (dB), SSIM and, with its weights, LPIPS per horizon 1..Hz of one predictor."""

    psnr: list[float]
    ssim: list[float]
    lpips: list[float] | None = None

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray, lpips_net: LPIPS | None = None) -> "HorizonScores":
        """Scores of predicted against true frames, both uint8 (N, Hz, H, W, 3)."""
        lp = None if lpips_net is None else lpips_distance(lpips_net, truth, predicted).mean(0).tolist()
        return cls(psnr(truth, predicted).mean(0).tolist(), ssim(truth, predicted).mean(0).tolist(), lp)

    def to_dict(self) -> dict:
        d = {"psnr": self.psnr, "ssim": self.ssim, "mean_psnr": float(np.mean(self.psnr)), "mean_ssim": float(np.mean(self.ssim))}
        if self.lpips is not None:
            d.update(lpips=self.lpips, mean_lpips=float(np.mean(self.lpips)))
        return d


@dataclass
class FidelityReport:
    horizon: int
    windows: int
    context: int
    scores: dict[str, HorizonScores] = field(default_factory=dict)
    # FVD of each predictor's videos (context + prediction) against the true videos.
    fvd: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "horizon": self.horizon,
            "windows": self.windows,
            "context": self.context,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "fvd": self.fvd,
            "notes": self.notes,
        }


def copy_last_frame(windows: EvalWindows) -> np.ndarray:
    """The baseline that predicts no change: the last context frame repeated (N, Hz, H, W, 3)."""
    return np.repeat(windows.context_frames[:, -1:], windows.future_frames.shape[1], axis=1)


def evaluate_fidelity(
    world: WorldModel,
    windows: EvalWindows,
    predicted: np.ndarray | None = None,
    seed: int = 0,
    lpips_net: LPIPS | None = None,
    i3d: torch.jit.ScriptModule | None = None,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> FidelityReport:
    """Model (true actions), copy-last-frame and autoencoder ceiling, per horizon.

    ``predicted`` (N, Hz, H, W, 3): the model's rollout with the true actions if already made
    (the action-following evaluation shares it); rolled out here otherwise.
    """
    truth = windows.future_frames
    if predicted is None:
        predicted = rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar)
    report = FidelityReport(horizon=truth.shape[1], windows=len(windows), context=windows.context_frames.shape[1])
    predictions = {
        "model": predicted,
        "copy_last_frame": copy_last_frame(windows),
        "autoencoder_ceiling": autoencoder_reconstruction(world, truth),
    }
    for name, frames in predictions.items():
        report.scores[name] = HorizonScores.of(truth, frames, lpips_net)
    if lpips_net is None:
        report.notes.append("LPIPS skipped: no --lpips-weights given (AlexNet + LPIPS linear heads, local files)")
    if i3d is None:
        report.notes.append("FVD skipped: no --i3d-weights given (StyleGAN-V's i3d_torchscript.pt, a local file)")
    elif len(windows) < 2:
        report.notes.append("FVD skipped: it needs at least two videos")
    else:
        real = np.concatenate([windows.context_frames, truth], axis=1)
        # The ceiling's videos go through the autoencoder whole; the others keep the real context.
        contexts = {"autoencoder_ceiling": autoencoder_reconstruction(world, windows.context_frames)}
        for name, frames in predictions.items():
            context = contexts.get(name, windows.context_frames)
            report.fvd[name] = fvd(i3d, real, np.concatenate([context, frames], axis=1))
    return report
