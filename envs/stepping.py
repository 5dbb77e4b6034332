"""Episodes of a learned world, stepped in one batch: the loop behind FARWorld-v0 (single and
vector) and the SB3 adapter, so that truncation and autoreset are decided in one place.

Truncation follows Gymnasium's ``TimeLimit``: an episode is truncated at the step that reaches
``max_episode_steps``, whether or not it also terminated there (both flags may be set).
Autoreset modes are Gymnasium's: DISABLED (the single env: the caller resets), NEXT_STEP (the
vector env's default: the step after an episode ends returns the next episode's first frame,
with reward 0, ignoring that world's action) and SAME_STEP (the step that ends an episode
already returns the next one's first frame; the last frame comes back in ``final_frames``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from gymnasium.vector import AutoresetMode

from far_world.envs.context import ContextSource
from far_world.world import WorldModel


@dataclass
class EpisodeStep:
    """What one step of B episodes returns."""

    frames: np.ndarray  # (B,H,W,3) uint8: each world's observation
    rewards: np.ndarray  # (B,) float64
    terminated: np.ndarray  # (B,) bool
    truncated: np.ndarray  # (B,) bool
    restarted: np.ndarray  # (B,) bool: worlds that began a new episode in this step
    final_frames: np.ndarray  # (B,H,W,3) uint8: same-step autoreset, the ended episodes' last frames (rows in `restarted`)
    latency_s: float


class EpisodeStepper:
    """B episodes of one world model: reset from a context source, step, truncate and autoreset.

    The world model is stepped for every row in one batched pass, also rows that are about to
    restart (next-step mode): a batched forward costs the same either way.
    """

    def __init__(
        self,
        world: WorldModel,
        context: ContextSource,
        max_episode_steps: int | None = None,
        autoreset: AutoresetMode = AutoresetMode.DISABLED,
    ) -> None:
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.world = world
        self.context = context
        self.max_episode_steps = max_episode_steps
        self.autoreset = AutoresetMode(autoreset)
        h, w = world.resolution
        self.frames = np.zeros((world.batch_size, h, w, 3), np.uint8)
        self.steps = np.zeros(world.batch_size, np.int64)
        self._pending_reset = np.zeros(world.batch_size, bool)
        self._started = False

    @property
    def num_worlds(self) -> int:
        return self.world.batch_size

    def sample_contexts(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """n contexts from the source: frames (n,T,H,W,3), actions (n,T-1[,K]) and the carried
        variables at their frames (n,T,K), None where the source has none (start values)."""
        contexts = [self.context.sample(rng) for _ in range(n)]
        carried = None if self.context.carried is None else np.stack([c.carried for c in contexts])
        return np.stack([c.frames for c in contexts]), np.stack([c.actions for c in contexts]), carried

    def reset(
        self,
        rng: np.random.Generator,
        frames: np.ndarray | None = None,
        actions: np.ndarray | None = None,
        carried: np.ndarray | None = None,
    ) -> np.ndarray:
        """Start every episode: from contexts drawn with ``rng``, or from (B,T,H,W,3) frames and
        (B,T-1[,K]) actions already checked by the caller, with the carried variables (B,K) or
        (B,T,K) if given (else those the drawn contexts recorded, else the world's start values):
        a caller may set the health of a drawn context. The world's noise is seeded from ``rng``.
        Returns the first observations (B,H,W,3)."""
        if frames is None:
            frames, actions, recorded = self.sample_contexts(rng, self.num_worlds)
            carried = recorded if carried is None else carried
        self.world.reset(frames, actions, seed=int(rng.integers(2**31)), carried=carried)
        self.frames = np.array(frames[:, -1])
        self.steps[:] = 0
        self._pending_reset[:] = False
        self._started = True
        return self.frames.copy()

    def step(self, actions: np.ndarray, rng: np.random.Generator) -> EpisodeStep:
        """Advance every episode by one frame with actions (B[,K]); new contexts are drawn with ``rng``."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        start = time.perf_counter()
        out = self.world.step(actions)
        frames, rewards, terminated = out.frames, out.rewards.astype(np.float64), out.terminated.copy()
        self.steps += 1
        final_frames = np.zeros_like(frames)
        if self.autoreset == AutoresetMode.NEXT_STEP:
            restarted = self._pending_reset
            self._restart(restarted, frames, rng)
            rewards[restarted], terminated[restarted] = 0.0, False
            truncated = self._truncated()
            self._pending_reset = terminated | truncated
        else:
            truncated = self._truncated()
            restarted = (terminated | truncated) if self.autoreset == AutoresetMode.SAME_STEP else np.zeros_like(terminated)
            final_frames[restarted] = frames[restarted]
            self._restart(restarted, frames, rng)
        self.frames = frames
        return EpisodeStep(
            frames.copy(), rewards, terminated, truncated, restarted.copy(), final_frames, time.perf_counter() - start
        )

    def _truncated(self) -> np.ndarray:
        if self.max_episode_steps is None:
            return np.zeros(self.num_worlds, bool)
        return self.steps >= self.max_episode_steps

    def _restart(self, rows: np.ndarray, frames: np.ndarray, rng: np.random.Generator) -> None:
        """Start new episodes in the flagged rows, writing their first frames into ``frames``."""
        if not rows.any():
            return
        new_frames, new_actions, carried = self.sample_contexts(rng, int(rows.sum()))
        self.world.reset_rows(rows, new_frames, new_actions, carried)
        frames[rows] = new_frames[:, -1]
        self.steps[rows] = 0
