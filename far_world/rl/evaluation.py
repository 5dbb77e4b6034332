"""Score a policy in the real world a checkpoint was trained on: returns of whole real episodes."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from far_world.envs.real import make_real_world
from far_world.rl.stats import MeanCI, mean_confidence_interval

Policy = Callable[[np.ndarray], Any]  # one uint8 (H, W, 3) frame -> one action

# Real worlds end their own episodes (death, goal, timeout); the cap only guards a world that never does.
DEFAULT_MAX_EPISODE_STEPS = 10_000


@dataclass
class EvalResult:
    """Per-episode returns and lengths of one policy, episode i played on seed ``seeds[i]``."""

    returns: list[float]
    lengths: list[int]
    seeds: list[int]
    seconds: float

    @property
    def summary(self) -> MeanCI:
        return mean_confidence_interval(self.returns)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary.to_dict(),
            "returns": self.returns,
            "lengths": self.lengths,
            "seeds": self.seeds,
            "seconds": round(self.seconds, 2),
        }


def sb3_policy(model: Any, deterministic: bool = False) -> Policy:
    """A stable-baselines3 model as a policy on single frames.

    Sampling (``deterministic=False``) by default: it is the policy PPO optimized, and an argmax
    policy in a first-person world tends to lock into loops (e.g. turning in place forever).
    Samples draw from torch's global generator: seed it for a repeatable evaluation.
    """

    def act(frame: np.ndarray) -> Any:
        action, _ = model.predict(frame, deterministic=deterministic)
        return action

    return act


def random_policy(action_space: gymnasium.Space, seed: int) -> Policy:
    """Uniform random actions from a private copy of ``action_space``, seeded."""
    space = copy.deepcopy(action_space)  # seeding the caller's space would change its later samples
    space.seed(seed)
    return lambda frame: space.sample()


def check_real_world_actions(world_spec: str, action_names: list[str], world_kwargs: Mapping[str, Any] | None = None) -> None:
    """Fail before any training when the real world's actions are not the checkpoint's, in order.

    An agent trained in imagination acts by index: a reordered or resized action table in the
    real world would score a different policy than the one trained.
    """
    if not world_spec:
        raise ValueError("the checkpoint names no real world (its 'world' field is empty): nothing to evaluate in")
    env = make_real_world(world_spec, seed=0, **(world_kwargs or {}))
    try:
        real = list(env.action_names)
    finally:
        env.close()
    if real != list(action_names):
        raise ValueError(f"{world_spec} has actions {real}, the checkpoint {list(action_names)}")


def evaluate_in_real_world(
    policy: Policy,
    world_spec: str,
    episodes: int,
    seed: int = 0,
    max_steps: int = DEFAULT_MAX_EPISODE_STEPS,
    world_kwargs: Mapping[str, Any] | None = None,
) -> EvalResult:
    """Play ``episodes`` whole episodes of the real world ``world_spec`` (seeds seed, seed+1, ...).

    Every policy scored with the same ``seed`` meets the same episode seeds, so comparisons are
    paired where the world's randomness comes from its seed. ``world_kwargs``: the settings the
    world model was trained under (``WorldModel.world_kwargs``, e.g. doom's ``hud``).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    start = time.perf_counter()
    env = make_real_world(world_spec, seed=seed, **(world_kwargs or {}))
    returns, lengths, seeds = [], [], []
    try:
        for episode in range(episodes):
            frame, _ = env.reset(seed=seed + episode)
            total, steps, done = 0.0, 0, False
            while not done and steps < max_steps:
                frame, reward, terminated, truncated, _ = env.step(policy(frame))
                total += float(reward)
                steps += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(steps)
            seeds.append(seed + episode)
    finally:
        env.close()
    return EvalResult(returns, lengths, seeds, time.perf_counter() - start)
