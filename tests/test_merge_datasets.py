"""Merging datasets: every episode once, in its own split, under a traceable name."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from far_world.data.episodes import DatasetMeta, load_episode, read_meta, save_episode, write_meta
from far_world.data.merge import merge_datasets
from test_episodes import assert_same, make_episode

REPO = Path(__file__).resolve().parents[1]

META = DatasetMeta(
    world="maze",
    action_names=["noop", "forward", "left", "right"],
    action_space={"type": "discrete", "n": 4},
    resolution=[16, 16],
    policy="retrace_jitter",
    seed=1,
    extras=["pose"],
)


def make_dataset(folder: Path, meta: DatasetMeta, train: int, test: int, seed: int) -> Path:
    for split, count in (("train", train), ("test", test)):
        for i in range(count):
            save_episode(folder / split / f"ep_{i:06d}.npz", make_episode(seed=seed * 100 + i))
    write_meta(folder, meta)
    return folder


def merge_cli():
    spec = importlib.util.spec_from_file_location("merge_datasets_cli", REPO / "train" / "merge_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_merge_keeps_every_episode_in_its_split(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", META, train=3, test=1, seed=1)
    b = make_dataset(tmp_path / "b", replace(META, policy="uniform", seed=7), train=2, test=1, seed=2)
    counts = merge_datasets([a, b], tmp_path / "ab")
    assert counts == {"train": 5, "test": 2}
    names = sorted(p.name for p in (tmp_path / "ab" / "train").iterdir())
    assert names == [f"s0_ep_00000{i}.npz" for i in range(3)] + [f"s1_ep_00000{i}.npz" for i in range(2)]
    assert_same(load_episode(tmp_path / "ab" / "train" / "s1_ep_000001.npz"), make_episode(seed=201))
    assert_same(load_episode(tmp_path / "ab" / "test" / "s0_ep_000000.npz"), make_episode(seed=100))
    meta = read_meta(tmp_path / "ab")
    assert meta.policy == "retrace_jitter+uniform"
    assert meta.world == "maze" and meta.extras == ["pose"]
    assert [s["seed"] for s in meta.info["sources"]] == [1, 7]
    # Hard links: the merge costs no disk.
    assert (tmp_path / "ab" / "train" / "s0_ep_000000.npz").stat().st_ino == (a / "train" / "ep_000000.npz").stat().st_ino


def test_merging_again_adds_nothing(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", META, train=2, test=1, seed=1)
    b = make_dataset(tmp_path / "b", META, train=1, test=0, seed=2)
    merge_datasets([a, b], tmp_path / "ab")
    assert merge_datasets([a, b], tmp_path / "ab") == {"train": 3, "test": 1}
    assert len(list((tmp_path / "ab" / "train").iterdir())) == 3


@pytest.mark.parametrize(
    "other",
    [
        replace(META, world="doom"),
        replace(META, action_names=["noop", "forward", "right", "left"]),
        replace(META, resolution=[32, 32]),
    ],
)
def test_datasets_of_other_worlds_or_actions_are_refused(tmp_path: Path, other: DatasetMeta) -> None:
    a = make_dataset(tmp_path / "a", META, train=1, test=0, seed=1)
    b = make_dataset(tmp_path / "b", other, train=1, test=0, seed=2)
    with pytest.raises(ValueError, match="only datasets of one world"):
        merge_datasets([a, b], tmp_path / "ab")
    assert not (tmp_path / "ab").exists()


def test_cli_refuses_another_merge_in_out_and_a_source_as_out(tmp_path: Path, capsys) -> None:
    main = merge_cli()
    a = make_dataset(tmp_path / "a", META, train=1, test=0, seed=1)
    b = make_dataset(tmp_path / "b", replace(META, policy="uniform"), train=1, test=0, seed=2)
    c = make_dataset(tmp_path / "c", replace(META, policy="persistent"), train=1, test=0, seed=3)
    assert main([str(a), str(b), "--out", str(tmp_path / "ab")]) == 0
    assert main([str(a), str(c), "--out", str(tmp_path / "ab")]) == 1
    assert "already holds another dataset" in capsys.readouterr().err
    assert main([str(a), str(b), "--out", str(a)]) == 1
    assert main([str(a), "--out", str(tmp_path / "x")]) == 1
    frames = load_episode(tmp_path / "ab" / "train" / "s1_ep_000000.npz").frames
    np.testing.assert_array_equal(frames, make_episode(seed=200).frames)
