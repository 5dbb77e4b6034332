"""FARWorld-v0 as Gymnasium users call it: make's episode limit, async vectorization under the
default start method, and clear errors for inputs Gymnasium's own spaces refuse."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import far_world  # noqa: F401  (registers FARWorld-v0)
from far_world.envs.far_world_env import FARWorldEnv
from far_world.released import released_checkpoints
from far_world.world import WorldModel, WorldStep

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def instant_world_steps(monkeypatch):
    """The model's next frame replaced by a blank one: these tests count steps, not pixels."""

    def step(self, actions, *args, **kwargs):
        rows = len(actions)
        self.frame_index += 1
        return WorldStep(
            frames=np.zeros((rows, *self.resolution, 3), np.uint8),
            rewards=np.zeros(rows, np.float32),
            terminated=np.zeros(rows, bool),
        )

    monkeypatch.setattr(WorldModel, "step", step)


def steps_until_truncated(env, limit: int) -> int | None:
    env.reset(seed=0)
    for step in range(1, limit + 1):
        if env.step(1)[3]:
            return step
    return None


def test_make_max_episode_steps_is_the_one_limit(tiny_ckpt, instant_world_steps):
    assert steps_until_truncated(gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt, max_episode_steps=1005), 1010) == 1005
    assert steps_until_truncated(gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt), 1010) == 1000  # the registered default
    assert steps_until_truncated(gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt, max_episode_steps=-1), 1010) is None
    assert steps_until_truncated(FARWorldEnv(ckpt=tiny_ckpt, max_episode_steps=3), 10) == 3


def test_make_vec_passes_max_episode_steps_to_the_vector_env(tiny_ckpt, instant_world_steps):
    envs = gymnasium.make_vec("FARWorld-v0", num_envs=2, ckpt=tiny_ckpt, max_episode_steps=1003)
    envs.reset(seed=0)
    truncated_at = [step for step in range(1, 1005) if envs.step(np.array([1, 2]))[3].any()]
    assert truncated_at[0] == 1003
    assert gymnasium.make_vec("FARWorld-v0", num_envs=2, ckpt=tiny_ckpt).unwrapped.max_episode_steps == 1000


USER_SCRIPT = """
import gymnasium, numpy as np
import far_world
envs = gymnasium.make_vec("FARWorld-v0", num_envs=2, vectorization_mode="async", **KWARGS)
obs, _ = envs.reset(seed=0)
for _ in range(2):
    obs, rewards, terminated, truncated, _ = envs.step(np.array([1, 2]))
assert obs.shape[0] == 2 and obs.dtype == np.uint8, obs.shape
envs.close()
print("stepped", obs.shape)
"""
# What building the released world does on both sides of the fork, made explicit so that a tiny
# model reproduces it: an OpenMP parallel region in the parent, then one in each forked worker.
# GNU OpenMP cannot run the second unless far_world made forked workers single-threaded.
PARALLEL_REGIONS = """
import torch
def parallel_region(env=None):
    torch.ones(4_000_000).add_(1.0).sum()
    return env
parallel_region()
KWARGS["wrappers"] = [parallel_region]
"""


def run_async(kwargs: dict, script: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"  # the hang needs a real thread pool in the parent
    code = f"KWARGS = {kwargs!r}\n{script}"
    try:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("make_vec(..., vectorization_mode='async') hung: its forked workers never answered")


def test_async_make_vec_with_the_default_start_method_steps_two_worlds(tiny_ckpt):
    result = run_async({"ckpt": tiny_ckpt}, PARALLEL_REGIONS + USER_SCRIPT)
    assert result.returncode == 0 and "stepped (2, 64, 64, 3)" in result.stdout, result.stderr[-3000:]


@pytest.mark.skipif("maze.pt" not in released_checkpoints(), reason="no released default checkpoint")
def test_async_make_vec_of_the_released_world():
    result = run_async({}, USER_SCRIPT)
    assert result.returncode == 0 and "stepped (2, 64, 64, 3)" in result.stdout, result.stderr[-3000:]


def test_a_float_action_is_refused_as_discrete_refuses_it(tiny_ckpt):
    assert not gymnasium.spaces.Discrete(6).contains(2.5)
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
    env.reset(seed=0)
    for bad in (2.5, np.float32(1.0), np.array(3.7)):
        with pytest.raises(ValueError, match="not an integer"):
            env.step(bad)
    env.step(np.int64(2))
    envs = gymnasium.make_vec("FARWorld-v0", num_envs=2, ckpt=tiny_ckpt)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="not an integer"):
        envs.step(np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="not an integer"):
        env.reset(options={"frames": np.zeros((3, 64, 64, 3), np.uint8), "actions": np.array([1.0, 2.5])})


def test_an_empty_context_is_a_clear_error(tiny_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
    with pytest.raises(ValueError, match="context is empty"):
        env.reset(options={"frames": np.zeros((0, 64, 64, 3), np.uint8)})
    envs = gymnasium.make_vec("FARWorld-v0", num_envs=2, ckpt=tiny_ckpt)
    with pytest.raises(ValueError, match="context is empty"):
        envs.reset(options={"frames": np.zeros((2, 0, 64, 64, 3), np.uint8)})
