"""Extrapolation: error against rollout length, up to 16x the training clip length, with and
without FlexRoPE's temporal decay.

A frame's position is its index in the sequence the model has seen (context + generated,
1-based). Positions are grouped into buckets by multiples of the training clip length L:
(0, L], (L, 2L], (2L, 4L], (4L, 8L], (8L, 16L]; the first is inside what training showed.
The FlexRoPE slope is tuned on validation windows (a small sweep, slope 0 included) by the
mean PSNR at positions beyond L, then compared with slope 0 on the test windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from far_world.evaluation.metrics import psnr
from far_world.evaluation.rollouts import EvalWindows, rollout
from far_world.world import WorldModel

MAX_FACTOR = 16


def training_clip_length(world: WorldModel) -> int | None:
    """The longest training clip (frames) recorded in the checkpoint's summary, if any."""
    summary = world.checkpoint.summary
    for holder in (summary, summary.get("config", {}), summary.get("train_config", {})):
        if isinstance(holder, dict) and "max_clip_frames" in holder:
            return int(holder["max_clip_frames"])
    return None


def bucket_edges(train_len: int, max_position: int) -> list[tuple[int, int]]:
    """Position buckets (lo, hi], lo exclusive, by powers of two of ``train_len``, up to ``max_position``."""
    bounds = [0, train_len] + [train_len * 2**k for k in range(1, 5)]
    return [(lo, min(hi, max_position)) for lo, hi in zip(bounds[:-1], bounds[1:]) if lo < max_position]


def bucket_means(per_position: np.ndarray, first_position: int, edges: Sequence[tuple[int, int]]) -> list[float | None]:
    """Mean of values per position (N, Hz) over each bucket; position of column 0 is ``first_position``."""
    positions = first_position + np.arange(per_position.shape[1])
    out = []
    for lo, hi in edges:
        cols = (positions > lo) & (positions <= hi)
        out.append(float(per_position[:, cols].mean()) if cols.any() else None)
    return out


def _psnr_curve(world: WorldModel, windows: EvalWindows, slope: float, seed: int, batch_size: int, bar: tqdm | None) -> np.ndarray:
    """Per-frame PSNR (N, Hz) of a true-action rollout at FlexRoPE ``slope`` (the world's settings otherwise)."""
    settings = world.settings.replace(flex_rope_slope=slope)
    return psnr(windows.future_frames, rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar, settings=settings))


def tune_flex_rope_slope(
    world: WorldModel,
    windows: EvalWindows,
    candidates: Sequence[float],
    train_len: int,
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> tuple[float, dict[float, float]]:
    """The candidate slope with the best mean PSNR at positions beyond ``train_len`` on ``windows``.

    Returns (best slope, {slope: that mean PSNR}); ties go to the smaller slope.
    """
    first = windows.context_frames.shape[1] + 1
    beyond = first + np.arange(windows.future_frames.shape[1]) > train_len
    if not beyond.any():
        raise ValueError(f"tuning windows end at position {first + len(beyond) - 1}, not beyond the training length {train_len}")
    scores = {}
    for slope in sorted(set(float(c) for c in candidates)):
        scores[slope] = float(_psnr_curve(world, windows, slope, seed, batch_size, bar)[:, beyond].mean())
    best = max(scores, key=lambda s: (scores[s], -s))
    return best, scores


@dataclass
class ExtrapolationReport:
    train_len: int
    context: int
    horizon: int
    windows: int
    edges: list[tuple[int, int]]
    # Per setting (e.g. "slope_0", "slope_tuned"): PSNR per bucket and the mean curve per position.
    buckets: dict[str, list[float | None]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    slopes: dict[str, float] = field(default_factory=dict)
    sweep: dict[float, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "train_len": self.train_len,
            "context": self.context,
            "horizon": self.horizon,
            "windows": self.windows,
            "buckets": [f"({lo},{hi}]" for lo, hi in self.edges],
            "psnr_per_bucket": self.buckets,
            "psnr_per_position": self.curves,
            "slopes": self.slopes,
            "sweep_psnr_beyond_train_len": {str(k): v for k, v in self.sweep.items()},
            "notes": self.notes,
        }


def evaluate_extrapolation(
    world: WorldModel,
    windows: EvalWindows,
    train_len: int,
    slopes: dict[str, float],
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> ExtrapolationReport:
    """PSNR per position bucket of true-action rollouts at each named FlexRoPE slope."""
    context, horizon = windows.context_frames.shape[1], windows.future_frames.shape[1]
    edges = bucket_edges(train_len, context + horizon)
    report = ExtrapolationReport(train_len, context, horizon, len(windows), edges, slopes=dict(slopes))
    for name, slope in slopes.items():
        curve = _psnr_curve(world, windows, slope, seed, batch_size, bar)
        report.buckets[name] = bucket_means(curve, context + 1, edges)
        report.curves[name] = curve.mean(0).tolist()
    return report
