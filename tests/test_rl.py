"""RL on top of the learned world: the SB3 adapter, real-world scoring, CIs, and train_agent.py end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from far_world.checkpoint import save_world_checkpoint
from far_world.envs.far_world_vector import FARWorldVectorEnv
from far_world.rl import (
    ImaginationVecEnv,
    PPOSettings,
    check_real_world_actions,
    evaluate_in_real_world,
    mean_confidence_interval,
    random_policy,
    train_ppo,
)
from far_world.rl.curve import REAL_EVAL, TRAIN, CurveLog, read_curve
from conftest import make_tiny_world_checkpoint

DOOM = "doom:health_gathering"  # thousands of real steps a second, and the same six actions as the tiny world
TRAIN_AGENT = Path(__file__).resolve().parent.parent / "train" / "train_agent.py"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tiny_doom_checkpoint(path: Path, termination_bias: float) -> str:
    """The tiny untrained world, claiming to model doom:health_gathering.

    The termination head's output bias decides its episodes: -20 never ends one, +20 ends every step.
    """
    ckpt = make_tiny_world_checkpoint(path)
    far_state = dict(ckpt.far_state)
    bias = far_state["heads.termination.3.bias"]
    far_state["heads.termination.3.bias"] = torch.full_like(bias, termination_bias)
    save_world_checkpoint(path, dataclasses.replace(ckpt, far_state=far_state, world=DOOM))
    return str(path)


@pytest.fixture(scope="module")
def endless_ckpt(tmp_path_factory) -> str:
    return make_tiny_doom_checkpoint(tmp_path_factory.mktemp("rl") / "endless.pt", termination_bias=-20.0)


@pytest.fixture(scope="module")
def ending_ckpt(tmp_path_factory) -> str:
    return make_tiny_doom_checkpoint(tmp_path_factory.mktemp("rl") / "ending.pt", termination_bias=20.0)


def imagination(ckpt: str, num_envs: int = 3, horizon: int = 3, seed: int = 0) -> ImaginationVecEnv:
    env = ImaginationVecEnv(FARWorldVectorEnv(num_envs=num_envs, ckpt=ckpt, max_episode_steps=horizon))
    env.seed(seed)
    return env


def prompt_last_frames(env: ImaginationVecEnv) -> np.ndarray:
    return env.venv.world.prompt_frames[:, -1]


def is_prompt_frame(frame: np.ndarray, prompts: np.ndarray) -> bool:
    return any(np.array_equal(frame, p) for p in prompts)


# --- the SB3 adapter -------------------------------------------------------------------------


def test_adapter_spaces_and_step_shapes(endless_ckpt):
    env = imagination(endless_ckpt)
    assert env.num_envs == 3
    assert env.observation_space.shape == (64, 64, 3) and env.observation_space.dtype == np.uint8
    assert env.action_space.n == 6
    obs = env.reset()
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert all(is_prompt_frame(o, prompt_last_frames(env)) for o in obs)  # imagination starts from real frames
    obs, rewards, dones, infos = env.step(np.array([0, 1, 5]))
    assert obs.shape == (3, 64, 64, 3) and obs.dtype == np.uint8
    assert rewards.shape == (3,) and rewards.dtype == np.float32
    assert dones.shape == (3,) and dones.dtype == bool and not dones.any()
    assert len(infos) == 3 and all(info == {"TimeLimit.truncated": False} for info in infos)


def test_adapter_truncates_at_the_horizon_and_resets_in_the_same_step(endless_ckpt):
    env = imagination(endless_ckpt, horizon=3)
    env.reset()
    for _ in range(2):
        _, _, dones, _ = env.step(np.zeros(3, np.int64))
        assert not dones.any()
    obs, _, dones, infos = env.step(np.zeros(3, np.int64))
    assert dones.all()
    for o, info in zip(obs, infos):
        assert info["TimeLimit.truncated"] is True  # SB3 bootstraps the value at an imagination cut
        assert info["terminal_observation"].shape == (64, 64, 3)
        assert not is_prompt_frame(info["terminal_observation"], prompt_last_frames(env))
        assert is_prompt_frame(o, prompt_last_frames(env))  # the next episode's first frame, right away
    # Each world counts its new episode from zero: three more steps, one more cut.
    dones_seen = [env.step(np.zeros(3, np.int64))[2].all() for _ in range(3)]
    assert dones_seen == [False, False, True]


def test_adapter_ends_episodes_where_the_termination_head_fires(ending_ckpt):
    env = imagination(ending_ckpt, horizon=100)
    env.reset()
    obs, _, dones, infos = env.step(np.array([1, 2, 3]))
    assert dones.all()
    assert all(info["TimeLimit.truncated"] is False and "terminal_observation" in info for info in infos)
    assert all(is_prompt_frame(o, prompt_last_frames(env)) for o in obs)


def test_adapter_is_repeatable_under_a_seed(endless_ckpt):
    runs = []
    for _ in range(2):
        env = imagination(endless_ckpt, seed=7)
        frames = [env.reset()] + [env.step(np.array([1, 3, 4]))[0] for _ in range(4)]
        runs.append(np.stack(frames))
    assert np.array_equal(runs[0], runs[1])


def test_adapter_answers_sb3_queries(endless_ckpt):
    env = imagination(endless_ckpt)
    assert env.get_attr("max_episode_steps") == [3, 3, 3]
    assert env.get_attr("num_envs", indices=1) == [3]
    assert env.env_is_wrapped(object) == [False, False, False]
    env.reset()
    assert len(env.get_images()) == 3


def test_adapter_refuses_other_vector_envs():
    other = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(TypeError, match="native vector env"):
        ImaginationVecEnv(other)


# --- statistics and curves -------------------------------------------------------------------


def test_confidence_interval_on_known_values():
    ci = mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = sqrt(2.5), t(0.975, 4) = 2.776445: half-width 2.776445 * 1.581139 / sqrt(5) = 1.963243
    assert ci.mean == pytest.approx(3.0)
    assert (ci.low, ci.high) == pytest.approx((3.0 - 1.963243, 3.0 + 1.963243), abs=1e-5)
    wider = mean_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)
    assert wider.low < ci.low and wider.high > ci.high
    assert mean_confidence_interval([4.0, 4.0, 4.0]).to_dict()["ci95"] == [4.0, 4.0]


def test_confidence_interval_of_one_value_is_undefined_and_empty_is_an_error():
    single = mean_confidence_interval([7.0])
    assert single.mean == 7.0 and math.isnan(single.low) and math.isnan(single.high)
    assert single.to_dict() == {"mean": 7.0, "ci95": [None, None], "n": 1}
    with pytest.raises(ValueError):
        mean_confidence_interval([])


def test_curve_keeps_the_last_row_per_step_and_truncates_for_resume(tmp_path):
    log = CurveLog(tmp_path / "curve.jsonl")
    log.append(TRAIN, 64, mean_return=1.0)
    log.append(TRAIN, 128, mean_return=2.0)
    log.append(REAL_EVAL, 64, mean=5.0)
    log.truncate(64)
    log.append(TRAIN, 64, mean_return=3.0)
    curves = read_curve(tmp_path / "curve.jsonl")
    assert [(r["steps"], r["mean_return"]) for r in curves[TRAIN]] == [(64, 3.0)]
    assert [r["mean"] for r in curves[REAL_EVAL]] == [5.0]


# --- the real world --------------------------------------------------------------------------


@pytest.mark.worlds
def test_real_world_evaluation_is_paired_by_seed():
    space = gymnasium.spaces.Discrete(6)
    first = evaluate_in_real_world(random_policy(space, seed=3), DOOM, episodes=2, seed=11)
    again = evaluate_in_real_world(random_policy(space, seed=3), DOOM, episodes=2, seed=11)
    assert first.seeds == [11, 12]
    assert first.returns == again.returns and first.lengths == again.lengths
    assert all(length > 0 for length in first.lengths)
    assert first.to_dict()["n"] == 2


@pytest.mark.worlds
def test_real_world_evaluation_builds_the_world_as_the_checkpoint_was_trained():
    def red_in_health_corner(world_kwargs):
        seen = []

        def watching(frame):
            seen.append(frame)
            return 1

        evaluate_in_real_world(watching, DOOM, episodes=1, seed=2, max_steps=3, world_kwargs=world_kwargs)
        corner = np.asarray(seen)[:, 52:64, 16:40].astype(np.int16)  # where doom's minimal HUD draws the health
        return int(((corner[..., 0] - corner[..., 1:].max(-1)) > 80).sum())

    assert red_in_health_corner({"hud": True}) > 10
    assert red_in_health_corner(None) == 0


@pytest.mark.worlds
def test_real_world_must_have_the_checkpoints_actions():
    check_real_world_actions(DOOM, ["noop", "forward", "left", "right", "forward+left", "forward+right"])
    with pytest.raises(ValueError, match="actions"):
        check_real_world_actions(DOOM, ["noop", "left", "right"])
    with pytest.raises(ValueError, match="names no real world"):
        check_real_world_actions("", ["noop"])


# --- training --------------------------------------------------------------------------------


def test_training_checkpoints_and_resumes(endless_ckpt, tmp_path):
    settings = PPOSettings(n_steps=8, batch_size=16, n_epochs=1, features_dim=32, device="cpu")
    _, first = train_ppo(imagination(endless_ckpt, num_envs=2, horizon=4), 32, tmp_path, settings, checkpoint_every=16)
    assert (first.steps, first.resumed_from) == (32, 0)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["num_timesteps"] == 32
    model, second = train_ppo(imagination(endless_ckpt, num_envs=2, horizon=4), 48, tmp_path, settings, checkpoint_every=16)
    assert (second.steps, second.resumed_from) == (48, 32)
    assert second.wall_s > first.wall_s
    assert model.get_vec_normalize_env().ret_rms.count > 1  # the reward statistics came back with the model
    assert [r["steps"] for r in read_curve(tmp_path / "curve.jsonl")[TRAIN]] == [16, 32, 48]
    assert PPO.load(tmp_path / "agent.zip", device="cpu").num_timesteps == 48


def load_train_agent():
    spec = importlib.util.spec_from_file_location("train_agent", TRAIN_AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.worlds
def test_train_agent_end_to_end(endless_ckpt, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--ckpt", endless_ckpt, "--steps", "64", "--num-envs", "2", "--horizon", "8", "--n-steps", "16",
        "--batch-size", "32", "--eval-episodes", "2", "--real-steps", "64", "--eval-every", "32",
        "--eval-every-episodes", "1", "--ckpt-every", "32", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    summary = load_train_agent().main(argv)
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["world"] == DOOM and saved["command"].startswith("python train/train_agent.py --ckpt")
    assert saved["imagination"]["steps"] == 64 and saved["real_reference"]["steps"] == 64
    policies = saved["evaluation"]["policies"]
    assert set(policies) == {"imagination", "random", "real"}
    for result in policies.values():
        assert len(result["returns"]) == 2 and result["seeds"] == policies["random"]["seeds"]
        low, high = result["ci95"]
        assert low <= result["mean"] <= high
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert [r["steps"] for r in read_curve(out / "imagination" / "curve.jsonl")[REAL_EVAL]] == [0, 32]
    assert list((out / "imagination" / "tb").glob("events.out.tfevents.*"))
    assert PPO.load(out / "imagination" / "agent.zip", device="cpu").num_timesteps == 64
