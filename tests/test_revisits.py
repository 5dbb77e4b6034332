"""Revisit windows: found from the frames alone, and drawn into batches without changing the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from far_world.data.clips import ClipDataset
from far_world.data.episodes import DatasetMeta, Episode, save_episode, write_meta
from far_world.data.revisits import RevisitWindows, lookback_distances, revisit_ends
from far_world.training.presets import FARTrainConfig

SHORT_WINDOW = 4


def random_frames(steps: int, seed: int) -> np.ndarray:
    """Frames far apart from each other (256 random bytes each): no window is a revisit by chance."""
    return np.random.default_rng(seed).integers(0, 256, (steps + 1, 8, 8, 4), dtype=np.uint8)[..., :3]


def write_episodes(folder: Path, frame_sets: list[np.ndarray]) -> Path:
    for i, frames in enumerate(frame_sets):
        steps = len(frames) - 1
        episode = Episode(frames, np.zeros(steps, np.int64), np.zeros(steps, np.float32), np.zeros(steps, bool))
        save_episode(folder / f"ep{i:02d}.npz", episode)
    write_meta(folder, DatasetMeta("test", ["a", "b"], {"type": "discrete", "n": 2}, [8, 8]))
    return folder


def test_lookback_distances_are_squared_l2_to_earlier_frames():
    obs = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    d = lookback_distances(obs, 3)
    assert d.shape == (3, 4)
    np.testing.assert_array_equal(d[:, 0], [0, 0, 0])
    np.testing.assert_array_equal(d[1:, 1], [1, 4])
    assert d[2, 2] == 5 and np.isinf(d[0, 1]) and np.isinf(d[2, 3])


def test_a_view_seen_again_past_the_short_window_ends_a_revisit():
    frames = random_frames(30, seed=0).astype(np.float32)
    frames[20] = frames[8]  # frame 20 shows again what frame 8 showed, 12 frames back
    d = lookback_distances(frames, 15)
    np.testing.assert_array_equal(revisit_ends(d, 16, SHORT_WINDOW, 0.5), [20])  # frame 8 is in the window
    assert len(revisit_ends(d, 12, SHORT_WINDOW, 0.5)) == 0  # 12 frames back is outside a 12-frame window
    frames[22] = frames[20]  # seen 2 frames back, within the short window: no memory needed
    assert 22 not in revisit_ends(lookback_distances(frames, 15), 16, SHORT_WINDOW, 0.5)
    assert len(revisit_ends(d, SHORT_WINDOW, SHORT_WINDOW, 0.5)) == 0  # no long-term frame at all


def test_revisit_windows_of_a_store_and_their_share(tmp_path: Path):
    planted = random_frames(30, seed=1)
    planted[20] = planted[8]
    dataset = ClipDataset(write_episodes(tmp_path, [random_frames(25, seed=2), planted]), clip_len=4)
    revisits = RevisitWindows(dataset.store, SHORT_WINDOW, max_clip_len=16)
    episodes, starts = revisits.windows(16)
    np.testing.assert_array_equal(episodes, [1])
    np.testing.assert_array_equal(starts, [5])  # frames 5..20
    assert revisits.share(16) == pytest.approx(1 / ((26 - 15) + (31 - 15)))
    with pytest.raises(ValueError, match="longer than the lookback"):
        revisits.windows(17)
    with pytest.raises(ValueError, match="margin"):
        RevisitWindows(dataset.store, SHORT_WINDOW, 16, margin=0.0)


def test_batches_draw_revisits_with_their_probability_and_nothing_else_changes(tmp_path: Path):
    planted = random_frames(30, seed=1)
    planted[20] = planted[8]
    dataset = ClipDataset(write_episodes(tmp_path, [random_frames(25, seed=2), planted]), clip_len=4, seed=3)
    revisits = RevisitWindows(dataset.store, SHORT_WINDOW, max_clip_len=16)
    plain = dataset.sample_batch(32, step=5, clip_len=16)
    every = dataset.sample_batch(32, step=5, clip_len=16, revisits=revisits, revisit_prob=1.0)
    assert (every.episode == 1).all() and (every.start == 5).all()
    never = dataset.sample_batch(32, step=5, clip_len=16, revisits=revisits, revisit_prob=0.0)
    np.testing.assert_array_equal(never.start, plain.start)
    # Where no window of the step's length is a revisit, the batch is the plain one.
    short = dataset.sample_batch(32, step=5, clip_len=8, revisits=revisits, revisit_prob=1.0)
    np.testing.assert_array_equal(short.start, dataset.sample_batch(32, step=5, clip_len=8).start)
    # Half: the other clips are the plain batch's, and ranks still slice one global batch.
    half = dataset.sample_batch(32, step=5, clip_len=16, revisits=revisits, revisit_prob=0.5)
    replaced = (half.episode != plain.episode) | (half.start != plain.start)
    assert 0 < replaced.sum() < 32 and ((half.episode == 1) & (half.start == 5))[replaced].all()
    parts = [dataset.sample_batch(32, 5, rank, 2, clip_len=16, revisits=revisits, revisit_prob=0.5) for rank in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([p.start for p in parts]), half.start)


def test_revisit_settings_are_checked():
    with pytest.raises(ValueError, match="revisit_prob"):
        FARTrainConfig(revisit_prob=1.5)
    with pytest.raises(ValueError, match="revisit_margin"):
        FARTrainConfig(revisit_margin=0.0)
