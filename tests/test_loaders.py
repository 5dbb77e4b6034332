"""Public-dataset loaders on small files written in each dataset's exact format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from far_world.data.episodes import episode_paths, load_episode, read_meta
from far_world.data.loaders import LoaderError, MineRLLoader, TecoLoader, VPTLoader, import_dataset, make_loader
from far_world.data.loaders.minecraft_actions import (
    DISCRETE_ACTIONS,
    MULTI_DISCRETE_COMPONENTS,
    MinecraftInputs,
    to_discrete,
    to_multi_discrete,
)

REPO = Path(__file__).resolve().parents[1]
A = {name: i for i, name in enumerate(DISCRETE_ACTIONS)}


def ramp_video(frames: int, height: int, width: int) -> np.ndarray:
    """Frame t is a flat grey of 20 + 30 t: recognisable after resizing and lossy coding."""
    levels = 20 + 30 * np.arange(frames, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, height, width, 3)).copy()


def write_mp4(path: Path, video: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (video.shape[2], video.shape[1]))
    assert writer.isOpened()
    for frame in video:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def frame_levels(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


# --- TECO -----------------------------------------------------------------------------------


def test_teco_dmlab_drops_the_last_action(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "0.npz", video=ramp_video(6, 64, 64), actions=np.array([0, 1, 2, 1, 0, 2]))
    episode = TecoLoader("dmlab").load(tmp_path / "0.npz")
    assert episode.frames.shape == (6, 64, 64, 3)
    np.testing.assert_array_equal(episode.actions, [0, 1, 2, 1, 0])  # actions[t] drives t -> t+1
    np.testing.assert_array_equal(episode.frames, ramp_video(6, 64, 64))
    assert not episode.rewards.any() and not episode.terminated.any()


def test_teco_minecraft_shifts_by_one_and_resizes(tmp_path: Path) -> None:
    np.savez(tmp_path / "0.npz", video=ramp_video(5, 128, 128), actions=np.array([0, 1, 3, 2, 1]))
    episode = TecoLoader("minecraft", resolution=64).load(tmp_path / "0.npz")
    assert episode.frames.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(episode.actions, [1, 3, 2, 1])  # actions[t] produced frame t
    np.testing.assert_allclose(frame_levels(episode.frames), 20 + 30 * np.arange(5), atol=0.5)
    assert TecoLoader("minecraft").meta().action_names[1:] == ["forward_jump", "turn_left", "turn_right"]


def test_teco_minecraft_reads_the_video_beside_an_actions_only_npz(tmp_path: Path) -> None:
    write_mp4(tmp_path / "7.mp4", ramp_video(5, 128, 128))
    np.savez(tmp_path / "7.npz", actions=np.array([0, 2, 2, 3, 1]))
    episode = TecoLoader("minecraft", resolution=64).load(tmp_path / "7.npz")
    assert episode.frames.shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(episode.actions, [2, 2, 3, 1])
    np.testing.assert_allclose(frame_levels(episode.frames), 20 + 30 * np.arange(5), atol=8)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"video": ramp_video(4, 64, 64), "actions": np.array([0, 1, 5, 1])}, "outside"),
        ({"video": ramp_video(4, 64, 64), "actions": np.array([0, 1, 1])}, "3 actions for 4 frames"),
        ({"video": ramp_video(4, 64, 64)}, "no 'actions'"),
        ({"actions": np.array([0, 1, 1, 1])}, "no 'video'"),
    ],
)
def test_teco_rejects_malformed_files(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LoaderError, match=message):
        TecoLoader("dmlab").load(tmp_path / "bad.npz")


# --- the Minecraft action mapping -----------------------------------------------------------


def inputs(**pressed: list) -> MinecraftInputs:
    """Inputs of len(camera) steps; buttons given as lists of 0/1, the rest never pressed."""
    camera = np.asarray(pressed.pop("camera"), np.float32)
    steps = len(camera)
    buttons = {name: np.zeros(steps, bool) for name in ("forward", "back", "left", "right", "jump", "attack",
                                                        "use", "sneak", "sprint")}  # fmt: skip
    buttons.update({name: np.asarray(values, bool) for name, values in pressed.items()})
    return MinecraftInputs(camera=camera, **buttons)


def test_discrete_mapping_priority() -> None:
    steps = inputs(
        camera=[[0, 0], [0, 0], [0, 0], [0, -9], [4, 3], [-1, 0.5], [0, 0], [0, 0], [3, 0], [0, 0], [0, 0], [0, 0],
                [0, 0]],  # fmt: skip
        forward=[1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0],
        back=[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
        jump=[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        attack=[0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0],
        use=[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        right=[0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        sprint=[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    )
    expected = [
        "forward",  # a key alone
        "forward+jump",  # jumping while walking forward: the world's climbing action
        "forward",  # walking outranks attacking
        "camera_left",  # a camera turn outranks everything
        "camera_down",  # pitch 4 beats yaw 3
        "attack",  # a camera move under the threshold is no camera action
        "right",
        "noop",  # forward and back cancel out
        "camera_down",
        "noop",  # sprint alone has no discrete action
        "jump",  # jumping in place
        "attack",  # attack outranks use
        "use",
    ]
    np.testing.assert_array_equal(to_discrete(steps, camera_threshold=2.0), [A[n] for n in expected])


def test_discrete_actions_are_the_minecraft_worlds() -> None:
    """Imported MineRL/VPT data and the real Minecraft world train checkpoints with the same controls."""
    from far_world.envs.real.minecraft_protocol import ACTIONS
    from far_world.game.keymap import build_keymap

    assert DISCRETE_ACTIONS == ACTIONS
    keymap = build_keymap(list(DISCRETE_ACTIONS))
    keys = dict(zip(DISCRETE_ACTIONS, keymap.tokens, strict=True))
    assert keys["forward"] == {"w"} and keys["left"] == {"a"} and keys["forward+jump"] == {"w", "space"}
    assert keys["camera_left"] == {"left"} and keys["camera_up"] == {"up"}
    assert keymap.action_for({"w", "space"}) == A["forward+jump"]
    assert keymap.action_for(set()) == A["noop"]


def test_multi_discrete_mapping_keeps_combinations() -> None:
    steps = inputs(camera=[[-5, 7], [0, 0]], forward=[1, 1], left=[1, 0], jump=[1, 0], attack=[1, 0], sneak=[0, 1])
    names = list(MULTI_DISCRETE_COMPONENTS)
    row0 = dict(zip(names, to_multi_discrete(steps, 2.0)[0]))
    assert row0 == {"move": 1, "strafe": 1, "jump": 1, "attack": 1, "use": 0, "sprint": 0, "sneak": 0, "yaw": 2,
                    "pitch": 1}  # fmt: skip
    row1 = dict(zip(names, to_multi_discrete(steps, 2.0)[1]))
    assert row1 == {"move": 1, "strafe": 0, "jump": 0, "attack": 0, "use": 0, "sprint": 0, "sneak": 1, "yaw": 0,
                    "pitch": 0}  # fmt: skip


# --- MineRL ---------------------------------------------------------------------------------


def write_minerl_demo(folder: Path, success: bool = True) -> None:
    """A 6-frame demo, 5 actions: forward; yaw -10; jump+forward; attack+forward; pitch +5 while placing dirt."""
    folder.mkdir(parents=True)
    write_mp4(folder / "recording.mp4", ramp_video(6, 64, 64))
    np.savez(
        folder / "rendered.npz",
        **{
            "action$forward": np.array([1, 0, 1, 1, 0]),
            "action$back": np.zeros(5, np.int64),
            "action$left": np.zeros(5, np.int64),
            "action$right": np.zeros(5, np.int64),
            "action$jump": np.array([0, 0, 1, 0, 0]),
            "action$attack": np.array([0, 0, 0, 1, 0]),
            "action$sneak": np.zeros(5, np.int64),
            "action$sprint": np.zeros(5, np.int64),
            "action$camera": np.array([[0, 0], [0, -10], [0, 0], [0, 0], [5, 1]], np.float32),
            "action$place": np.array(["none", "none", "none", "none", "dirt"]),
            "reward": np.array([0, 0, 1, 0, 0], np.float32),
            "observation$inventory$dirt": np.zeros(5, np.int64),
        },
    )
    (folder / "metadata.json").write_text(json.dumps({"success": success, "duration_steps": 5}))


def test_minerl_demo_converts_with_mapped_actions(tmp_path: Path) -> None:
    write_minerl_demo(tmp_path / "MineRLTreechop-v0" / "v3_demo_1")
    loader = MineRLLoader()
    (demo,) = loader.find(tmp_path)
    episode = loader.load(demo)
    assert episode.frames.shape == (6, 64, 64, 3)
    expected = ["forward", "camera_left", "forward+jump", "forward", "camera_down"]
    np.testing.assert_array_equal(episode.actions, [A[n] for n in expected])
    np.testing.assert_array_equal(episode.rewards, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(episode.terminated, [0, 0, 0, 0, 1])  # success ends the episode
    np.testing.assert_allclose(frame_levels(episode.frames), 20 + 30 * np.arange(6), atol=8)


def test_minerl_unsuccessful_demo_does_not_terminate_and_multi_discrete(tmp_path: Path) -> None:
    write_minerl_demo(tmp_path / "demo", success=False)
    episode = MineRLLoader(actions="multi-discrete").load(tmp_path / "demo")
    assert not episode.terminated.any()
    assert episode.actions.shape == (5, len(MULTI_DISCRETE_COMPONENTS))
    use = list(MULTI_DISCRETE_COMPONENTS).index("use")
    np.testing.assert_array_equal(episode.actions[:, use], [0, 0, 0, 0, 1])  # 'dirt' placed on the last step
    space = MineRLLoader(actions="multi-discrete").meta().action_space
    assert space == {"type": "multi_discrete", "nvec": [3, 3, 2, 2, 2, 2, 2, 3, 3]}


@pytest.mark.parametrize("place", [np.array([0, 0, 3, 0, 0]), np.array([b"none", b"none", b"dirt", b"none", b"none"])])
def test_minerl_place_as_index_or_bytes_and_use_button(tmp_path: Path, place: np.ndarray) -> None:
    write_minerl_demo(tmp_path / "demo")
    with np.load(tmp_path / "demo" / "rendered.npz") as data:
        arrays = dict(data)
    arrays["action$place"] = place
    arrays["action$forward"] = np.zeros(5, np.int64)
    arrays["action$jump"] = np.zeros(5, np.int64)
    np.savez(tmp_path / "demo" / "rendered.npz", **arrays)
    assert MineRLLoader().load(tmp_path / "demo").actions[2] == A["use"]
    del arrays["action$place"]
    arrays["action$use"] = np.array([0, 0, 1, 0, 0])  # MineRL 1.0 names the button
    np.savez(tmp_path / "demo" / "rendered.npz", **arrays)
    assert MineRLLoader().load(tmp_path / "demo").actions[2] == A["use"]


def test_minerl_raw_replays_explain_that_minerl_is_needed(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "recording.mcpr").write_bytes(b"replay")
    with pytest.raises(LoaderError, match="needs the 'minerl' package"):
        MineRLLoader().find(tmp_path)


# --- VPT ------------------------------------------------------------------------------------


def vpt_record(keys: tuple = (), buttons: tuple = (), new_buttons: tuple = (), dx: float = 0.0,
               dy: float = 0.0, gui: bool = False, x: float = 0.0) -> dict:  # fmt: skip
    return {
        "mouse": {"x": 640.0, "y": 360.0, "dx": dx, "dy": dy, "dwheel": 0.0,
                  "buttons": list(buttons), "newButtons": list(new_buttons)},  # fmt: skip
        "keyboard": {"keys": list(keys), "newKeys": [], "chars": ""},
        "isGuiOpen": gui,
        "hotbar": 0,
        "xpos": x, "ypos": 64.0, "zpos": 0.0, "pitch": 0.0, "yaw": 0.0,  # fmt: skip
        "tick": 0,
    }


def write_vpt(folder: Path, name: str, records: list[dict], frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_mp4(folder / f"{name}.mp4", ramp_video(frames, 36, 64))
    (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return folder / f"{name}.jsonl"


def test_vpt_recording_converts_with_mapped_actions(tmp_path: Path) -> None:
    records = [
        vpt_record(buttons=[0], new_buttons=[0]),  # attack reported held from the start: stuck, ignored
        vpt_record(keys=["key.keyboard.w"], buttons=[0], x=1.0),  # still stuck: forward only
        vpt_record(dx=-20.0, x=2.0),  # -20 px = -3 degrees of yaw
        vpt_record(dx=300.0, gui=True),  # moving a cursor in the inventory, not the view
        vpt_record(buttons=[0], new_buttons=[0]),  # a real press unsticks attack
        vpt_record(buttons=[1], new_buttons=[1]),  # the use button places a block
        vpt_record(buttons=[1], gui=True),  # ... but not in the inventory
        vpt_record(keys=["key.keyboard.space", "key.keyboard.w"], dy=40.0),  # last line leads past the video
    ]
    path = write_vpt(tmp_path, "player-abc-20220101", records, frames=8)
    episode = VPTLoader().load(path)
    assert episode.frames.shape == (8, 64, 64, 3)  # 640x360 (here 64x36) squeezed to a square
    expected = ["noop", "forward", "camera_left", "noop", "attack", "use", "noop"]
    np.testing.assert_array_equal(episode.actions, [A[n] for n in expected])
    assert episode.extras["pose"].shape == (8, 5)
    np.testing.assert_array_equal(episode.extras["pose"][:3, 0], [0, 1, 2])
    np.testing.assert_allclose(frame_levels(episode.frames), 20 + 30 * np.arange(8), atol=8)


def test_vpt_uses_the_shorter_of_video_and_log_and_drops_a_cut_off_line(tmp_path: Path) -> None:
    records = [vpt_record(keys=["key.keyboard.w"]) for _ in range(5)]
    path = write_vpt(tmp_path, "rec", records, frames=4)
    with open(path, "a") as fh:
        fh.write('{"mouse": {"dx": 1')  # the recorder was killed mid-line
    episode = VPTLoader().load(path)
    assert episode.frames.shape[0] == 4 and episode.num_steps == 3
    (tmp_path / "rec.jsonl").write_text('{"mouse": \n' + json.dumps(records[0]) + "\n")
    with pytest.raises(LoaderError, match="invalid JSON"):
        VPTLoader().load(path)


# --- import ---------------------------------------------------------------------------------


def write_teco_split(root: Path) -> None:
    for split, count in (("train", 3), ("test", 1)):
        for i in range(count):
            (root / split / "0").mkdir(parents=True, exist_ok=True)
            np.savez(root / split / "0" / f"{i:06d}.npz", video=ramp_video(4, 64, 64), actions=np.array([0, 1, 2, 0]))


def test_import_keeps_the_source_split_skips_broken_files_and_resumes(tmp_path: Path) -> None:
    src, out = tmp_path / "dmlab", tmp_path / "out"
    write_teco_split(src)
    (src / "train" / "0" / "broken.npz").write_bytes(b"not a zip at all")
    with pytest.warns(UserWarning, match="broken.npz"):
        summary = import_dataset(make_loader("teco-dmlab"), src, out, progress=False)
    assert (summary.train, summary.test, len(summary.skipped)) == (3, 1, 1)
    assert [p.name for p in episode_paths(out / "test")] == ["0_000000.npz"]
    assert load_episode(out / "train" / "0_000002.npz").num_steps == 3
    meta = read_meta(out / "train")
    assert meta.world == "teco-dmlab" and meta.action_space == {"type": "discrete", "n": 3}
    with pytest.warns(UserWarning, match="broken.npz"):
        again = import_dataset(make_loader("teco-dmlab"), src, out, progress=False)
    assert (again.train, again.test, again.already_done) == (0, 0, 4)


def test_import_draws_a_seeded_test_split_and_refuses_to_mix_datasets(tmp_path: Path) -> None:
    src, out = tmp_path / "flat", tmp_path / "out"
    src.mkdir()
    for i in range(8):
        np.savez(src / f"{i}.npz", video=ramp_video(4, 64, 64), actions=np.array([0, 1, 2, 0]))
    summary = import_dataset(make_loader("teco-dmlab"), src, out, test_fraction=0.25, seed=3, progress=False)
    assert (summary.train, summary.test) == (6, 2)
    with pytest.raises(ValueError, match="would mix them"):
        import_dataset(make_loader("teco-minecraft"), src, out, progress=False)


def test_import_script_converts_vpt(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_vpt(tmp_path / "vpt", name, [vpt_record(keys=["key.keyboard.w"]) for _ in range(4)], frames=4)
    command = [sys.executable, str(REPO / "train" / "import_dataset.py"), "--format", "vpt",
               "--src", str(tmp_path / "vpt"), "--out", str(tmp_path / "out"), "--test-fraction", "0.5"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 train + 1 test" in result.stdout
    assert read_meta(tmp_path / "out").action_names == list(DISCRETE_ACTIONS)
    (episode_file,) = episode_paths(tmp_path / "out" / "train")
    np.testing.assert_array_equal(load_episode(episode_file).actions, [A["forward"]] * 3)
