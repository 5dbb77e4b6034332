"""Any installed Gymnasium environment with RGB frames, as a 64x64 world (``gym:ENV_ID``)."""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium
import numpy as np

from far_world.envs.real.base import RealWorld, to_frame
from far_world.envs.real.errors import UnknownWorldError


def is_image_space(space: gymnasium.Space) -> bool:
    """True for a Box of uint8 (H, W, 3) images."""
    is_box = isinstance(space, gymnasium.spaces.Box)
    return is_box and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def discrete_actions(env: gymnasium.Env) -> tuple[list[str], list[Any]]:
    """Names and inner-env actions for each index of our Discrete space.

    Discrete(n, start) maps index i to start + i (named by ``get_action_meanings`` where the env
    has it, as Atari envs do); MultiDiscrete(nvec) is flattened to Discrete(prod(nvec)), index
    order = ``itertools.product`` of the components.
    """
    space = env.action_space
    if isinstance(space, gymnasium.spaces.Discrete):
        meanings = getattr(env.unwrapped, "get_action_meanings", None)
        names = [str(m).lower() for m in meanings()] if callable(meanings) else [f"action_{i}" for i in range(int(space.n))]
        return names, [int(space.start) + i for i in range(int(space.n))]
    if isinstance(space, gymnasium.spaces.MultiDiscrete) and space.nvec.ndim == 1:
        combos = list(itertools.product(*(range(int(n)) for n in space.nvec)))
        names = [",".join(f"a{k}={v}" for k, v in enumerate(c)) for c in combos]
        return names, [np.asarray(c, space.dtype) + space.start for c in combos]
    raise ValueError(f"needs a Discrete or MultiDiscrete action space, has {space}")


class GymnasiumWorld(RealWorld):
    """A Gymnasium env seen through 64x64 frames: its image observation if it has one, else ``render()``.

    ``frame_skip`` repeats each action (rewards summed, stopping at the episode's end). ``info`` is
    the inner env's; no pose, so no extras.
    """

    def __init__(
        self,
        env_id: str,
        seed: int | None = None,
        render_mode: str | None = None,
        frame_skip: int = 1,
        **make_kwargs: Any,
    ) -> None:
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        try:
            env = gymnasium.make(env_id, render_mode="rgb_array", **make_kwargs)
        except (gymnasium.error.Error, ModuleNotFoundError) as exc:
            raise UnknownWorldError(f"gym:{env_id}: {exc}") from exc
        self._uses_observation = is_image_space(env.observation_space)
        if not self._uses_observation and "rgb_array" not in env.metadata.get("render_modes", []):
            env.close()
            raise ValueError(f"gym:{env_id} has no RGB frames: neither an (H,W,3) uint8 observation nor rgb_array rendering")
        try:
            names, self._inner_actions = discrete_actions(env)
        except ValueError as exc:
            env.close()
            raise ValueError(f"gym:{env_id} {exc}") from None
        super().__init__(names, frame_skip=frame_skip, render_mode=render_mode)
        fps = env.metadata.get("render_fps") or 30
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": max(1, round(fps / frame_skip))}
        self.world_name = f"gym:{env_id}"
        self._env = env
        self._pending_seed = seed

    def _observe(self, obs: Any) -> np.ndarray:
        image = obs if self._uses_observation else self._env.render()
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"{self.world_name} has no RGB frames: got {shape} instead of (H,W,3)")
        self._frame = to_frame(image.astype(np.uint8, copy=False))
        return self._frame.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        obs, info = self._env.reset(seed=seed, options=options)
        return self._observe(obs), dict(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        inner_action = self._inner_actions[self._check_action(action)]
        total = 0.0
        for _ in range(self.frame_skip):
            obs, reward, terminated, truncated, info = self._env.step(inner_action)
            total += float(reward)
            if terminated or truncated:
                break
        return self._observe(obs), total, bool(terminated), bool(truncated), dict(info)

    def close(self) -> None:
        self._env.close()
