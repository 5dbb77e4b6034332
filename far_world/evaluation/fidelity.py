"""Fidelity per horizon against baselines measured in the same run, and action following."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from far_world.evaluation.metrics import psnr, ssim
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, rollout
from far_world.world import WorldModel


@dataclass
class HorizonScores:
    """Mean PSNR (dB) and SSIM per horizon 1..Hz for one way of predicting the future."""

    psnr: list[float]
    ssim: list[float]

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray) -> "HorizonScores":
        return cls(psnr(truth, predicted).mean(0).tolist(), ssim(truth, predicted).mean(0).tolist())


@dataclass
class FidelityReport:
    horizon: int
    windows: int
    scores: dict[str, HorizonScores] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "horizon": self.horizon,
            "windows": self.windows,
            "scores": {k: {"psnr": v.psnr, "ssim": v.ssim} for k, v in self.scores.items()},
        }


def shuffled_actions(actions: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each window gets another window's future actions (a derangement of the windows)."""
    n = len(actions)
    if n < 2:
        raise ValueError("shuffling actions needs at least two windows")
    shift = 1 + int(np.random.default_rng(seed).integers(n - 1))
    return actions[(np.arange(n) + shift) % n]


def evaluate_fidelity(world: WorldModel, windows: EvalWindows, seed: int = 0, progress: bool = True) -> FidelityReport:
    """Model with true and shuffled actions, copy-last-frame, and autoencoder reconstruction."""
    truth = windows.future_frames
    report = FidelityReport(horizon=truth.shape[1], windows=len(windows))
    report.scores["model"] = HorizonScores.of(truth, rollout(world, windows, seed=seed, progress=progress))
    shuffled = rollout(world, windows, shuffled_actions(windows.future_actions, seed), seed=seed, progress=progress)
    report.scores["model_shuffled_actions"] = HorizonScores.of(truth, shuffled)
    copy_last = np.repeat(windows.context_frames[:, -1:], truth.shape[1], axis=1)
    report.scores["copy_last_frame"] = HorizonScores.of(truth, copy_last)
    report.scores["autoencoder_ceiling"] = HorizonScores.of(truth, autoencoder_reconstruction(world, truth))
    return report
