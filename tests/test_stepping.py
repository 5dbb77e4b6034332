"""One stepping core: the single and vector FARWorld-v0 agree, autoreset modes, the truncation
rule, and sampling settings passed as values."""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np
import pytest
import torch
from conftest import make_tiny_world_checkpoint

import far_world  # noqa: F401  (registers FARWorld-v0)
from far_world.checkpoint import save_world_checkpoint
from far_world.model.sampler import SamplingSettings
from far_world.world import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_world_ending(path, termination_bias: float) -> str:
    """The tiny world, its termination head's output bias set: -20 never ends an episode, +20 ends every step."""
    ckpt = make_tiny_world_checkpoint(path)
    far_state = dict(ckpt.far_state)
    far_state["heads.termination.3.bias"] = torch.full_like(far_state["heads.termination.3.bias"], termination_bias)
    save_world_checkpoint(path, dataclasses.replace(ckpt, far_state=far_state))
    return str(path)


@pytest.fixture(scope="module")
def endless_ckpt(tmp_path_factory) -> str:
    return tiny_world_ending(tmp_path_factory.mktemp("endless") / "endless.pt", -20.0)


@pytest.fixture(scope="module")
def always_ending_ckpt(tmp_path_factory) -> str:
    return tiny_world_ending(tmp_path_factory.mktemp("ending") / "ending.pt", 20.0)


def vector(ckpt: str, num_envs: int, **kwargs):
    return gymnasium.make_vec("FARWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", ckpt=ckpt, **kwargs)


def test_single_and_vector_env_give_the_same_frames_for_the_same_seed_and_actions(endless_ckpt):
    # Episodes end only by truncation: after a termination the single env goes on, the vector env restarts.
    single = gymnasium.make("FARWorld-v0", ckpt=endless_ckpt, max_episode_steps=14)
    batched = vector(endless_ckpt, 1, max_episode_steps=14)
    obs, _ = single.reset(seed=9)
    obs_v, _ = batched.reset(seed=9)
    assert np.array_equal(obs_v[0], obs)
    actions = np.random.default_rng(0).integers(0, 6, 14)
    # 14 steps from a 4-frame prompt: frames cross into the long-term ring (8 slots) and wrap it.
    for step, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = single.step(int(action))
        obs_v, reward_v, terminated_v, truncated_v, info_v = batched.step(np.array([action]))
        assert np.array_equal(obs_v[0], obs)
        assert reward_v[0] == reward and terminated_v[0] == terminated and truncated_v[0] == truncated
        assert info_v["frame_index"][0] == info["frame_index"] == step
    assert truncated  # both truncate at the same step


def test_truncation_follows_gymnasium_both_flags_may_be_set(always_ending_ckpt):
    envs = vector(always_ending_ckpt, 2, max_episode_steps=1)
    envs.reset(seed=0)
    _, _, terminated, truncated, _ = envs.step(np.zeros(2, np.int64))
    assert terminated.all() and truncated.all()
    env = gymnasium.make("FARWorld-v0", ckpt=always_ending_ckpt, max_episode_steps=1)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (True, True)


def test_sb3_adapter_reports_a_time_limit_only_where_the_episode_did_not_terminate(always_ending_ckpt, endless_ckpt):
    from far_world.rl import ImaginationVecEnv

    for ckpt, cut in ((always_ending_ckpt, False), (endless_ckpt, True)):
        env = ImaginationVecEnv(vector(ckpt, 2, max_episode_steps=1))
        env.reset()
        _, _, dones, infos = env.step(np.zeros(2, np.int64))
        assert dones.all() and all(info["TimeLimit.truncated"] is cut for info in infos)


