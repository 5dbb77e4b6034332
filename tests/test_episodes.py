"""The episode format: atomic round trips, and bad files skipped without stopping a run."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from far_world.data import episodes as episodes_module
from far_world.data.episodes import (
    DatasetMeta,
    Episode,
    EpisodeError,
    iter_episodes,
    load_episode,
    read_meta,
    save_episode,
    write_meta,
)


def make_episode(steps: int = 5, size: int = 16, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 256, (steps + 1, size, size, 3), dtype=np.uint8),
        actions=rng.integers(0, 4, steps),
        rewards=rng.standard_normal(steps).astype(np.float32),
        terminated=np.arange(steps) == steps - 1,
        extras={"pose": rng.standard_normal((steps + 1, 3)).astype(np.float32)},
    )


def assert_same(a: Episode, b: Episode) -> None:
    for name in ("frames", "actions", "rewards", "terminated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.extras.keys() == b.extras.keys()
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key])


@pytest.mark.parametrize("mmap", [False, True])
def test_roundtrip_with_extras(tmp_path: Path, mmap: bool) -> None:
    episode = make_episode()
    save_episode(tmp_path / "ep.npz", episode)
    loaded = load_episode(tmp_path / "ep.npz", mmap=mmap)
    assert_same(episode, loaded)
    assert isinstance(loaded.frames, np.memmap) == mmap
    assert loaded.actions.dtype == np.int64 and loaded.num_steps == 5 and loaded.resolution == (16, 16)


def test_multi_discrete_actions_roundtrip(tmp_path: Path) -> None:
    episode = make_episode()
    episode.actions = np.stack([episode.actions, episode.actions % 2], axis=1)
    save_episode(tmp_path / "ep.npz", episode)
    assert load_episode(tmp_path / "ep.npz", mmap=True).actions.shape == (5, 2)


def test_save_is_atomic_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ep.npz"
    save_episode(target, make_episode(seed=1))

    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(episodes_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_episode(target, make_episode(seed=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.npz"]  # no temporary file left
    assert_same(load_episode(target), make_episode(seed=1))  # the old episode is intact


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    path = save_episode(tmp_path / "ep.npz", make_episode())
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def good_arrays() -> dict[str, np.ndarray]:
    ep = make_episode()
    return {"frames": ep.frames, "actions": ep.actions, "rewards": ep.rewards, "terminated": ep.terminated}


def write_bad_files(folder: Path) -> list[str]:
    """One file per defect; returns their names."""
    rng = np.random.default_rng(0)
    (folder / "corrupt.npz").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    whole = (folder / "good_a.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    arrays = good_arrays()
    write_npz(folder / "four_channels.npz", **{**arrays, "frames": np.zeros((6, 16, 16, 4), np.uint8)})
    write_npz(folder / "short_actions.npz", **{**arrays, "actions": arrays["actions"][:-1]})
    write_npz(folder / "scalar_rewards.npz", **{**arrays, "rewards": np.float32(0.0)})
    write_npz(folder / "float_frames.npz", **{**arrays, "frames": arrays["frames"].astype(np.float32)})
    write_npz(folder / "missing_terminated.npz", **{k: v for k, v in arrays.items() if k != "terminated"})
    write_npz(folder / "bad_extra.npz", **arrays, extra_pose=np.zeros((3, 2)))
    return ["corrupt", "truncated", "four_channels", "short_actions", "scalar_rewards", "float_frames",
            "missing_terminated", "bad_extra"]  # fmt: skip


@pytest.mark.parametrize("mmap", [False, True])
def test_iter_episodes_skips_bad_files_with_a_warning_naming_each(tmp_path: Path, mmap: bool) -> None:
    save_episode(tmp_path / "good_a.npz", make_episode(seed=1))
    save_episode(tmp_path / "good_b.npz", make_episode(seed=2))
    bad = write_bad_files(tmp_path)
    with pytest.warns(UserWarning) as record:
        yielded = list(iter_episodes(tmp_path, mmap=mmap))
    assert [p.stem for p, _ in yielded] == ["good_a", "good_b"]
    assert_same(yielded[0][1], make_episode(seed=1))
    messages = [str(w.message) for w in record]
    for name in bad:
        assert any(f"{name}.npz" in m for m in messages), f"no warning names {name}.npz: {messages}"
    assert len(messages) == len(bad)


def test_wrong_resolution_is_skipped_when_one_is_requested(tmp_path: Path) -> None:
    save_episode(tmp_path / "small.npz", make_episode(size=16))
    save_episode(tmp_path / "large.npz", make_episode(size=32))
    with pytest.warns(UserWarning, match="small.npz"):
        yielded = list(iter_episodes(tmp_path, resolution=(32, 32)))
    assert [p.stem for p, _ in yielded] == ["large"]
    with pytest.raises(EpisodeError, match="expected 32x32"):
        load_episode(tmp_path / "small.npz", resolution=(32, 32))


def test_interrupted_write_leftovers_are_not_episodes(tmp_path: Path) -> None:
    save_episode(tmp_path / "ep.npz", make_episode())
    (tmp_path / ".ep.abc.tmp").write_bytes(b"partial")
    (tmp_path / ".hidden.npz").write_bytes(b"partial")
    assert [p.name for p, _ in iter_episodes(tmp_path)] == ["ep.npz"]


def test_episode_constructor_validates() -> None:
    ep = make_episode()
    with pytest.raises(EpisodeError, match="actions"):
        Episode(ep.frames, ep.actions.astype(np.float32), ep.rewards, ep.terminated)
    with pytest.raises(EpisodeError, match="extra 'pose'"):
        Episode(ep.frames, ep.actions, ep.rewards, ep.terminated, {"pose": np.zeros(2)})


def make_meta() -> DatasetMeta:
    return DatasetMeta(world="maze", action_names=["noop", "forward"], action_space={"type": "discrete", "n": 2},
                       resolution=[64, 64], extras=["pose"])  # fmt: skip


def test_meta_roundtrip_and_split_folder_lookup(tmp_path: Path) -> None:
    write_meta(tmp_path, make_meta())
    (tmp_path / "train").mkdir()
    assert read_meta(tmp_path) == make_meta()
    assert read_meta(tmp_path / "train") == make_meta()  # a split folder reads its parent's
    assert make_meta().num_actions == 2


def test_read_meta_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"world": "maze"}))  # required fields missing
    with pytest.raises(ValueError, match="invalid meta.json"):
        read_meta(tmp_path)
    fields = {"world": "maze", "action_names": [], "action_space": {}, "resolution": [64, 64], "colour": "red"}
    (tmp_path / "meta.json").write_text(json.dumps(fields))  # an unknown field
    with pytest.raises(ValueError, match="invalid meta.json"):
        read_meta(tmp_path)
