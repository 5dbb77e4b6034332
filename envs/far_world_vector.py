"""The native vector FARWorld-v0: all worlds step in one batched forward pass."""

from __future__ import annotations

import time
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.context import ContextSource, validate_context
from far_world.world import WorldModel


class FARWorldVectorEnv(VectorEnv):
    """``num_envs`` learned worlds sharing one model and one batched KV cache.

    Autoreset follows Gymnasium's default (next step): the step after an episode ends
    returns that world's new first frame, with reward 0, and ignores its action. The ended
    world still rides along in that step's batch: the batched forward costs the same either way.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        ckpt: str | None = None,
        render_mode: str | None = None,
        context: str = "prompts",
        max_episode_steps: int = 1000,
        sampling_steps: int | None = None,
        guidance: float | None = None,
        flex_rope_slope: float | None = None,
        device: str = "cpu",
        timing: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.world = WorldModel.load(ckpt, device=device, batch_size=num_envs)
        self.world.configure(sampling_steps=sampling_steps, guidance=guidance, flex_rope_slope=flex_rope_slope)
        self.context = ContextSource.from_spec(context, self.world)
        self.max_episode_steps = int(max_episode_steps)
        self.timing = timing  # as in FARWorldEnv: latency enters info only on request
        self.last_step_latency_s = 0.0
        h, w = self.world.resolution
        self.single_observation_space = gymnasium.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.single_action_space = self.world.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._frames = np.zeros((num_envs, h, w, 3), np.uint8)
        self._steps = np.zeros(num_envs, np.int64)
        self._autoreset = np.zeros(num_envs, bool)
        self._started = False

    def _sample_contexts(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.context.sample(self.np_random) for _ in range(n)]
        return np.stack([f for f, _ in pairs]), np.stack([a for _, a in pairs])

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, list):
            seed = seed[0]
        super().reset(seed=seed)
        options = options or {}
        if "frames" in options:
            batch = np.asarray(options["frames"])
            if batch.ndim != 5 or len(batch) != self.num_envs:
                raise ValueError(f"options['frames'] must be ({self.num_envs},T,H,W,3), got {batch.shape}")
            acts = options.get("actions")
            checked = [validate_context(batch[i], None if acts is None else acts[i], self.world) for i in range(self.num_envs)]
            frames = np.stack([f for f, _ in checked])
            actions = None if acts is None else np.stack([a for _, a in checked])
        else:
            frames, actions = self._sample_contexts(self.num_envs)
        self.world.reset(frames, actions, seed=int(self.np_random.integers(2**31)))
        self._frames = frames[:, -1].copy()
        self._steps[:] = 0
        self._autoreset[:] = False
        self._started = True
        return self._frames.copy(), self._info(0.0)

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64)
        if not self.action_space.contains(actions.astype(self.action_space.dtype)):
            raise ValueError(f"actions {actions.tolist()} are outside the action space {self.action_space}")
        start = time.perf_counter()
        out = self.world.step(actions)
        rewards = out.rewards.astype(np.float64)
        terminated = out.terminated.copy()
        self._frames = out.frames.copy()
        self._steps += 1
        done_before = self._autoreset
        if done_before.any():
            frames, ctx_actions = self._sample_contexts(int(done_before.sum()))
            self.world.reset_rows(done_before, frames, ctx_actions)
            self._frames[done_before] = frames[:, -1]
            self._steps[done_before] = 0
            rewards[done_before] = 0.0
            terminated[done_before] = False
        truncated = (self._steps >= self.max_episode_steps) & ~terminated
        self._autoreset = terminated | truncated
        self.last_step_latency_s = time.perf_counter() - start
        return self._frames.copy(), rewards, terminated, truncated, self._info(self.last_step_latency_s)

    def _info(self, latency: float) -> dict[str, Any]:
        every = np.ones(self.num_envs, bool)
        info = {
            "frame_index": self.world.frame_index.copy(),
            "_frame_index": every,
            "context_length": self.world.context_length.copy(),
            "_context_length": every,
        }
        if self.timing:
            info["step_latency_s"] = np.full(self.num_envs, latency)
            info["_step_latency_s"] = every
        return info

    def render(self):
        if self.render_mode == "rgb_array":
            return self._frames.copy()
        return None
