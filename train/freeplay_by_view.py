"""Free-play figures split by what the last context frame shows: an open view or a wall.

    python train/freeplay_by_view.py --data data/maze_fresh runs/eval/maze_released_fresh/metrics.json ...
    python train/freeplay_by_view.py --wall-share data/maze_j/train data/maze_fresh/test

``--data`` is the dataset the evaluations scored (its test/ split, as evaluate.py reads it). For
each metrics.json and each group of windows (far_world/evaluation/views.py) prints one Markdown
row, with walls split by whether an earlier context frame showed an open view (if none did, what
lies beyond the wall was never seen): the window count, the model's median PSNR and its median
gain over copy-last-frame, the median sharpness ratio, and the median colour error over the late
steps for the model and for copying. A world that copies where the view is a wall and drifts
where it is open scores like one that is merely mediocre everywhere; this table tells them
apart. ``--wall-share`` prints instead the share of frames that face a wall in episode folders
(every third frame of each).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from compare_evals import load_free_play

from far_world.data.episodes import iter_episodes, load_episode
from far_world.evaluation.views import OPEN_VIEW_CONTRAST, is_open_view


def context_frames(data: Path, sources: list[str], context: int) -> list[np.ndarray]:
    """The context frames (T,H,W,3) of each window, from its source ``episode.npz@start``."""
    split = data / "test" if (data / "test").is_dir() else data
    contexts = []
    for source in sources:
        name, start = source.rsplit("@", 1)
        path = split / name
        if not path.is_file():
            raise SystemExit(f"{path}: window source not found; pass the --data the evaluation scored")
        contexts.append(np.asarray(load_episode(path, mmap=True).frames[int(start) : int(start) + context]))
    return contexts


def wall_share(folder: Path, threshold: float, every: int = 3) -> float:
    """Share of (every ``every``-th) frames in an episode folder that face a wall."""
    walls = [
        not is_open_view(frame, threshold)
        for _, episode in iter_episodes(folder, mmap=True)
        for frame in episode.frames[::every]
    ]
    if not walls:
        raise SystemExit(f"{folder}: no episodes")
    return float(np.mean(walls))


def view_rows(run: str, free_play: dict, open_views: np.ndarray, seen_open: np.ndarray) -> list[str]:
    """One row a group of windows; ``open_views`` (N,) flags those whose last context frame is
    open, ``seen_open`` (N,) those with an open view anywhere in the context."""
    model, copy = free_play["per_window"]["model"], free_play["per_window"]["copy_last_frame"]
    rows = []
    groups = (
        ("open view", open_views),
        ("wall, an open view earlier in the context", ~open_views & seen_open),
        ("wall throughout the context", ~open_views & ~seen_open),
    )
    for label, group in groups:
        if not group.any():
            continue

        def median(values: list[float]) -> float:
            return float(np.median(np.asarray(values)[group]))

        gain = np.asarray(model["psnr"])[group] - np.asarray(copy["psnr"])[group]
        rows.append(
            f"| {run} | {label} | {int(group.sum())} | "
            f"{median(model['psnr']):.2f} | {np.median(gain):+.2f} | "
            f"{median(model['sharpness_ratio']):.2f} | {median(model['colour_error_late']):.1f} | "
            f"{median(copy['colour_error_late']):.1f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="*", type=Path, help="evaluate.py metrics.json files with free play")
    parser.add_argument("--data", type=Path, help="the dataset those evaluations scored")
    parser.add_argument("--wall-share", nargs="+", type=Path, metavar="FOLDER",
                        help="instead: the share of frames facing a wall in these episode folders")
    parser.add_argument("--threshold", type=float, default=OPEN_VIEW_CONTRAST,
                        help=f"top-bottom colour contrast above which a view is open (default {OPEN_VIEW_CONTRAST})")
    args = parser.parse_args(argv)
    if args.wall_share:
        for folder in args.wall_share:
            print(f"{folder}: {wall_share(folder, args.threshold):.3f} of the frames face a wall")
        return 0
    if not args.metrics or args.data is None:
        parser.error("give metrics.json files and --data, or --wall-share FOLDER ...")
    first = load_free_play(args.metrics[0])
    contexts = context_frames(args.data, first["sources"], first["context"])
    views = [np.array([is_open_view(frame, args.threshold) for frame in ctx]) for ctx in contexts]
    open_views = np.array([v[-1] for v in views])
    seen_open = np.array([v.any() for v in views])
    late = f"steps {first['late_from']}-{first['horizon']}" if "late_from" in first else "late steps"
    print("| run | last context frame | windows | PSNR median (dB) | median gain over copying | "
          f"sharpness ratio median | colour error {late}, median | copying's colour error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in args.metrics:
        free_play = load_free_play(path)
        if free_play["sources"] != first["sources"]:
            raise SystemExit(f"{path}: scored other windows than {args.metrics[0]}")
        for row in view_rows(path.parent.name, free_play, open_views, seen_open):
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
