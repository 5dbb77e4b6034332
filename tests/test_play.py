"""play.py headless: videos, recorded episodes, and the keyboard mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import play
from far_world.data.episodes import iter_episodes, read_meta
from far_world.game.keymap import build_keymap
from far_world.world import default_checkpoint_path


pytestmark = pytest.mark.usefixtures("one_thread")


def read_video(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


def test_keymap_from_action_names():
    keymap = build_keymap(["noop", "forward", "left", "right", "forward+left", "forward+right"])
    assert keymap.action_for(set()) == 0
    assert keymap.action_for({"w"}) == 1
    assert keymap.action_for({"w", "a"}) == 4  # the largest matching combination wins
    assert keymap.action_for({"d", "w", "x"}) == 5
    unknown = build_keymap(["noop", "make_wood_pickaxe", "place_table"])
    assert unknown.action_for({"1"}) == 1 and unknown.action_for({"2"}) == 2
    assert len(unknown.legend()) == 3


def test_headless_play_records_video(tiny_ckpt, tmp_path):
    out = tmp_path / "play.mp4"
    assert play.main(["--ckpt", tiny_ckpt, "--headless", "--frames", "12", "--policy", "random", "--record", str(out)]) == 0
    video = read_video(out)
    assert len(video) == 12
    assert np.abs(np.diff(video.astype(np.int16), axis=0)).mean() > 1.0


def test_play_records_episodes_in_dataset_format(tiny_ckpt, tmp_path):
    folder = tmp_path / "my_play"
    assert play.main(["--ckpt", tiny_ckpt, "--headless", "--frames", "10", "--record", str(folder)]) == 0
    episodes = list(iter_episodes(folder))
    assert sum(ep.num_steps for _, ep in episodes) == 10
    assert read_meta(folder).action_names[1] == "forward"


@pytest.mark.skipif(not default_checkpoint_path().is_file(), reason="no released default checkpoint")
def test_default_world_video_follows_actions(tmp_path):
    """300 headless frames of the released world; from the same start, other actions give another video."""
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"play_{seed}.mp4"
        args = ["--headless", "--frames", "300", "--policy", "random", "--policy-seed", str(seed), "--record", str(out)]
        assert play.main(args) == 0
        runs.append(read_video(out)[:, : 64 * 8, : 64 * 8].astype(np.int16))
    video = runs[0]
    assert len(video) == 300
    assert np.abs(np.diff(video, axis=0)).mean() > 1.0  # the picture moves
    assert np.abs(runs[0][50:] - runs[1][50:]).mean() > 5.0  # different actions, different views
