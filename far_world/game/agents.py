"""Agents that can drive a world instead of the keyboard: random with persistence, or a saved SB3 policy."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import gymnasium
import numpy as np


class Agent(Protocol):
    def act(self, frame: np.ndarray) -> np.ndarray | int: ...


class PersistentRandomAgent:
    """Uniform random actions, each held for 1..max_repeat steps (smoother play than i.i.d. noise)."""

    def __init__(self, action_space: gymnasium.Space, max_repeat: int = 4, seed: int | None = None) -> None:
        self.action_space = action_space
        self.action_space.seed(seed)
        self.rng = np.random.default_rng(seed)
        self.max_repeat = max_repeat
        self._action = None
        self._left = 0

    def act(self, frame: np.ndarray):
        if self._left <= 0:
            self._action = self.action_space.sample()
            self._left = int(self.rng.integers(1, self.max_repeat + 1))
        self._left -= 1
        return self._action


class SB3Agent:
    """A stable-baselines3 policy saved with ``model.save(path)``."""

    def __init__(self, path: str | Path) -> None:
        try:
            from stable_baselines3 import PPO
        except ImportError as exc:
            raise ImportError('loading an agent needs stable-baselines3: pip install -e ".[rl]"') from exc
        if not Path(path).is_file():
            raise FileNotFoundError(f"no agent file at {path}")
        self.model = PPO.load(str(path), device="cpu")

    def act(self, frame: np.ndarray):
        action, _ = self.model.predict(frame, deterministic=False)
        return action


def load_agent(spec: str, action_space: gymnasium.Space, seed: int | None = None) -> Agent:
    """``"random"`` or the path of a saved SB3 agent (.zip)."""
    if spec == "random":
        return PersistentRandomAgent(action_space, seed=seed)
    return SB3Agent(spec)
