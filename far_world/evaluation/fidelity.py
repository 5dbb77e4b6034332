"""Fidelity per horizon: the model against baselines measured on the same windows in the same run.

Baselines bracket the model: ``copy_last_frame`` (predict that nothing changes) is the floor a
world model must beat; ``autoencoder_ceiling`` (decode(encode(truth))) is the best any rollout
through this autoencoder can score, because every generated frame is decoded by it.

PSNR and SSIM reward a blurred average of the possible futures; ST-LPIPS (per frame) and FVD
(over clips of the first ``fvd_frames`` predicted frames) do not, and they run whenever their
networks are available (:class:`~far_world.evaluation.video_metrics.MetricNets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from far_world.evaluation.fvd import fvd_from_features, video_features
from far_world.evaluation.metrics import psnr, ssim
from far_world.evaluation.perceptual import lpips_distance
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, rollout
from far_world.evaluation.video_metrics import MetricNets, fvd_skip_reason
from far_world.world import WorldModel

# FVD16: clips of the first 16 predicted frames, the usual FVD length (I3D needs at least 9).
FVD_FRAMES = 16


@dataclass
class HorizonScores:
    """Mean PSNR (dB), SSIM and, with their networks, ST-LPIPS and LPIPS per horizon 1..Hz of one predictor."""

    psnr: list[float]
    ssim: list[float]
    lpips: list[float] | None = None
    st_lpips: list[float] | None = None

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray, nets: MetricNets | None = None) -> "HorizonScores":
        """Scores of predicted against true frames, both uint8 (N, Hz, H, W, 3)."""
        nets = nets or MetricNets()

        def per_horizon(net) -> list[float] | None:
            return None if net is None else lpips_distance(net, truth, predicted).mean(0).tolist()

        return cls(
            psnr(truth, predicted).mean(0).tolist(), ssim(truth, predicted).mean(0).tolist(),
            per_horizon(nets.lpips), per_horizon(nets.stlpips),
        )  # fmt: skip

    def to_dict(self) -> dict:
        d = {"psnr": self.psnr, "ssim": self.ssim, "mean_psnr": float(np.mean(self.psnr)), "mean_ssim": float(np.mean(self.ssim))}
        if self.lpips is not None:
            d.update(lpips=self.lpips, mean_lpips=float(np.mean(self.lpips)))
        if self.st_lpips is not None:
            d.update(st_lpips=self.st_lpips, mean_st_lpips=float(np.mean(self.st_lpips)))
        return d


@dataclass
class FidelityReport:
    horizon: int
    windows: int
    context: int
    scores: dict[str, HorizonScores] = field(default_factory=dict)
    # FVD of each predictor's clips (its first ``fvd_frames`` predicted frames, one clip a
    # window) against the true clips; ``fvd_videos`` clips a set.
    fvd: dict[str, float] = field(default_factory=dict)
    fvd_videos: int = 0
    fvd_frames: int = 0
    fvd_network: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "horizon": self.horizon,
            "windows": self.windows,
            "context": self.context,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "fvd": self.fvd,
            "fvd_videos": self.fvd_videos,
            "fvd_frames": self.fvd_frames,
            "fvd_network": self.fvd_network,
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
    nets: MetricNets | None = None,
    batch_size: int = 8,
    bar: tqdm | None = None,
    fvd_frames: int = FVD_FRAMES,
) -> FidelityReport:
    """Model (true actions), copy-last-frame and autoencoder ceiling, per horizon.

    ``predicted`` (N, Hz, H, W, 3): the model's rollout with the true actions if already made
    (the action-following evaluation shares it); rolled out here otherwise. ``nets``: the
    perceptual metrics' networks (none: PSNR and SSIM only).
    """
    nets = nets or MetricNets()
    truth = windows.future_frames
    if predicted is None:
        predicted = rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar)
    report = FidelityReport(horizon=truth.shape[1], windows=len(windows), context=windows.context_frames.shape[1])
    predictions = {
        "model": predicted,
        "copy_last_frame": copy_last_frame(windows),
        "autoencoder_ceiling": autoencoder_reconstruction(world, truth),
    }
    if bar is not None and (nets.stlpips is not None or nets.lpips is not None):
        bar.set_postfix_str("fidelity: perceptual distances")
    for name, frames in predictions.items():
        report.scores[name] = HorizonScores.of(truth, frames, nets)
    if nets.lpips is None:
        report.notes.append("LPIPS skipped: no --lpips-weights given (AlexNet + LPIPS linear heads, local files)")
    if nets.missing():
        report.notes.append(nets.missing())
    clip = min(fvd_frames, truth.shape[1])
    skip = fvd_skip_reason(len(windows), clip)
    if nets.i3d is not None and skip:
        report.notes.append(skip)
    elif nets.i3d is not None:
        report.fvd_videos, report.fvd_frames, report.fvd_network = len(windows), clip, nets.i3d_name
        if bar is not None:
            bar.set_postfix_str(f"fidelity: FVD on {len(windows)} clips x {1 + len(predictions)} sets")
        real = video_features(nets.i3d, truth[:, :clip])
        for name, frames in predictions.items():
            report.fvd[name] = fvd_from_features(real, video_features(nets.i3d, frames[:, :clip]))
    return report
