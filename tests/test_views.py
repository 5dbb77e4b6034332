"""Free-play windows split by view: open views and walls told apart, and the split table built."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from far_world.data.episodes import Episode, save_episode
from far_world.evaluation.views import is_open_view, top_bottom_contrast

REPO = Path(__file__).resolve().parents[1]


def open_frame() -> np.ndarray:
    """Sky over a wall over a dark floor, as a corridor looks."""
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:20] = (110, 150, 200)
    frame[20:44] = (200, 60, 90)
    frame[44:] = (40, 45, 50)
    return frame


def wall_frame(seed: int = 0) -> np.ndarray:
    """One wall colour filling the view, with a drawn line and some pixel noise."""
    rng = np.random.default_rng(seed)
    frame = np.full((64, 64, 3), (60, 80, 200), np.int16) + rng.integers(-6, 7, (64, 64, 3))
    frame[30:33, 5:60] = 10
    return frame.clip(0, 255).astype(np.uint8)


def test_open_views_and_walls_are_told_apart() -> None:
    assert is_open_view(open_frame())
    assert not is_open_view(wall_frame())
    assert top_bottom_contrast(wall_frame()) < 3.0
    assert top_bottom_contrast(np.flipud(open_frame())) == top_bottom_contrast(open_frame())


def load_cli():
    sys.path.insert(0, str(REPO / "train"))
    try:
        spec = importlib.util.spec_from_file_location("freeplay_by_view", REPO / "train" / "freeplay_by_view.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "train"))
    return module.main


def test_table_groups_windows_by_their_last_context_frame(tmp_path: Path, capsys) -> None:
    context = 3
    # Episode a faces walls through its whole context (frames 0-2), episode b ends it on an open view.
    for name, first, last in (("a.npz", wall_frame(3), wall_frame()), ("b.npz", wall_frame(3), open_frame())):
        frames = np.stack([first, wall_frame(1), last, open_frame(), wall_frame(2)])
        save_episode(
            tmp_path / "data" / "test" / name,
            Episode(frames, np.zeros(4, np.int64), np.zeros(4, np.float32), np.zeros(4, bool)),
        )
    per_window = {
        "model": {"psnr": [15.0, 18.0], "sharpness_ratio": [0.5, 0.9], "colour_error_late": [30.0, 20.0]},
        "copy_last_frame": {"psnr": [16.0, 17.0], "sharpness_ratio": [1.0, 1.0], "colour_error_late": [35.0, 10.0]},
    }
    metrics = tmp_path / "run" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"freeplay": {"sources": ["a.npz@0", "b.npz@0"], "context": context, "per_window": per_window}}))
    assert load_cli()(["--data", str(tmp_path / "data"), str(metrics)]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]  # after the header and its rule
    assert rows == [
        "| run | open view | 1 | 18.00 | +1.00 | 0.90 | 20.0 | 10.0 |",
        "| run | wall throughout the context | 1 | 15.00 | -1.00 | 0.50 | 30.0 | 35.0 |",
    ]


def test_wall_share_counts_every_third_frame(tmp_path: Path, capsys) -> None:
    # Frames 0, 3 and 6 are read: a wall, an open view and a wall.
    frames = np.stack([wall_frame(), open_frame(), open_frame(), open_frame(), wall_frame(), wall_frame(), wall_frame()])
    save_episode(tmp_path / "ep.npz", Episode(frames, np.zeros(6, np.int64), np.zeros(6, np.float32), np.zeros(6, bool)))
    assert load_cli()(["--wall-share", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}: 0.667 of the frames face a wall"
