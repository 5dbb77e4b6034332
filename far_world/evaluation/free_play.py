"""Free play against the real world: what a player sees after many steps on the model's own frames.

After ``context`` real frames, the model and the real game (a held-out recorded episode) take the
same ``horizon`` actions. PSNR and SSIM reward a blurred average, so this protocol adds what
they hide: sharpness relative to the real frames (1.0 = as sharp; a blurred world falls towards
0) and colour drift (a maze that forgets its wall colours). Every figure is computed per window
and reported as a mean, a median and, against copy-last-frame, the share of windows won, so that
a few static windows cannot flip a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from far_world.evaluation.fidelity import copy_last_frame
from far_world.evaluation.fvd import fvd_from_features, video_features
from far_world.evaluation.metrics import highlight_share, psnr, sobel_energy, ssim
from far_world.evaluation.perceptual import lpips_distance
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, rollout
from far_world.evaluation.video_metrics import MetricNets, fvd_skip_reason
from far_world.world import WorldModel


def colour_error(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-frame colour drift on the 0-255 scale: the mean over R, G, B of |mean channel value of
    the estimate - that of the truth|. uint8 (..., H, W, 3) -> (...). Blind to layout, by design:
    it catches a world that forgets its colours, not one that moves a wall."""
    diff = estimate.reshape(*estimate.shape[:-3], -1, 3).mean(-2) - truth.reshape(*truth.shape[:-3], -1, 3).mean(-2)
    return np.abs(diff).mean(-1)


def summary(values: np.ndarray, baseline: np.ndarray | None = None, higher_is_better: bool = True) -> dict[str, float]:
    """Mean and median over windows and, given a baseline on the same windows, the share of
    windows where ``values`` beat it (ties count half)."""
    values = np.asarray(values, dtype=np.float64)
    out = {"mean": float(values.mean()), "median": float(np.median(values))}
    if baseline is not None:
        diff = values - np.asarray(baseline, dtype=np.float64)
        if not higher_is_better:
            diff = -diff
        out["median_gain"] = float(np.median(diff))
        out["win_rate"] = float(((diff > 0) + 0.5 * (diff == 0)).mean())
    return out


def wins_needed(windows: int, alpha: float = 0.05) -> int:
    """The fewest windows of ``windows`` a world must win for a one-sided sign test to reject a
    coin at level ``alpha``: 31 of 48 at 0.05. Below it, "wins most windows" is luck too often."""
    if windows < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need windows >= 1 and alpha in (0, 1), got {windows}, {alpha}")
    def chance_of_exactly(k: int) -> float:
        return math.comb(windows, k) / 2.0**windows

    k, tail = windows + 1, 0.0  # tail: P(a coin wins at least k of the windows)
    while k > 0 and tail + chance_of_exactly(k - 1) < alpha:
        k -= 1
        tail += chance_of_exactly(k)
    return k


