"""Ended episodes replayed in a world that carries game variables: when does it imagine the end?

An agent trained in imagination learns when its episodes end from the world's own carried
values (doom's health), not from the real ones. Each held-out episode that ended is replayed
in the world from its first frames under its true actions, the world carrying its own values
from the recorded ones there, and the first imagined end is set against the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from far_world.data.episodes import Episode
from far_world.world import WorldModel

END_TOLERANCE = 8  # steps: doom's health falls every 8, so an end is timed to within one fall
HORIZONS = (8, 32, 64)  # steps after the context at which the carried values are scored


@dataclass
class CarriedReplay:
    summary: dict
    real: list[np.ndarray]  # per episode, the first carried variable recorded after the context (T_i,)
    imagined: list[np.ndarray]  # the world's own values over the same steps (T_i,)
    imagined_end: np.ndarray  # per episode, the step of the first imagined end (-1: none by the real end)


def replay_ended_episodes(
    world: WorldModel, episodes: Sequence[Episode], context: int, seed: int = 0, bar: tqdm | None = None
) -> CarriedReplay:
    """Replay the episodes that ended after more than ``context`` steps (all in one batch);
    steps count from the context's last frame, the real end at the step whose transition ends it."""
    names = world.carried_names
    if not names:
        raise ValueError("this world carries no variables: nothing to replay")
    ended = [e for e in episodes if np.asarray(e.terminated).any() and e.num_steps > context]
    if not ended:
        raise ValueError(f"no episode ends after more than {context} steps")
    missing = [n for n in names if n not in ended[0].extras]
    if missing:
        raise ValueError(f"the episodes do not record {missing}, which this world carries")
    lengths = np.array([e.num_steps for e in ended])
    real_end = lengths - context + 1
    batch = world.with_batch(len(ended))
    history = np.stack([np.stack([e.extras[n][:context] for n in names], axis=-1) for e in ended]).astype(np.float32)
    batch.reset(np.stack([np.array(e.frames[:context]) for e in ended]),
                np.stack([np.array(e.actions[: context - 1]) for e in ended]), seed=seed, carried=history)
    first_end = np.full(len(ended), -1)
    imagined = np.zeros((len(ended), int(real_end.max())), np.float32)
    for step in range(1, int(real_end.max()) + 1):
        # Rows past their real end keep their last action; nothing after it is scored.
        index = np.minimum(context - 2 + step, lengths - 1)
        out = batch.step(np.stack([np.asarray(e.actions)[i] for e, i in zip(ended, index)]))
        first_end[(first_end < 0) & out.terminated & (step <= real_end)] = step
        imagined[:, step - 1] = out.carried[:, 0]
        if bar is not None:
            bar.update(1)
    real = [np.asarray(e.extras[names[0]], np.float32)[context : context + n] for e, n in zip(ended, real_end)]
    imagined_rows = [imagined[i, :n] for i, n in enumerate(real_end)]
    offset = np.where(first_end > 0, first_end - real_end, 0)
    found = first_end > 0
    errors = {h: [abs(im[h - 1] - re[h - 1]) for im, re in zip(imagined_rows, real) if len(re) >= h] for h in HORIZONS}
    summary = {
        "episodes": len(ended),
        "context": context,
        "variable": names[0],
        "real_end_steps_median": float(np.median(real_end)),
        f"imagined_end_within_{END_TOLERANCE}": float((found & (np.abs(offset) <= END_TOLERANCE)).mean()),
        "imagined_end_early": float((found & (offset < -END_TOLERANCE)).mean()),
        "imagined_end_late_or_never": float((~found).mean()),
        "end_offset_median": float(np.median(offset[found])) if found.any() else None,
        **{f"{names[0]}_mae_step{h}": float(np.mean(v)) if v else None for h, v in errors.items()},
    }
    return CarriedReplay(summary, real, imagined_rows, first_end)


def save_replay_plot(replay: CarriedReplay, path: str | Path, episodes: int = 8) -> Path:
    """The first ``episodes`` replays: recorded against imagined values, each end marked."""
    from far_world.evaluation.report import plt

    shown = min(episodes, len(replay.real))
    cols = min(4, shown)
    rows = (shown + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    name = replay.summary["variable"]
    for i, ax in enumerate(axes.flat):
        if i >= shown:
            ax.axis("off")
            continue
        steps = np.arange(1, len(replay.real[i]) + 1)
        ax.plot(steps, replay.real[i], color="black", label=f"real {name}")
        ax.plot(steps, replay.imagined[i], color="tab:red", label=f"world's {name}")
        ax.axvline(len(steps), color="black", linestyle=":", label="real end")
        if replay.imagined_end[i] > 0:
            ax.axvline(replay.imagined_end[i], color="tab:red", linestyle=":", label="imagined end")
        ax.set_xlabel("steps after the context")
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
