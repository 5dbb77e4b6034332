"""The surface every real world shares: 64x64 RGB frames, named discrete actions, pose in ``info``."""

from __future__ import annotations

from typing import Any

import cv2
import gymnasium
import numpy as np

RESOLUTION = (64, 64)  # (H, W) of every frame a real world returns


def to_frame(image: np.ndarray, resolution: tuple[int, int] = RESOLUTION) -> np.ndarray:
    """Any (h, w, 3) uint8 RGB image -> contiguous uint8 (H, W, 3).

    INTER_AREA averages the source pixels under each target pixel: downscaling a 160x120 game
    screen with it keeps thin lines and textures instead of aliasing them.
    """
    height, width = resolution
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image, dtype=np.uint8)


class RealWorld(gymnasium.Env):
    """A game that generates trajectories, seen as 64x64 RGB frames.

    Subclasses set ``world_name`` (the canonical spec, as :func:`far_world.envs.real.make_real_world` takes
    it), ``action_names``, ``frame_skip`` (engine frames per step), ``extra_keys`` (``info`` arrays
    present at reset and every step, saved per frame by the collector) and ``cell_size`` (the
    length, in ``info["agent_pos"]`` units, of a corridor-wide stretch of floor, for exploration
    policies that steer by pose).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 15}
    world_name: str = ""
    extra_keys: tuple[str, ...] = ()
    cell_size: float = 1.0

    def __init__(self, action_names: list[str], frame_skip: int, render_mode: str | None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{type(self).__name__} renders only {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.action_names = list(action_names)
        self.frame_skip = int(frame_skip)
        self.action_space = gymnasium.spaces.Discrete(len(self.action_names))
        self.observation_space = gymnasium.spaces.Box(0, 255, (*RESOLUTION, 3), np.uint8)
        self._frame = np.zeros((*RESOLUTION, 3), np.uint8)

    def render(self) -> np.ndarray | None:
        """The last observed frame, uint8 (64, 64, 3), in ``rgb_array`` mode."""
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def _check_action(self, action: Any) -> int:
        index = int(action)
        if not 0 <= index < len(self.action_names):
            raise ValueError(f"{self.world_name}: action {index} outside Discrete({len(self.action_names)})")
        return index