@dataclass
class FreePlayReport:
    """Per-window figures of each predictor over the free-play horizon, and their summaries."""

    windows: int
    context: int
    horizon: int
    late_from: int  # colour error is averaged over horizons late_from..horizon (1-based)
    per_window: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    per_horizon: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    # FVD of each predictor's last ``fvd_frames`` free-play frames against the real ones.
    fvd: dict[str, float] = field(default_factory=dict)
    fvd_frames: int = 0
    # Per-window figures of the real frames themselves, for the figures read against them.
    real: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summaries(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per predictor and figure: mean, median, and against copy-last-frame the median gain and win rate."""
        copy = self.per_window.get("copy_last_frame", {})
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, figures in self.per_window.items():
            out[name] = {}
            for figure, values in figures.items():
                baseline = copy.get(figure) if name != "copy_last_frame" and figure in _VERSUS_COPY else None
                out[name][figure] = summary(
                    np.array(values), None if baseline is None else np.array(baseline), _VERSUS_COPY.get(figure, True)
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "context": self.context,
            "horizon": self.horizon,
            "late_from": self.late_from,
            "summary": self.summaries(),
            "per_window": self.per_window,
            "per_horizon": self.per_horizon,
            "fvd": self.fvd,
            "fvd_frames": self.fvd_frames,
            "real": self.real,
            "notes": self.notes,
            "sources": self.sources,
        }


# Figures compared window by window with copy-last-frame, and whether higher is better.
_VERSUS_COPY = {"psnr": True, "ssim": True, "st_lpips": False}


def _figures(
    truth: np.ndarray, frames: np.ndarray, p: np.ndarray, late_from: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-window and per-horizon figures of frames (N, Hz, H, W, 3) against the truth, whose
    per-frame PSNR (N, Hz) is ``p``."""
    s = ssim(truth, frames)
    real_sharp, sharp = sobel_energy(truth), sobel_energy(frames)
    real_smooth, smooth = sobel_energy(truth, 1.0), sobel_energy(frames, 1.0)
    colour = colour_error(truth, frames)
    eps = 1e-8
    per_window = {
        "psnr": p.mean(1),
        "ssim": s.mean(1),
        "sharpness_ratio": sharp.mean(1) / (real_sharp.mean(1) + eps),
        "smoothed_sharpness_ratio": smooth.mean(1) / (real_smooth.mean(1) + eps),
        "colour_error_late": colour[:, late_from - 1 :].mean(1),
        "highlight_share": highlight_share(frames).mean(1),
    }
    per_horizon = {
        "psnr": p.mean(0),
        "ssim": s.mean(0),
        # Pooled over windows at each horizon: a few near-blank real frames cannot blow it up.
        "sharpness_ratio": sharp.sum(0) / (real_sharp.sum(0) + eps),
        "colour_error": colour.mean(0),
    }
    return per_window, per_horizon


def evaluate_free_play(
    world: WorldModel,
    windows: EvalWindows,
    predicted: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
    nets: MetricNets | None = None,
    fvd_frames: int = 16,
    st_lpips_every: int = 4,
) -> tuple[FreePlayReport, dict[str, np.ndarray]]:
    """The model (the real future actions), copy-last-frame and the autoencoder's reconstructions
    of the truth, scored over every free-play horizon. Returns the report and each predictor's
    frames by name.

    With ``nets``: ST-LPIPS per window on every ``st_lpips_every``-th step, and FVD on the last
    ``fvd_frames`` steps, where drift has had the whole horizon to build up (both subsampled to
    keep I3D and AlexNet time within the evaluation's budget on a CPU)."""
    truth = windows.future_frames
    if predicted is None:
        predicted = rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar)
    horizon = truth.shape[1]
    report = FreePlayReport(
        windows=len(windows), context=windows.context_frames.shape[1], horizon=horizon,
        late_from=horizon // 2 + 1, sources=list(windows.sources),
    )  # fmt: skip
    predictions = {
        "model": predicted,
        "copy_last_frame": copy_last_frame(windows),
        "autoencoder_ceiling": autoencoder_reconstruction(world, truth),
    }
    report.real["highlight_share"] = highlight_share(truth).mean(1).tolist()
    frame_psnr = {name: psnr(truth, frames) for name, frames in predictions.items()}
    for name, frames in predictions.items():
        per_window, per_horizon = _figures(truth, frames, frame_psnr[name], report.late_from)
        if name != "copy_last_frame":
            # The window-by-window verdict at each horizon: a few easy windows cannot carry a mean.
            gain = frame_psnr[name] - frame_psnr["copy_last_frame"]
            per_horizon["psnr_median_gain_over_copy"] = np.median(gain, axis=0)
        if nets is not None and nets.stlpips is not None:
            steps = slice(st_lpips_every - 1, None, st_lpips_every)
            per_window["st_lpips"] = lpips_distance(nets.stlpips, truth[:, steps], frames[:, steps]).mean(1)
        report.per_window[name] = {k: v.tolist() for k, v in per_window.items()}
        report.per_horizon[name] = {k: v.tolist() for k, v in per_horizon.items()}
    if nets is not None and nets.i3d is not None:
        clip = min(fvd_frames, horizon)
        skip = fvd_skip_reason(len(windows), clip)
        if skip:
            report.notes.append(skip)
        else:
            report.fvd_frames = clip
            real = video_features(nets.i3d, truth[:, -clip:])
            for name, frames in predictions.items():
                report.fvd[name] = fvd_from_features(real, video_features(nets.i3d, frames[:, -clip:]))
    elif nets is not None and nets.missing():
        report.notes.append(nets.missing())
    return report, predictions


def save_strip(
    videos: dict[str, np.ndarray],
    path: str | Path,
    every: int = 4,
    rows: int = 6,
    scale: int = 1,
) -> Path:
    """A PNG of ``videos`` (name -> uint8 (N, Hz, H, W, 3), the truth first), one row each, for
    ``rows`` windows spread evenly over the N (windows are cut episode after episode: the first
    few would all show one place), one column every ``every`` steps (steps every, 2*every, ...).
    The autoencoder's reconstruction of the truth between real and model frames shows which of
    the detail a perfect world model could draw and which the model loses."""
    first = next(iter(videos.values()))
    steps = np.arange(every - 1, first.shape[1], every)
    h, w = first.shape[2:4]
    gap, label_w = 4, 84
    blocks = []
    for i in np.unique(np.linspace(0, len(first) - 1, min(rows, len(first))).round().astype(int)):
        for name, video in videos.items():
            tiles = [np.pad(video[i][t], ((0, 0), (0, 1), (0, 0)), constant_values=255) for t in steps]
            row = np.concatenate(tiles, axis=1)
            label = np.full((h, label_w, 3), 255, np.uint8)
            cv2.putText(label, name, (2, h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
            blocks.append(np.concatenate([label, row], axis=1))
        blocks.append(np.full((gap, blocks[-1].shape[1], 3), 255, np.uint8))
    header = np.full((14, blocks[0].shape[1], 3), 255, np.uint8)
    for j, t in enumerate(steps):
        cv2.putText(header, f"{t + 1}", (label_w + j * (w + 1) + 2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.concatenate([header, *blocks[:-1]], axis=0)
    return write_png(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST), path)


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 (H, W, 3) image as a PNG, making its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
