"""The Minecraft world: action set, pose, the game process's failure paths, the explorer, determinism.

Tests marked ``minecraft`` run the real game and need its interpreter (``bash install.sh
--minecraft``); they are skipped where it is missing. The rest run everywhere.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from far_world.collection import CollectConfig, WorkerDiedError, collect
from far_world.collection.minecraft_policy import MinecraftExplorer
from far_world.collection.policies import default_policy, make_policy
from far_world.data.episodes import episode_paths, load_episode
from far_world.envs.real import MissingWorldPackageError, make_real_world
from far_world.envs.real import minecraft_protocol as protocol
from far_world.envs.real import minecraft_world
from far_world.envs.real.minecraft_venv import VENV_VARIABLE, game_python
from far_world.evaluation.memory import find_revisits

requires_game = pytest.mark.skipif(
    game_python() is None, reason="the Minecraft game is not installed (bash install.sh --minecraft)"
)
A = {name: i for i, name in enumerate(protocol.ACTIONS)}


# --- without the game -----------------------------------------------------------------------


def test_pose_info_wraps_yaw_and_gives_the_heading() -> None:
    info = minecraft_world.pose_info((10.0, 64.0, 20.0, 450.0, -15.0))
    np.testing.assert_allclose(info["pose"], [10, 64, 20, 90, -15])
    np.testing.assert_array_equal(info["agent_pos"], [10, 20])  # x and z: the ground plane
    np.testing.assert_allclose(info["agent_dir"], [1, 0], atol=1e-6)  # yaw 90 faces +x
    np.testing.assert_allclose(minecraft_world.pose_info((0, 0, 0, 0, 0))["agent_dir"], [0, -1], atol=1e-6)


def test_frame_replies_round_trip() -> None:
    pixels = bytes(range(12))
    message = protocol.encode_frame((1.5, 2.0, -3.0, 45.0, 15.0), pixels)
    kind, length = protocol.REPLY_HEADER.unpack_from(message)
    assert kind == protocol.REPLY_FRAME and length == len(message) - protocol.REPLY_HEADER.size
    pose, frame = protocol.decode_frame(message[protocol.REPLY_HEADER.size:])
    assert pose == (1.5, 2.0, -3.0, 45.0, 15.0) and bytes(frame) == pixels


def test_missing_game_says_how_to_install_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(VENV_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(MissingWorldPackageError, match="bash install.sh --minecraft"):
        make_real_world("minecraft")


def start_fake_game(tmp_path: Path, body: str) -> minecraft_world.GameProcess:
    """A stand-in game process running ``body`` (Python) in this interpreter."""
    script = tmp_path / "fake_game.py"
    script.write_text(body)
    return minecraft_world.GameProcess(Path(sys.executable), {"width": 8, "height": 8}, script=script)


def test_a_game_that_dies_gives_a_clear_error_with_its_log(tmp_path: Path) -> None:
    game = start_fake_game(tmp_path, "import sys\nprint('textures missing', file=sys.stderr)\nsys.exit(3)\n")
    expected = r"(?s)exited while starting \(exit code 3\).*textures missing"
    with pytest.raises(minecraft_world.GameProcessError, match=expected):
        game.wait_ready()
    game.close()


def test_a_game_that_hangs_times_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(minecraft_world, "READY_TIMEOUT_S", 0.5)
    game = start_fake_game(tmp_path, "import time\ntime.sleep(60)\n")
    start = time.monotonic()
    with pytest.raises(minecraft_world.GameProcessError, match="sent nothing for too long while starting"):
        game.wait_ready()
    assert time.monotonic() - start < 10 and game.process.poll() is not None  # killed, not left behind
    game.close()


def test_a_game_error_reply_carries_its_traceback(tmp_path: Path) -> None:
    body = (
        "import os, sys\nsys.path.insert(0, %r)\nimport minecraft_protocol as p\n"
        "os.write(1, p.encode_reply(p.REPLY_ERROR, b'Traceback: level generation failed'))\n"
    ) % str(Path(minecraft_world.__file__).parent)
    game = start_fake_game(tmp_path, body)
    with pytest.raises(minecraft_world.GameProcessError, match="level generation failed"):
        game.wait_ready()
    game.close()


class FakeWalker:
    """A flat world for the explorer: forward moves 0.4 blocks along the heading, camera steps turn
    15 degrees; one-block steps at every multiple of ``wall`` along x stop forward, and forward+jump
    gets over them."""

    def __init__(self, wall: float = math.inf) -> None:
        self.pose = np.array([64.0, 40.0, 64.0, 0.0, 0.0])
        self.wall = wall
        self.blocked = []  # per step: a forward step the wall stopped

    def info(self) -> dict:
        return minecraft_world.pose_info(tuple(self.pose))

    def step(self, name: str) -> None:
        yaw = math.radians(self.pose[3])
        heading = np.array([math.sin(yaw), -math.cos(yaw)])
        blocked = False
        if name in ("forward", "forward+jump"):
            new = self.pose[[0, 2]] + 0.4 * heading
            crosses = math.floor(self.pose[0] / self.wall) != math.floor(new[0] / self.wall)
            blocked = crosses and name == "forward"
            if not blocked:
                self.pose[[0, 2]] = new
        self.blocked.append(blocked)
        turns = {"camera_right": (3, 15), "camera_left": (3, -15), "camera_down": (4, 15), "camera_up": (4, -15)}
        if name in turns:
            k, d = turns[name]
            self.pose[k] = np.clip(self.pose[k] + d, -45, 45) if k == 4 else self.pose[k] + d


def run_explorer(seed: int, steps: int, walker: FakeWalker | None = None) -> tuple[list[str], FakeWalker]:
    walker = walker or FakeWalker()
    policy = make_policy("minecraft", list(protocol.ACTIONS), np.random.default_rng(seed))
    policy.reset(walker.info())
    names = []
    for _ in range(steps):
        name = protocol.ACTIONS[policy.act(walker.info())]
        names.append(name)
        walker.step(name)
    return names, walker


def test_explorer_is_the_default_and_replays_from_its_seed() -> None:
    assert default_policy("minecraft") == "minecraft"
    assert run_explorer(3, 300)[0] == run_explorer(3, 300)[0]
    assert run_explorer(3, 300)[0] != run_explorer(4, 300)[0]


def test_explorer_plays_every_action_and_keeps_the_view_mostly_level() -> None:
    names, _ = run_explorer(0, 3000)
    counts = {name: names.count(name) for name in protocol.ACTIONS}
    assert all(counts[name] > 0 for name in protocol.ACTIONS), counts
    assert counts["forward"] == max(counts.values())  # it mostly walks
    walker, pitches = FakeWalker(), []
    policy = MinecraftExplorer(list(protocol.ACTIONS), np.random.default_rng(1))
    policy.reset(walker.info())
    for _ in range(2000):
        walker.step(protocol.ACTIONS[policy.act(walker.info())])
        pitches.append(walker.pose[4])
    assert np.mean(np.abs(pitches) <= 15) > 0.7


def test_explorer_jumps_when_blocked_and_comes_back_to_where_it_was() -> None:
    names, walker = run_explorer(2, 1000, FakeWalker(wall=4.0))
    jumps_after_a_block = [names[i + 1] == "forward+jump" for i in range(len(names) - 1) if walker.blocked[i]]
    assert jumps_after_a_block and np.mean(jumps_after_a_block) > 0.5
    walker = FakeWalker()
    policy = MinecraftExplorer(list(protocol.ACTIONS), np.random.default_rng(5), jitter=0.0)
    policy.reset(walker.info())
    poses = []
    for _ in range(3000):
        walker.step(protocol.ACTIONS[policy.act(walker.info())])
        poses.append(walker.info())
    positions = np.stack([p["agent_pos"] for p in poses])
    assert positions.min() > 0 and positions.max() < protocol.LEVEL_SIZE  # it stays on the level
    revisits = find_revisits(positions, np.stack([p["agent_dir"] for p in poses]), min_gap=50)
    assert len(revisits) >= 5


def test_explorer_refuses_a_world_without_minecraft_actions() -> None:
    with pytest.raises(ValueError, match="lacks"):
        MinecraftExplorer(["noop", "forward", "left", "right"], np.random.default_rng(0))


# --- with the game --------------------------------------------------------------------------

PROBE_ACTIONS = ["forward", "camera_right", "forward+jump", "attack", "camera_down", "use", "left", "jump", "back",
                 "camera_up", "camera_left", "noop"]  # fmt: skip


def play(env, seed: int) -> tuple[np.ndarray, np.ndarray]:
    obs, info = env.reset(seed=seed)
    frames, poses = [obs], [info["pose"]]
    for name in PROBE_ACTIONS * 2:
        obs, reward, terminated, truncated, info = env.step(A[name])
        assert reward == 0.0 and not terminated and not truncated
        frames.append(obs)
        poses.append(info["pose"])
    return np.stack(frames), np.stack(poses)


@pytest.fixture(scope="module")
def minecraft_env():
    env = make_real_world("minecraft", seed=0)
    yield env
    env.close()


@pytest.mark.minecraft
@requires_game
def test_same_seed_and_actions_give_the_same_frames(minecraft_env) -> None:
    frames_a, poses_a = play(minecraft_env, 11)
    frames_b, poses_b = play(minecraft_env, 11)  # a new game process, the same level
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(poses_a, poses_b)
    assert frames_a.shape == (len(PROBE_ACTIONS) * 2 + 1, 64, 64, 3) and frames_a.std() > 10
    frames_c, _ = play(minecraft_env, 12)
    assert np.abs(frames_c.astype(int) - frames_a).mean() > 5  # another level looks different


@pytest.mark.minecraft
@requires_game
def test_actions_move_and_turn_the_player(minecraft_env) -> None:
    _, info = minecraft_env.reset(seed=5)
    start = info["pose"].copy()
    pose = minecraft_env.step(A["camera_right"])[4]["pose"]
    assert np.isclose((pose[3] - start[3]) % 360, 15.0, atol=0.01)
    for _ in range(4):
        pose = minecraft_env.step(A["camera_down"])[4]["pose"]
    assert pose[4] == pytest.approx(protocol.PITCH_LIMIT_DEG)  # looking down stops at the limit
    for _ in range(3):
        pose = minecraft_env.step(A["camera_up"])[4]["pose"]
    before = minecraft_env.step(A["noop"])[4]
    after = before
    for _ in range(4):
        after = minecraft_env.step(A["forward"])[4]
    moved = after["agent_pos"] - before["agent_pos"]
    assert np.linalg.norm(moved) > 0.5 and moved @ before["agent_dir"] > 0.9 * np.linalg.norm(moved)


@pytest.mark.minecraft
@requires_game
def test_a_killed_game_process_gives_a_clear_error(minecraft_env) -> None:
    minecraft_env.reset(seed=3)
    os.kill(minecraft_env.game_pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(minecraft_world.GameProcessError, match="killed by signal 9"):
        minecraft_env.step(A["forward"])
    assert time.monotonic() - start < 10
    obs, _ = minecraft_env.reset(seed=3)  # the next episode starts a new game
    assert obs.shape == (64, 64, 3)


@pytest.mark.minecraft
@requires_game
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minecraft_passes_gymnasiums_env_checker(minecraft_env) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(minecraft_env, skip_render_check=True)


@pytest.mark.minecraft
@requires_game
def test_frames_of_another_size() -> None:
    env = make_real_world("minecraft", resolution=(48, 80), supersample=1)
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (48, 80, 3) and env.observation_space.contains(obs)
    finally:
        env.close()


def _descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _is_game(pid: int) -> bool:
    try:
        return b"minecraft_server.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.minecraft
@requires_game
def test_collection_writes_episodes_with_the_pose_and_a_killed_game_stops_it(tmp_path: Path) -> None:
    report = collect(CollectConfig("minecraft", episodes=2, steps=12, out=tmp_path / "ok", workers=1), progress=False)
    assert sorted(report.written) == [0, 1]
    for path in episode_paths(tmp_path / "ok" / "train") + episode_paths(tmp_path / "ok" / "test"):
        episode = load_episode(path)
        assert episode.frames.shape == (13, 64, 64, 3) and episode.extras["pose"].shape == (13, 5)
    # Kill every game process of the worker as soon as one is up: the run must stop with the
    # game's error, not hang.
    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(_is_game(p) for p in _descendants(os.getpid())):
                time.sleep(1.0)
                for pid in [p for p in _descendants(os.getpid()) if _is_game(p)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(WorkerDiedError, match="Minecraft game process"):
        collect(CollectConfig("minecraft", episodes=1, steps=400, out=tmp_path / "killed", workers=1), progress=False)
    thread.join()


@pytest.mark.minecraft
@requires_game
def test_the_view_from_inside_a_block_renders(tmp_path: Path) -> None:
    """A block on the player's head (placed, or sand falling) once broke the game's next draw."""
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(minecraft_world.__file__).parent)!r})
import minecraft_server as server
server.zero_fresh_allocations()
clock = server.SeededClock()
time.perf_counter_ns = clock
game = server.Game(32, 32, clock)
game.new_level(7)
player = game.game.thePlayer
player.setPosition(player.posX, player.posY - 3.0, player.posZ)  # head in the ground
assert game.game.theWorld.isSolid(player.posX, player.posY, player.posZ, 0.1)
game.observe()
game.observe()
print("rendered")
"""
    (tmp_path / ".minecraft").mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "LP_NUM_THREADS": "1"}
    import subprocess

    result = subprocess.run([str(game_python()), "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "rendered" in result.stdout, result.stderr[-2000:]
