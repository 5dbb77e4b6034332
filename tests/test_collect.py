"""Trajectory collection: policies, seeds and split, worker processes, resume, meta.json, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from far_world.collection import CollectConfig, DatasetMismatchError, WorkerDiedError, collect
from far_world.collection.plan import episode_seeds, split_of
from far_world.collection.policies import PersistentRandomPolicy, RetracePolicy, make_policy
from far_world.data.episodes import episode_paths, load_episode, read_meta
from far_world.envs.real import UnknownWorldError

COLLECT_SCRIPT = Path(__file__).resolve().parents[1] / "train" / "collect.py"
MOVE_NAMES = ["noop", "forward", "left", "right", "forward+left", "forward+right"]


# -- split and seeds --------------------------------------------------------------------------
def test_split_is_even_prefix_stable_and_exact() -> None:
    tests = [i for i in range(100) if split_of(i, 0.1) == "test"]
    assert tests == list(range(1, 100, 10))
    assert [split_of(i, 0.1) for i in range(2)] == ["train", "test"]  # two episodes: one of each
    for n in (10, 11, 50, 99):  # ceil((N-1) f) test episodes in every prefix, exactly
        assert sum(split_of(i, 0.7) == "test" for i in range(n)) == math.ceil(round((n - 1) * 0.7, 9))
    assert all(split_of(i, 0.0) == "train" for i in range(20))
    with pytest.raises(ValueError):
        split_of(3, 1.0)


def test_episode_seeds_are_deterministic_and_distinct() -> None:
    assert episode_seeds(5, 42) == episode_seeds(5, 42)
    seeds = {episode_seeds(5, i)[0] for i in range(200)} | {episode_seeds(6, i)[0] for i in range(200)}
    assert len(seeds) == 400 and all(0 <= s < 2**31 for s in seeds)


# -- policies -----------------------------------------------------------------------------------
def test_persistent_policy_holds_actions_and_favours_moving() -> None:
    def run(seed: int) -> list[int]:
        policy = PersistentRandomPolicy(MOVE_NAMES, np.random.default_rng(seed), max_repeat=6)
        policy.reset({})
        return [policy.act({}) for _ in range(3000)]

    actions = run(0)
    assert actions == run(0) and actions != run(1)
    switches = sum(a != b for a, b in zip(actions, actions[1:]))
    assert len(actions) / (switches + 1) > 2.5  # mean hold of 1..6 is 3.5 (fewer switches when a draw repeats)
    counts = np.bincount(actions, minlength=6)
    assert counts[1] > 4 * counts[0]  # forward far more often than noop


class UnicycleWorld:
    """A point agent without walls: forward moves 0.25 cells along the heading, turns are 18 degrees."""

    def __init__(self) -> None:
        self.pos = np.zeros(2)
        self.angle = 0.0

    def info(self) -> dict:
        return {"agent_pos": self.pos.copy(), "agent_dir": np.array([math.cos(self.angle), math.sin(self.angle)])}

    def step(self, name: str) -> dict:
        parts = name.split("+")
        self.angle += math.radians(18) * (("left" in parts) - ("right" in parts))
        if "forward" in parts:
            self.pos = self.pos + 0.25 * np.array([math.cos(self.angle), math.sin(self.angle)])
        return self.info()


def test_retrace_policy_comes_back_to_where_it_was() -> None:
    world = UnicycleWorld()
    policy = RetracePolicy(MOVE_NAMES, np.random.default_rng(0), wander_steps=(30, 30))
    info = world.info()
    policy.reset(info)
    path = [info["agent_pos"]]
    for _ in range(600):
        info = world.step(MOVE_NAMES[policy.act(info)])
        path.append(info["agent_pos"])
    path = np.stack(path)
    gaps = [t2 - t1 for t2 in range(len(path)) for t1 in range(t2 - 40)
            if np.linalg.norm(path[t2] - path[t1]) < 0.35]
    assert len(gaps) > 20 and max(gaps) > 100  # back near places left 40..100+ steps before
    # Without walls a wander drifts away; uniform random actions would not come back this often.
    assert np.linalg.norm(path, axis=1).max() > 2.0


def _persistence_and_returns(policy_name: str) -> tuple[float, int]:
    """Share of steps repeating the previous action, and returns near places left 40+ steps before."""
    world = UnicycleWorld()
    policy = make_policy(policy_name, MOVE_NAMES, np.random.default_rng(0))
    info = world.info()
    policy.reset(info)
    actions, path = [], [info["agent_pos"]]
    for _ in range(600):
        actions.append(policy.act(info))
        info = world.step(MOVE_NAMES[actions[-1]])
        path.append(info["agent_pos"])
    path = np.stack(path)
    returns = sum(np.linalg.norm(path[t2] - path[t1]) < 0.35 for t2 in range(len(path)) for t1 in range(t2 - 40))
    return float(np.mean(np.diff(actions) == 0)), int(returns)


def test_retrace_jitter_keeps_revisits_with_less_predictable_actions() -> None:
    plain, plain_returns = _persistence_and_returns("retrace")
    jitter, jitter_returns = _persistence_and_returns("retrace_jitter")
    assert jitter < plain - 0.1
    assert jitter_returns > 20 and plain_returns > 20


def test_retrace_policy_needs_steering_actions_and_pose() -> None:
    with pytest.raises(ValueError, match="lacks"):
        RetracePolicy(["noop", "move_left", "move_right"], np.random.default_rng(0))
    policy = make_policy("retrace", MOVE_NAMES, np.random.default_rng(0))
    with pytest.raises(KeyError, match="agent_pos"):
        policy.reset({})
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("smart", MOVE_NAMES, np.random.default_rng(0))


# -- collection into a dataset folder ---------------------------------------------------------
def check_dataset(out: Path, world: str, episodes: int, steps: int, extras: tuple[str, ...] = ()) -> list:
    meta = read_meta(out)
    assert meta.world == world and meta.resolution == [64, 64] and meta.extras == list(extras)
    assert meta.action_space == {"type": "discrete", "n": len(meta.action_names)}
    assert meta.info["steps"] == steps
    names = sorted(p.name for split in ("train", "test") for p in episode_paths(out / split))
    assert names == [f"ep_{i:06d}.npz" for i in range(episodes)]
    loaded = []
    for split in ("train", "test"):
        for path in episode_paths(out / split):
            assert split == split_of(int(path.stem[3:]), meta.info["test_fraction"])
            ep = load_episode(path, resolution=(64, 64))
            assert 1 <= ep.num_steps <= steps and ep.frames.shape[1:] == (64, 64, 3)
            assert ep.actions.max() < len(meta.action_names)
            for key in extras:
                assert len(ep.extras[key]) == ep.num_steps + 1
            loaded.append(ep)
    return loaded


def check_frames_move(episodes: list, min_change: float) -> None:
    for ep in episodes:
        frames = ep.frames.astype(np.int16)
        assert frames.mean() > 10.0  # not black
        assert np.abs(np.diff(frames, axis=0)).mean() > min_change  # not frozen


@pytest.mark.worlds
def test_collect_doom_with_two_workers(tmp_path: Path) -> None:
    report = collect(CollectConfig("doom", episodes=2, steps=40, out=tmp_path, workers=2, seed=1), progress=False)
    assert sorted(report.written) == [0, 1] and len(report.startup_s) == 2
    episodes = check_dataset(tmp_path, "doom:health_gathering", 2, 40, ("agent_pos", "agent_dir", "health"))
    check_frames_move(episodes, 2.0)
    # The scenario's own variable, per frame: health_gathering starts every episode at 92.
    assert all(ep.extras["health"].shape == (ep.num_steps + 1,) and ep.extras["health"][0] == 92.0 for ep in episodes)
    meta = read_meta(tmp_path)
    assert meta.frame_skip == 4 and meta.policy == "persistent" and meta.seed == 1
    assert report.frames == sum(ep.num_steps + 1 for ep in episodes)


@pytest.mark.worlds
def test_collect_crafter(tmp_path: Path) -> None:
    collect(CollectConfig("crafter", episodes=2, steps=30, out=tmp_path), progress=False)
    episodes = check_dataset(tmp_path, "crafter", 2, 30, ("agent_pos",))
    check_frames_move(episodes, 0.5)
    assert read_meta(tmp_path).action_names[5] == "do"


@pytest.mark.worlds
def test_collect_maze_saves_poses(tmp_path: Path) -> None:
    collect(CollectConfig("maze", episodes=2, steps=16, out=tmp_path), progress=False)
    episodes = check_dataset(tmp_path, "maze", 2, 16, ("agent_pos", "agent_dir"))
    check_frames_move(episodes, 1.0)
    assert read_meta(tmp_path).policy == "retrace_jitter"  # the released maze world's data
    for ep in episodes:
        assert np.allclose(np.linalg.norm(ep.extras["agent_dir"], axis=1), 1.0, atol=1e-3)
        assert np.linalg.norm(np.diff(ep.extras["agent_pos"], axis=0), axis=1).sum() > 0.5  # it moved


@pytest.mark.worlds
def test_collect_a_larger_maze_by_its_spec(tmp_path: Path) -> None:
    result = run_collect_script("--world", "maze:11x11", "--episodes", "2", "--steps", "8", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    meta = read_meta(tmp_path)
    assert meta.world == "maze:11x11" and meta.policy == "retrace_jitter"
    episodes = check_dataset(tmp_path, "maze:11x11", 2, 8, ("agent_pos", "agent_dir"))
    assert max(ep.extras["agent_pos"].max() for ep in episodes) > 9  # cells beyond a 9x9 maze


@pytest.mark.worlds
def test_rerun_resumes_and_only_writes_what_is_missing(tmp_path: Path) -> None:
    cfg = CollectConfig("doom", episodes=4, steps=24, out=tmp_path, seed=3)
    collect(cfg, progress=False)
    paths = {int(p.stem[3:]): p for split in ("train", "test") for p in episode_paths(tmp_path / split)}
    original = {i: load_episode(p).frames.copy() for i, p in paths.items()}
    paths[0].unlink()  # interrupted before episode 0 was written
    paths[2].write_bytes(paths[2].read_bytes()[:5000])  # a truncated copy
    stale = paths[1].parent / ".ep_000003.abc.tmp"  # a write the interruption cut short
    stale.write_bytes(b"partial")
    untouched = paths[3].stat().st_mtime_ns
    with pytest.warns(UserWarning, match="ep_000002"):
        report = collect(cfg, progress=False)
    assert sorted(report.written) == [0, 2] and sorted(report.kept) == [1, 3] and len(report.rewritten) == 1
    assert paths[3].stat().st_mtime_ns == untouched and not stale.exists()
    for i in (0, 2):  # seeds are per episode: the same episodes come back
        np.testing.assert_array_equal(load_episode(paths[i]).frames, original[i])
    assert collect(cfg, progress=False).written == []  # complete: nothing to do, no worker started


@pytest.mark.worlds
def test_other_world_or_settings_into_the_same_folder_are_refused(tmp_path: Path) -> None:
    collect(CollectConfig("doom", episodes=1, steps=8, out=tmp_path), progress=False)
    with pytest.raises(DatasetMismatchError, match="'doom:health_gathering' dataset"):
        collect(CollectConfig("crafter", episodes=1, steps=8, out=tmp_path), progress=False)
    with pytest.raises(DatasetMismatchError, match="seed"):
        collect(CollectConfig("doom", episodes=2, steps=8, out=tmp_path, seed=9), progress=False)
    with pytest.raises(DatasetMismatchError, match="frame_skip"):
        collect(CollectConfig("doom", episodes=2, steps=8, out=tmp_path, world_kwargs={"frame_skip": 2}), progress=False)
    assert len(episode_paths(tmp_path / "train")) == 1


@pytest.mark.worlds
def test_a_failing_worker_is_reported_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(WorkerDiedError, match="frame_skip must be >= 1"):
        collect(CollectConfig("doom", episodes=1, steps=8, out=tmp_path, world_kwargs={"frame_skip": 0}), progress=False)


class OneWorkerDoesAllPool:
    """Worker 0 collects every episode; worker 1 fails to start once the work is done."""

    def __init__(self, count, world, world_kwargs, policy, steps) -> None:
        from far_world.collection.worker import describe_world
        from far_world.envs.real import make_real_world

        env = make_real_world(world, **world_kwargs)
        self.events = [("ready", 0, describe_world(env))]
        env.close()
        self.started_at = 0.0

    def submit(self, tasks) -> None:
        self.events += [("episode", 0, (task.index, 20, 0.0)) for task in tasks]

    def next_event(self, timeout: float = 1.0):
        return self.events.pop(0) if self.events else None

    def close(self, timeout: float = 30.0):
        return [("ready", 1, {}), ("error", 1, "Traceback: the game would not start")]

    def terminate(self) -> None:
        pass


def test_a_worker_failing_after_the_last_episode_is_not_silent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("far_world.collection.collector.WorkerPool", OneWorkerDoesAllPool)
    with pytest.warns(UserWarning, match="collect-worker-1 failed after the last episode:\nTraceback: the game"):
        report = collect(CollectConfig("gym:CartPole-v1", episodes=2, steps=20, out=tmp_path, workers=2), progress=False)
    assert sorted(report.written) == [0, 1] and sorted(report.startup_s) == [0, 1]


def run_collect_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COLLECT_SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_cli_collects_a_gymnasium_env(tmp_path: Path) -> None:
    out = tmp_path / "cartpole"
    result = run_collect_script("--world", "gym:CartPole-v1", "--episodes", "2", "--steps", "20", "--out", str(out),
                                "--workers", "2", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert "2 episodes written" in result.stdout
    episodes = check_dataset(out, "gym:CartPole-v1", 2, 20)
    assert all(ep.frames.mean() > 100 for ep in episodes)  # rendered cart on white, not black
    meta = json.loads((out / "meta.json").read_text())
    assert meta["action_names"] == ["action_0", "action_1"] and meta["policy"] == "persistent"


def test_bad_world_spec_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnknownWorldError, match=r"unknown world .quake.; worlds: maze, .*doom, .*minecraft"):
        collect(CollectConfig("quake", episodes=1, steps=8, out=tmp_path), progress=False)
    result = run_collect_script("--world", "quake", "--episodes", "1", "--steps", "8", "--out", str(tmp_path))
    assert result.returncode == 1 and "unknown world 'quake'" in result.stderr
    assert "Traceback" not in result.stderr and not os.listdir(tmp_path)


@pytest.mark.worlds
def test_a_policy_the_world_cannot_drive_fails_before_meta_is_written(tmp_path: Path) -> None:
    with pytest.raises(WorkerDiedError, match="lacks"):
        collect(CollectConfig("crafter", episodes=1, steps=8, out=tmp_path, policy="retrace"), progress=False)
    assert not (tmp_path / "meta.json").exists()
