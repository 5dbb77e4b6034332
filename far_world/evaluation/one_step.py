"""One step from real context, grouped by the action taken: where a world loses to copying.

Free play's verdict at step 1 is a median over a few dozen windows, whatever the player did.
This protocol predicts one frame from real context at many windows and groups the figures by
the action into that frame. A world that loses at step 1 overall may lose only where the
player stood still (it cannot copy its last frame) or only where the view moved (it does not
follow the action), and the two call for different cures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from far_world.evaluation.fidelity import copy_last_frame
from far_world.evaluation.free_play import summary, write_png
from far_world.evaluation.metrics import psnr, sobel_energy
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, rollout
from far_world.world import WorldModel

ALL = "all"


def action_labels(actions: np.ndarray, names: list[str]) -> list[str]:
    """A label per action (N,) or (N,K): its name for a one-component space whose names cover
    it, else the components joined ("2,0")."""
    actions = np.asarray(actions).reshape(len(actions), -1)
    if actions.shape[1] == 1 and len(names) > int(actions.max(initial=0)):
        return [names[int(a)] for a in actions[:, 0]]
    return [",".join(str(int(c)) for c in row) for row in actions]


@dataclass
class OneStepReport:
    """Per action (and over all windows): how the model's first frame compares with copying."""

    windows: int
    context: int
    by_action: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # each window's action

    @property
    def most_common_action(self) -> str:
        """The action of the most windows: its windows decide the overall median."""
        return max((k for k in self.by_action if k != ALL), key=lambda k: self.by_action[k]["count"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows, "context": self.context, "by_action": self.by_action,
            "most_common_action": self.most_common_action, "sources": self.sources, "labels": self.labels,
        }  # fmt: skip


def _group_figures(truth: np.ndarray, frames: dict[str, np.ndarray], frame_psnr: dict[str, np.ndarray]) -> dict[str, Any]:
    """Figures of one group of windows: truth (n,H,W,3), each predictor's frames and per-frame PSNR."""
    model, copy, ceiling = frame_psnr["model"], frame_psnr["copy_last_frame"], frame_psnr["autoencoder_ceiling"]
    versus_copy = summary(model, copy)
    return {
        "count": len(truth),
        "psnr_model": float(np.median(model)),
        "psnr_copy": float(np.median(copy)),
        # Window by window, as free play's verdict: a few easy windows cannot carry a mean.
        "margin_over_copy": versus_copy["median_gain"],
        "wins_over_copy": versus_copy["win_rate"],
        "ceiling_margin_over_copy": float(np.median(ceiling - copy)),
        # Pooled over the group's windows, as free play's per-horizon ratio.
        "sharpness_ratio": float(sobel_energy(frames["model"]).sum() / (sobel_energy(truth).sum() + 1e-8)),
    }


def evaluate_one_step(
    world: WorldModel, windows: EvalWindows, seed: int = 0, batch_size: int = 8, bar: tqdm | None = None
) -> tuple[OneStepReport, dict[str, np.ndarray]]:
    """Predict the first future frame of every window (from its real context and true action)
    and score it against copy-last-frame and the autoencoder's reconstruction, per action.
    Returns the report and the frames (N,H,W,3) of the truth and of each predictor, for a picture."""
    truth = windows.future_frames[:, 0]
    first = EvalWindows(
        windows.context_frames, windows.context_actions, windows.future_frames[:, :1], windows.future_actions[:, :1],
        windows.sources,
    )  # fmt: skip
    frames = {
        "model": rollout(world, first, seed=seed, batch_size=batch_size, bar=bar)[:, 0],
        "copy_last_frame": copy_last_frame(first)[:, 0],
        "autoencoder_ceiling": autoencoder_reconstruction(world, truth),
    }
    frame_psnr = {name: psnr(truth, f) for name, f in frames.items()}
    names = action_labels(first.future_actions[:, 0], world.action_names)
    labels = np.array(names)
    report = OneStepReport(
        windows=len(truth), context=windows.context_frames.shape[1], sources=list(windows.sources), labels=names
    )
    report.by_action[ALL] = _group_figures(truth, frames, frame_psnr)
    order = dict.fromkeys(world.action_names)  # the space's order first, then any other labels
    for label in [*[n for n in order if n in labels], *sorted(set(labels) - set(order))]:
        rows = labels == label
        report.by_action[str(label)] = _group_figures(
            truth[rows], {k: v[rows] for k, v in frames.items()}, {k: v[rows] for k, v in frame_psnr.items()}
        )
    return report, {"truth": truth, **frames}


def save_one_step_frames(
    frames: dict[str, np.ndarray], labels: list[str], path: str | Path, action: str | None = None, rows: int = 8
) -> Path:
    """A PNG of ``rows`` windows spread over those whose action is ``action`` (None: all), one per
    row: the last context frame, the truth, the autoencoder's reconstruction and the model's frame."""
    picked = [i for i, label in enumerate(labels) if action is None or label == action]
    if not picked:
        raise ValueError(f"no window with the action {action!r}")
    picked = [picked[int(round(j))] for j in np.linspace(0, len(picked) - 1, min(rows, len(picked)))]
    columns = (
        ("last frame", "copy_last_frame"), ("real", "truth"), ("autoencoder", "autoencoder_ceiling"), ("model", "model")
    )
    w = frames["truth"].shape[2]
    header = np.full((14, len(columns) * (w + 1), 3), 255, np.uint8)
    for j, (title, _) in enumerate(columns):
        cv2.putText(header, title, (j * (w + 1) + 2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    lines = [header]
    for i in picked:
        tiles = [np.pad(frames[key][i], ((0, 1), (0, 1), (0, 0)), constant_values=255) for _, key in columns]
        lines.append(np.concatenate(tiles, axis=1))
    return write_png(cv2.resize(np.concatenate(lines, axis=0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST), path)
