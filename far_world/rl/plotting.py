"""The learning-curve figure of an agent run: returns against environment steps, with real-world scores."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from far_world.files import atomic_write  # noqa: E402
from far_world.rl.stats import MeanCI  # noqa: E402


@dataclass
class Series:
    """A curve; with ``low``/``high`` it is drawn as points with confidence bars, else as a line."""

    label: str
    steps: list[int]
    values: list[float]
    low: list[float] | None = None
    high: list[float] | None = None


def plot_learning_curve(
    series: list[Series], references: dict[str, MeanCI], path: str | os.PathLike, title: str
) -> Path:
    """Draw ``series`` against steps and each reference score as a level line with its CI band; save PNG."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for s in series:
        if not s.steps:
            continue
        if s.low is None or s.high is None:
            ax.plot(s.steps, s.values, label=s.label, linewidth=1.5)
        else:
            # A bound is NaN for a single-episode point: matplotlib leaves that bar out.
            below = [v - lo for v, lo in zip(s.values, s.low)]
            above = [hi - v for v, hi in zip(s.values, s.high)]
            ax.errorbar(s.steps, s.values, yerr=[below, above], fmt="o", capsize=4, label=s.label)
    for (label, score), color in zip(references.items(), ("tab:gray", "tab:purple", "tab:brown")):
        ax.axhline(score.mean, linestyle="--", color=color, label=f"{label}: {score.mean:.1f}")
        if not math.isnan(score.low):
            ax.axhspan(score.low, score.high, color=color, alpha=0.15)
    ax.set_xlabel("environment steps (imagined or real)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    plt.close(fig)
    return Path(path)