def test_same_step_autoreset_returns_the_next_episode_at_once(endless_ckpt):
    horizon = 3
    same = vector(endless_ckpt, 2, max_episode_steps=horizon, autoreset_mode="same_step")
    nxt = vector(endless_ckpt, 2, max_episode_steps=horizon)
    assert same.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP
    assert nxt.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    same.reset(seed=4)
    nxt.reset(seed=4)
    prompts = same.unwrapped.world.prompt_frames[:, -1]
    actions = np.array([1, 2])
    for _ in range(horizon - 1):
        assert "final_obs" not in same.step(actions)[-1]
        nxt.step(actions)
    obs, rewards, terminated, truncated, info = same.step(actions)
    last, last_rewards, _, last_truncated, _ = nxt.step(actions)
    assert truncated.all() and last_truncated.all() and info["_final_obs"].all()
    for i in range(2):
        assert np.array_equal(info["final_obs"][i], last[i])  # the frame next-step mode shows now
        assert any(np.array_equal(obs[i], p) for p in prompts)  # the new episode's first frame
    assert np.array_equal(rewards, last_rewards) and np.all(info["frame_index"] == 0)
    # Next-step mode restarts one step later, ignoring that step's action and reward.
    obs, rewards, _, truncated, info = nxt.step(actions)
    assert not truncated.any() and np.all(rewards == 0) and np.all(info["frame_index"] == 0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        vector(endless_ckpt, 2, autoreset_mode="disabled")


def test_sampling_settings_are_checked_values():
    settings = SamplingSettings(steps=3, guidance=1.5, flex_rope_slope=[0.0, 0.1], context_noise=0.2)
    assert settings.flex_rope_slope == (0.0, 0.1) and hash(settings) == hash(dataclasses.replace(settings))
    assert settings.replace(steps=None, guidance=2.0) == SamplingSettings(3, 2.0, (0.0, 0.1), 0.2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.steps = 5
    for bad in (dict(steps=0), dict(steps=2.5), dict(flex_rope_slope=-0.1), dict(context_noise=1.0), dict(time_shift=0.0),
                dict(start_time=0.0), dict(start_time=1.5), dict(guidance_scope="context")):
        with pytest.raises(ValueError):
            SamplingSettings(**bad)
    assert (settings.guided_step_count, settings.replace(guided_steps=1).guided_step_count) == (3, 1)
    assert settings.replace(guidance=1.0).guided_step_count == 0
    stored = SamplingSettings.from_dict({"sampling_steps": 2, "guidance": 1.5, "unknown": 1})
    assert (stored.steps, stored.guidance) == (2, 1.5) and SamplingSettings.from_dict(stored.to_dict()) == stored


def test_context_noise_is_a_setting_of_the_world_not_of_the_model(tiny_ckpt):
    world = WorldModel.load(tiny_ckpt)

    def frames(settings: SamplingSettings) -> np.ndarray:
        batch = world.with_batch(1, settings=settings)
        batch.reset(world.prompt_frames[:1], world.prompt_actions[:1], seed=3)
        return np.stack([batch.step(np.array([a])).frames[0] for a in (1, 2, 3, 1, 1, 4)])

    clean = frames(world.settings)
    noised = frames(world.settings.replace(context_noise=0.3))
    assert np.array_equal(noised, frames(world.settings.replace(context_noise=0.3)))  # seeded
    assert not np.array_equal(clean, noised)
    assert world.settings.context_noise == 0.0  # a batch's settings never leak into the world's
    assert world.configure(context_noise=0.3).context_noise == 0.3


def test_a_batch_split_across_cores_steps_as_one_batch(endless_ckpt, monkeypatch):
    # 32 worlds on 2 cores are stepped as two shards of 16 side by side: the frames, rewards and
    # restarts must not depend on it (noise is drawn for the whole batch at once).
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the shard plan reads the core count
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (32, 5, 64, 64, 3), dtype=np.uint8)
    actions = rng.integers(0, 6, (32, 4))
    restart = rng.random(32) < 0.3
    runs = []
    for threads in (None, 1):
        world = WorldModel.load(endless_ckpt, batch_size=32)
        world.threads = threads
        world.reset(frames, actions, seed=4)
        steps = [world.step(rng_actions) for rng_actions in np.random.default_rng(5).integers(0, 6, (3, 32))]
        world.reset_rows(restart, frames[restart], actions[restart])
        steps += [world.step(rng_actions) for rng_actions in np.random.default_rng(6).integers(0, 6, (9, 32))]
        runs.append((len(world._shards), steps, world.context_length))
    (shards, split, split_context), (one, together, together_context) = runs
    assert (shards, one) == (2, 1)
    for a, b in zip(split, together):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-5)
        np.testing.assert_array_equal(a.terminated, b.terminated)
    np.testing.assert_array_equal(split_context, together_context)
