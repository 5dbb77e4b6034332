"""play.py headless: videos, recorded episodes, and the keyboard mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import make_tiny_world_checkpoint

import play
from far_world.data.clips import ClipDataset, FrameDataset
from far_world.data.episodes import ImaginedDataError, iter_episodes, read_meta
from far_world.envs.real import make_real_world
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


def test_screenshot_is_the_window_with_both_worlds(cartpole_ckpt, tmp_path):
    out = tmp_path / "shot.png"
    args = ["--ckpt", cartpole_ckpt, "--headless", "--side-by-side", "--frames", "3", "--scale", "2", "--screenshot", str(out)]
    assert play.main(args) == 0
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] == 2 * 64 * 2  # two panels of 64 pixels at scale 2
    model_panel, real_panel = picture[: 64 * 2, : 64 * 2], picture[: 64 * 2, 64 * 2 :]
    assert model_panel.std() > 1.0 and real_panel.std() > 1.0


def test_play_records_episodes_in_dataset_format(tiny_ckpt, tmp_path):
    folder = tmp_path / "my_play"
    assert play.main(["--ckpt", tiny_ckpt, "--headless", "--frames", "10", "--record", str(folder)]) == 0
    episodes = list(iter_episodes(folder))
    assert sum(ep.num_steps for _, ep in episodes) == 10
    assert read_meta(folder).action_names[1] == "forward"


def test_play_records_imagined_frames_under_their_own_label(tiny_ckpt, tmp_path):
    folder = tmp_path / "my_play"
    assert play.main(["--ckpt", tiny_ckpt, "--headless", "--frames", "10", "--record", str(folder)]) == 0
    meta = read_meta(folder)
    assert meta.world == "imagined:maze" and meta.imagined
    assert meta.policy == "human play in the learned world (play.py)" and meta.info["checkpoint"] == tiny_ckpt
    # The training loaders refuse a model's own output unless asked.
    with pytest.raises(ImaginedDataError, match="imagined by a world model"):
        FrameDataset(folder)
    with pytest.raises(ImaginedDataError, match="--allow-imagined"):
        ClipDataset(folder, clip_len=2)
    with pytest.warns(UserWarning, match="imagined by a world model"):
        assert len(FrameDataset(folder, allow_imagined=True)) == 10 + sum(1 for _ in iter_episodes(folder))


@pytest.fixture
def cartpole_ckpt(tmp_path):
    """A tiny model of a cheap real world, so that --side-by-side runs in a test."""
    path = tmp_path / "cartpole.pt"
    make_tiny_world_checkpoint(path, world="gym:CartPole-v1", action_names=["action_0", "action_1"])
    return str(path)


def test_side_by_side_records_the_real_worlds_frames(cartpole_ckpt, tmp_path):
    folder = tmp_path / "real_play"
    args = ["--ckpt", cartpole_ckpt, "--headless", "--side-by-side", "--frames", "6", "--record", str(folder)]
    assert play.main(args) == 0
    meta = read_meta(folder)
    assert meta.world == "gym:CartPole-v1" and not meta.imagined and meta.policy == "human play (play.py)"
    _, episode = next(iter_episodes(folder))
    # The recorded frames are the real world's: replaying its actions in the real game gives them back.
    real = make_real_world("gym:CartPole-v1", seed=0)
    replay = [real.reset(seed=0)[0]]
    for action in episode.actions:
        replay.append(real.step(int(action))[0])
    real.close()
    assert episode.num_steps >= 4 and np.array_equal(np.stack(replay), episode.frames)  # 3 context steps + played
    FrameDataset(folder)  # a real dataset trains without a flag


def test_recording_into_a_folder_of_another_world_is_refused(cartpole_ckpt, tiny_ckpt, tmp_path):
    folder = tmp_path / "play"
    assert play.main(["--ckpt", tiny_ckpt, "--headless", "--frames", "3", "--record", str(folder)]) == 0
    with pytest.raises(ValueError, match="already holds episodes of world 'imagined:maze'"):
        play.main(["--ckpt", cartpole_ckpt, "--headless", "--side-by-side", "--frames", "3", "--record", str(folder)])
    assert read_meta(folder).world == "imagined:maze"


def test_without_a_display_play_says_how_to_run_headless(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(play.sys, "platform", "linux")
    assert play.main([]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--headless" in lines[0]


def test_sampling_steps_flag_and_its_deprecated_alias():
    assert play.parse_args(["--sampling-steps", "3"]).sampling_steps == 3
    with pytest.warns(FutureWarning, match="--sampling-steps"):
        assert play.parse_args(["--steps", "2"]).sampling_steps == 2


def test_guidance_and_start_time_flags_reach_the_world(tiny_ckpt):
    args = play.parse_args([])
    assert args.guidance is None and args.start_time is None and args.guidance_scope is None  # the checkpoint's
    flags = ["--ckpt", tiny_ckpt, "--headless", "--guidance", "1.5", "--start-time", "0.9"]
    flags += ["--guidance-scope", "frame", "--guided-steps", "1"]
    worlds = play.open_worlds(play.parse_args(flags))
    try:
        assert worlds.env.world.guidance == 1.5
        settings = worlds.env.world.settings
        assert (settings.start_time, settings.guidance_scope, settings.guided_steps) == (0.9, "frame", 1)
    finally:
        worlds.close()
    for bad in (["--start-time", "0"], ["--guidance-scope", "half"], ["--guided-steps", "0"]):
        with pytest.raises(SystemExit):
            play.parse_args(bad)


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
