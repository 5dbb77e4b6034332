"""Crafter: the Minecraft-like 2D open world whose achievements are its rewards."""

from __future__ import annotations

from typing import Any

import crafter
import numpy as np

from far_world.envs.real.base import RESOLUTION, RealWorld


class CrafterWorld(RealWorld):
    """crafter.Env at 64x64 behind the Gymnasium 5-tuple API, Discrete(17) with crafter's action names.

    Rewards are crafter's (+1 per new achievement, +-0.1 per health point). ``terminated`` when
    the player dies, ``truncated`` at ``length`` steps. ``info["agent_pos"]`` (2,) is the player's
    cell on the 64x64 world grid; ``inventory`` and ``achievements`` are crafter's dicts. Each
    reset generates a new world (about 1 s).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    world_name = "crafter"
    extra_keys = ("agent_pos",)
    cell_size = 1.0

    def __init__(self, seed: int | None = None, render_mode: str | None = None, length: int = 10000) -> None:
        super().__init__(list(crafter.constants.actions), frame_skip=1, render_mode=render_mode)
        self._env = crafter.Env(area=(64, 64), size=RESOLUTION, length=length, seed=seed)

    def _player_info(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        if info is None:  # reset() returns no info: read the fresh player directly
            player = self._env._player
            info = {"player_pos": player.pos, "inventory": player.inventory, "achievements": player.achievements}
        return {
            "agent_pos": np.asarray(info["player_pos"], np.int64).copy(),
            "inventory": dict(info["inventory"]),
            "achievements": dict(info["achievements"]),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            # crafter has no reseed call: its reset seeds the world from (seed, episode number),
            # so setting both makes this episode a function of ``seed`` alone.
            self._env._seed = int(seed)
            self._env._episode = 0
        self._frame = np.ascontiguousarray(self._env.reset(), dtype=np.uint8)
        return self._frame.copy(), self._player_info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, done, info = self._env.step(self._check_action(action))
        self._frame = np.ascontiguousarray(obs, dtype=np.uint8)
        # crafter reports death as discount 0; any other end is its step limit.
        terminated = bool(done and info["discount"] == 0)
        return self._frame.copy(), float(reward), terminated, bool(done and not terminated), self._player_info(info)
