"""Memory Maze, 9x9 to 15x15 (dm_control / MuJoCo): the DMLab-style 3D maze built to test long-term memory."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

# MuJoCo picks its GL backend at import; EGL renders headless (Mesa's software EGL on a CPU box).
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

from far_world.envs.real.base import RealWorld  # noqa: E402
from far_world.envs.real.errors import UnknownWorldError  # noqa: E402


@contextlib.contextmanager
def _gym_alias() -> Iterator[None]:
    """Let ``import memory_maze`` succeed without the old ``gym`` package, for the import only.

    memory_maze's ``__init__`` imports ``gym`` to register its gym environments; the real old gym
    breaks on numpy 2. We only use its dm_env API, so ``gym`` and ``gym.spaces`` alias Gymnasium
    (its gym wrapper classes still define) and ``register`` is a no-op: aliasing
    ``gym.envs.registration`` too would re-execute Gymnasium's registry under a second name and
    add ids whose old-API wrapper Gymnasium cannot drive. The aliases are removed afterwards, so
    a later ``import gym`` elsewhere in the process is not silently handed Gymnasium.
    """
    registration = types.ModuleType("gym.envs.registration")
    registration.register = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    envs = types.ModuleType("gym.envs")
    envs.registration = registration  # type: ignore[attr-defined]
    aliases = {"gym": gymnasium, "gym.spaces": gymnasium.spaces, "gym.envs": envs, "gym.envs.registration": registration}
    added = [name for name, module in aliases.items() if name not in sys.modules]
    for name in added:
        sys.modules[name] = aliases[name]
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


with _gym_alias():
    from memory_maze import tasks  # noqa: E402

from far_world.envs.real import maze_contacts  # noqa: E402

maze_contacts.install()

# dm_control logs this on every reset of the maze (its walker has no free joint): harmless noise
# that would interleave with the collector's progress bar.
logging.getLogger("absl").addFilter(_DropMessage("Cannot set velocity on Entity with no free joint"))

# memory-maze's own discrete action set, in its order; left and right turn in place.
MAZE_ACTION_NAMES = ["noop", "forward", "left", "right", "forward+left", "forward+right"]


MAZE_SIZES = ("9x9", "11x11", "13x13", "15x15")


class MemoryMazeWorld(RealWorld):
    """memory_maze_SIZE with its ExtraObs: ``info["agent_pos"]`` (2,) in maze cells, ``info["agent_dir"]`` (2,).

    ``size`` is one of memory-maze's tasks, 9x9 (the default, spec ``maze``) to 15x15 (spec
    ``maze:15x15``); larger mazes have more targets and longer episodes.

    One step is one 4 Hz control step of the package (its physics substeps in between), so
    ``frame_skip`` is 1. Episodes last 1000 steps (9x9) and end truncated; rewards are +1 per target
    reached. ``reset(seed=s)`` rebuilds the maze (about 1.5 s): the layout comes from a generator
    seeded only at construction, so a rebuild is the one way to make episode ``s`` reproducible.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    world_name = "maze"
    extra_keys = ("agent_pos", "agent_dir")
    cell_size = 1.0

    def __init__(self, seed: int | None = None, render_mode: str | None = None, size: str = "9x9") -> None:
        if size not in MAZE_SIZES:
            raise UnknownWorldError(f"memory-maze has no {size!r} maze; sizes: {', '.join(MAZE_SIZES)}")
        super().__init__(MAZE_ACTION_NAMES, frame_skip=1, render_mode=render_mode)
        self.size = size
        self.world_name = "maze" if size == "9x9" else f"maze:{size}"
        self._env = self._build(seed)

    def _build(self, seed: int | None) -> Any:
        make_task = getattr(tasks, f"memory_maze_{self.size}")
        return make_task(global_observables=True, image_only_obs=False, seed=seed)

    def _observe(self, observation: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        self._frame = np.ascontiguousarray(observation["image"], dtype=np.uint8)
        info = {
            "agent_pos": np.asarray(observation["agent_pos"], np.float32),
            "agent_dir": np.asarray(observation["agent_dir"], np.float32),
        }
        return self._frame.copy(), info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._env.close()
            self._env = self._build(seed)
        return self._observe(self._env.reset().observation)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        timestep = self._env.step(self._check_action(action))
        frame, info = self._observe(timestep.observation)
        # dm_env ends every maze episode at its time limit with discount 1: a truncation.
        ended = timestep.last()
        terminated = bool(ended and timestep.discount == 0)
        return frame, float(timestep.reward or 0.0), terminated, bool(ended and not terminated), info

    def close(self) -> None:
        self._env.close()
