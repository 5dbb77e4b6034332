"""Clip and frame sampling: the model's action convention, determinism, DDP sharding, skipping."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.data.clips import ClipDataset, EpisodeStore, FrameDataset, incoming
from far_world.data.episodes import DatasetMeta, Episode, save_episode, write_meta

NUM_ACTIONS = 5


def traced_episode(index: int, steps: int) -> Episode:
    """Pixels say where a frame came from: channel 0 = frame index, channel 1 = episode index."""
    frames = np.zeros((steps + 1, 4, 4, 3), np.uint8)
    frames[..., 0] = np.arange(steps + 1)[:, None, None]
    frames[..., 1] = index
    return Episode(
        frames=frames,
        actions=(np.arange(steps) + index) % NUM_ACTIONS,
        rewards=np.arange(steps, dtype=np.float32) + 100 * index,
        terminated=np.arange(steps) == steps - 1,
        extras={"pose": np.arange(steps + 1, dtype=np.float32)[:, None].repeat(2, axis=1)},
    )


def write_dataset(folder: Path, lengths: list[int], multi: bool = False) -> Path:
    for i, steps in enumerate(lengths):
        episode = traced_episode(i, steps)
        if multi:
            episode.actions = np.stack([episode.actions, episode.actions % 2], axis=1)
        save_episode(folder / f"ep{i:02d}.npz", episode)
    space = {"type": "multi_discrete", "nvec": [NUM_ACTIONS, 2]} if multi else {"type": "discrete", "n": NUM_ACTIONS}
    write_meta(folder, DatasetMeta("test", [f"a{i}" for i in range(NUM_ACTIONS)], space, [4, 4]))
    return folder


def test_incoming_shifts_steps_onto_frames() -> None:
    steps = np.array([10, 11, 12, 13])
    np.testing.assert_array_equal(incoming(steps, 0, 3, -1), [-1, 10, 11])
    np.testing.assert_array_equal(incoming(steps, 2, 3, -1), [11, 12, 13])


def test_clips_follow_the_model_convention(tmp_path: Path) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [12, 20, 15]), clip_len=6, extras=["pose"])
    batch = dataset.sample_batch(64, step=0)
    assert batch.frames.shape == (64, 6, 4, 4, 3) and batch.frames.dtype == np.uint8
    assert batch.actions.shape == (64, 6) and batch.actions.dtype == np.int64
    assert batch.rewards.dtype == np.float32 and batch.terminated.dtype == np.bool_
    for b in range(64):
        e, s = int(batch.episode[b]), int(batch.start[b])
        source = traced_episode(e, [12, 20, 15][e])
        np.testing.assert_array_equal(batch.frames[b, :, 0, 0, 0], np.arange(s, s + 6))  # consecutive frames
        assert (batch.frames[b, ..., 1] == e).all()  # of one episode
        np.testing.assert_array_equal(batch.extras["pose"][b, :, 0], np.arange(s, s + 6))
        for t in range(6):
            if s + t == 0:  # an episode's first frame: nothing led into it
                assert batch.actions[b, t] == NUM_ACTIONS and batch.rewards[b, t] == 0 and not batch.terminated[b, t]
            else:  # the action, reward and end of the step INTO the frame
                assert batch.actions[b, t] == source.actions[s + t - 1]
                assert batch.rewards[b, t] == source.rewards[s + t - 1]
                assert batch.terminated[b, t] == source.terminated[s + t - 1]


def test_first_frame_gets_the_null_action_per_component(tmp_path: Path) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [8], multi=True), clip_len=4)
    batch = dataset.clips([0, 0], [0, 3])
    assert batch.actions.shape == (2, 4, 2)
    np.testing.assert_array_equal(batch.actions[0, 0], [NUM_ACTIONS, 2])
    np.testing.assert_array_equal(dataset.null_action, [NUM_ACTIONS, 2])
    source = traced_episode(0, 8).actions
    np.testing.assert_array_equal(batch.actions[1, :, 0], source[2:6])
    np.testing.assert_array_equal(batch.actions[1, :, 1], source[2:6] % 2)


def test_sampling_is_a_pure_function_of_seed_and_step(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path, [10, 30, 17, 9])
    a, b = ClipDataset(folder, 5, seed=7), ClipDataset(folder, 5, seed=7)
    first = a.sample_batch(16, step=3)
    a.sample_batch(16, step=4)  # other calls in between change nothing
    np.testing.assert_array_equal(a.sample_batch(16, step=3).frames, first.frames)
    np.testing.assert_array_equal(b.sample_batch(16, step=3).start, first.start)  # a fresh dataset agrees
    assert not np.array_equal(a.sample_batch(16, step=5).start, first.start)
    assert not np.array_equal(ClipDataset(folder, 5, seed=8).sample_batch(16, step=3).start, first.start)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_take_slices_of_one_global_batch(tmp_path: Path, world_size: int) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [10, 30, 17]), 5, seed=1)
    whole = dataset.sample_batch(8, step=11)
    parts = [dataset.sample_batch(8, step=11, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(len(p.start) == 8 // world_size for p in parts)
    np.testing.assert_array_equal(np.concatenate([p.episode for p in parts]), whole.episode)
    np.testing.assert_array_equal(np.concatenate([p.frames for p in parts]), whole.frames)
    with pytest.raises(ValueError, match="split evenly"):
        dataset.sample_batch(6, step=0, rank=0, world_size=4)


def test_windows_are_uniform_and_cover_every_start(tmp_path: Path) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [5, 9]), 4)  # 6 frames -> 3 windows, 10 frames -> 7
    assert dataset.num_windows() == 10
    seen = np.concatenate([np.stack([b.episode, b.start], 1) for b in (dataset.sample_batch(50, s) for s in range(20))])
    windows, counts = np.unique(seen, axis=0, return_counts=True)
    assert len(windows) == 10 and windows[:, 1].max() == 6  # every start, up to the last full window
    assert counts.min() > 60 and counts.max() < 140  # 1000 draws over 10 windows


def test_short_episodes_are_skipped_with_one_warning(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path, [3, 2, 12])
    with pytest.warns(UserWarning, match="skipped 2 episodes shorter than 6 frames") as record:
        dataset = ClipDataset(folder, 6)
    assert len(record) == 1 and len(dataset) == 1
    assert set(dataset.sample_batch(8, 0).episode) == {0}
    assert dataset.names == ["ep02"]


def test_a_per_step_clip_len_uses_only_long_enough_episodes(tmp_path: Path) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [4, 20]), 3)
    batch = dataset.sample_batch(8, step=2, clip_len=10)
    assert batch.frames.shape[1] == 10 and set(batch.episode) == {1}


def test_bad_and_out_of_range_episodes_are_skipped(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path, [8, 8])
    (folder / "broken.npz").write_bytes(b"garbage")
    bad = traced_episode(5, 8)
    bad.actions[3] = NUM_ACTIONS  # would index the null row as if it were an action
    save_episode(folder / "out_of_range.npz", bad)
    with pytest.warns(UserWarning) as record:
        dataset = ClipDataset(folder, 4)
    messages = " ".join(str(w.message) for w in record)
    assert "broken.npz" in messages and "out_of_range.npz" in messages
    assert dataset.names == ["ep00", "ep01"]


def test_an_unknown_action_space_is_an_error(tmp_path: Path) -> None:
    save_episode(tmp_path / "ep.npz", traced_episode(0, 5))
    with pytest.raises(ValueError, match="pass action_nvec"):
        ClipDataset(tmp_path, 3)
    assert ClipDataset(tmp_path, 3, action_nvec=[NUM_ACTIONS]).sample_batch(2, 0).actions.shape == (2, 3)
    assert ClipDataset([tmp_path / "ep.npz"], 3, action_nvec=[NUM_ACTIONS]).num_windows() == 4


def test_episodes_are_memory_mapped_and_few_stay_open(tmp_path: Path) -> None:
    dataset = ClipDataset(write_dataset(tmp_path, [6] * 8), 3, max_open=3)
    assert isinstance(dataset.store.open(0).frames, np.memmap)
    for step in range(10):
        dataset.sample_batch(8, step)
    assert len(dataset.store._open_episodes) <= 3
    copy = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives: no open maps
    assert len(copy.store._open_episodes) == 0
    np.testing.assert_array_equal(copy.sample_batch(4, 1).frames, dataset.sample_batch(4, 1).frames)


def test_to_torch_keeps_dtypes(tmp_path: Path) -> None:
    batch = ClipDataset(write_dataset(tmp_path, [6]), 3, extras=["pose"]).sample_batch(2, 0).to_torch()
    assert batch.frames.dtype == torch.uint8 and batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == torch.float32 and batch.terminated.dtype == torch.bool
    assert batch.extras["pose"].shape == (2, 3, 2)


def test_frame_sampler_is_deterministic_sharded_and_covers_all_frames(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path, [3, 6])
    frames = FrameDataset(folder, seed=2)
    assert len(frames) == 11
    batch = frames.sample_batch(8, step=5)
    assert batch.shape == (8, 4, 4, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(FrameDataset(folder, seed=2).sample_batch(8, step=5), batch)
    halves = [frames.sample_batch(8, step=5, rank=r, world_size=2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), batch)
    seen = {(int(f[0, 0, 1]), int(f[0, 0, 0])) for s in range(30) for f in frames.sample_batch(16, s)}
    assert seen == {(0, t) for t in range(4)} | {(1, t) for t in range(7)}


def test_store_needs_no_meta_for_frames(tmp_path: Path) -> None:
    save_episode(tmp_path / "ep.npz", traced_episode(0, 4))
    store = EpisodeStore(tmp_path)
    assert len(store) == 1 and store.lengths.tolist() == [5]
    with pytest.raises(ValueError, match="action space is unknown"):
        store.window(0, 0, 2)
