"""FARWorld-v0: Gymnasium conformance, vector autoreset, determinism and clear errors for bad input."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import far_world  # noqa: F401  (registers FARWorld-v0)
from far_world.checkpoint import CheckpointError
from far_world.released import released_checkpoints


pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_env_passes(tiny_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("name", sorted(released_checkpoints()))
def test_check_env_passes_on_every_released_world(name):
    env = gymnasium.make("FARWorld-v0", ckpt=name)
    check_env(env.unwrapped, skip_render_check=True)


def test_namespaced_id_and_spaces(tiny_ckpt):
    env = gymnasium.make("far_world:FARWorld-v0", ckpt=tiny_ckpt, max_episode_steps=3)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(6)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (64, 64, 3)
    assert info["frame_index"] == 0 and info["context_length"] == 4
    truncated = False
    for step in range(3):
        obs, reward, terminated, truncated, info = env.step(1)
        assert isinstance(reward, float) and isinstance(terminated, bool)
        assert info["frame_index"] == step + 1
    assert truncated


def test_same_seed_same_rollout_and_actions_matter(tiny_ckpt):
    def rollout(seed, actions):
        env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
        env.reset(seed=seed)
        return np.stack([env.step(a)[0] for a in actions])

    a = rollout(3, [1, 2, 3, 1, 1])
    assert np.array_equal(a, rollout(3, [1, 2, 3, 1, 1]))
    assert not np.array_equal(a, rollout(4, [1, 2, 3, 1, 1]))
    assert not np.array_equal(a[1:], rollout(3, [1, 5, 5, 5, 5])[1:])


def test_reset_from_caller_frames(tiny_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"frames": frames, "actions": np.array([1, 1, 2, 3])})
    assert np.array_equal(obs, frames[-1]) and info["context_length"] == 5
    with pytest.raises(ValueError, match="uint8"):
        env.reset(options={"frames": frames[:, :32]})
    with pytest.raises(ValueError, match="shape"):
        env.reset(options={"frames": frames, "actions": np.array([1, 1])})
    with pytest.raises(ValueError, match="outside the action space"):
        env.reset(options={"frames": frames, "actions": np.array([1, 1, 9, 1])})


def test_bad_action_is_a_clear_error(tiny_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(6)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(-1)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no such|missing|not found"):
        gymnasium.make("FARWorld-v0", ckpt=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        gymnasium.make("FARWorld-v0", ckpt=str(bad))


def test_timing_info_on_request(tiny_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=tiny_ckpt, timing=True)
    env.reset(seed=0)
    info = env.step(0)[-1]
    assert info["step_latency_s"] > 0 and env.unwrapped.last_step_latency_s == info["step_latency_s"]


def test_vector_env_of_16_runs_100_steps_with_autoreset(tiny_ckpt):
    envs = gymnasium.make_vec(
        "FARWorld-v0", num_envs=16, vectorization_mode="vector_entry_point", ckpt=tiny_ckpt, max_episode_steps=7
    )
    obs, info = envs.reset(seed=0)
    assert obs.shape == (16, 64, 64, 3) and obs.dtype == np.uint8
    envs.action_space.seed(0)
    resets_seen = 0
    done_prev = np.zeros(16, bool)
    for _ in range(100):
        obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        assert obs.shape == (16, 64, 64, 3) and rewards.shape == (16,)
        # Next-step autoreset: a world that ended last step now shows its fresh context.
        assert np.all(info["frame_index"][done_prev] == 0)
        assert np.all(rewards[done_prev] == 0)
        resets_seen += int(done_prev.sum())
        done_prev = terminated | truncated
    assert resets_seen >= 16  # every world was truncated and reset at least once
    assert np.all(info["frame_index"] <= 7)
    with pytest.raises(ValueError, match="outside the action space"):
        envs.step(np.full(16, 6))
