"""What a dataset's meta.json says decides where it may go: imagined frames stay out of training
unless asked, and a checkpoint is never scored on another world's actions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from far_world.data.episodes import (
    DatasetMeta,
    Episode,
    ImaginedDataError,
    check_real_data,
    check_same_actions,
    save_episode,
    write_meta,
)
from far_world.data.latents import build_latent_cache

REPO = Path(__file__).resolve().parents[1]
MAZE_ACTIONS = ["noop", "forward", "left", "right", "forward+left", "forward+right"]


def dataset(folder: Path, world: str, action_names: list[str], split: str = "test") -> Path:
    meta = DatasetMeta(
        world=world, action_names=action_names, action_space={"type": "discrete", "n": len(action_names)},
        resolution=[64, 64],
    )  # fmt: skip
    write_meta(folder, meta)
    rng = np.random.default_rng(0)
    episode = Episode(
        frames=rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8),
        actions=rng.integers(0, len(action_names), 8),
        rewards=np.zeros(8, np.float32),
        terminated=np.zeros(8, bool),
    )
    for name in ("train", "test"):
        save_episode(folder / name / "ep_000000.npz", episode)
    return folder


def test_imagined_data_is_refused_unless_allowed(tmp_path):
    folder = dataset(tmp_path / "dream", "imagined:maze", MAZE_ACTIONS)
    for split in (folder, folder / "train"):  # meta.json of a split folder is its parent's
        with pytest.raises(ImaginedDataError, match="imagined by a world model"):
            check_real_data(split)
    with pytest.warns(UserWarning, match="imagined"):
        check_real_data(folder, allow_imagined=True)
    check_real_data(dataset(tmp_path / "real", "maze", MAZE_ACTIONS))


def test_the_latent_cache_refuses_imagined_data_before_encoding(tmp_path):
    folder = dataset(tmp_path / "dream", "imagined:maze", MAZE_ACTIONS)

    def encode(frames):
        raise AssertionError("nothing should be encoded")

    with pytest.raises(ImaginedDataError):
        build_latent_cache(folder / "train", tmp_path / "cache", encode, "fingerprint", progress=False)


def test_actions_must_match_the_checkpoints(tmp_path):
    check_same_actions(dataset(tmp_path / "maze", "maze", MAZE_ACTIONS), MAZE_ACTIONS, {"type": "discrete", "n": 6})
    doom = dataset(tmp_path / "doom", "doom:health_gathering", ["noop", "forward", "left"])
    with pytest.raises(ValueError, match="doom:health_gathering.*checkpoint's actions"):
        check_same_actions(doom, MAZE_ACTIONS, {"type": "discrete", "n": 6})
    renamed = dataset(tmp_path / "renamed", "maze", [f"a{i}" for i in range(6)])
    with pytest.raises(ValueError, match="checkpoint's actions"):
        check_same_actions(renamed / "test", MAZE_ACTIONS, {"type": "discrete", "n": 6})
    with pytest.warns(UserWarning, match="cannot check"):
        check_same_actions(tmp_path / "nowhere", MAZE_ACTIONS, {"type": "discrete", "n": 6})


def test_evaluate_refuses_a_dataset_of_other_actions(tiny_ckpt, tmp_path):
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "train" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    doom = dataset(tmp_path / "doom", "doom:health_gathering", ["noop", "forward", "left"])
    with pytest.raises(ValueError, match="checkpoint's actions"):
        evaluate.main(["--ckpt", tiny_ckpt, "--data", str(doom), "--quick", "--out", str(tmp_path / "eval")])
    assert not (tmp_path / "eval" / "metrics.json").exists()
