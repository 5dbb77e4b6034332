"""The native vector FARWorld-v0: all worlds step in one batched forward pass."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from far_world.action_spaces import check_actions
from far_world.envs.context import ContextSource, validate_context
from far_world.envs.stepping import EpisodeStepper
from far_world.world import WorldModel


class FARWorldVectorEnv(VectorEnv):
    """``num_envs`` learned worlds sharing one model and one batched KV cache.

    Autoreset follows Gymnasium's default (next step): the step after an episode ends
    returns that world's new first frame, with reward 0, and ignores its action. With
    ``autoreset_mode="SameStep"`` the step that ends an episode returns the next one's first
    frame, the last frame in ``info["final_obs"]`` (what SB3 expects). Stepping, truncation and
    autoreset are :class:`EpisodeStepper`'s, the loop the single env runs too.
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
        context_noise: float | None = None,
        time_shift: float | None = None,
        start_time: float | None = None,
        device: str = "cpu",
        timing: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.world = WorldModel.load(ckpt, device=device, batch_size=num_envs)
        self.world.configure(
            sampling_steps=sampling_steps, guidance=guidance, flex_rope_slope=flex_rope_slope, context_noise=context_noise,
            time_shift=time_shift, start_time=start_time,
        )
        self.context = ContextSource.from_spec(context, self.world)
        self.max_episode_steps = int(max_episode_steps)
        self.timing = timing  # as in FARWorldEnv: latency enters info only on request
        self.last_step_latency_s = 0.0
        h, w = self.world.resolution
        self.single_observation_space = gymnasium.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.single_action_space = self.world.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.episodes = EpisodeStepper(self.world, self.context, self.max_episode_steps)
        self.set_autoreset_mode(autoreset_mode)
        self._started = False

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.episodes.autoreset

    def set_autoreset_mode(self, mode: AutoresetMode | str) -> None:
        """NEXT_STEP (Gymnasium's default) or SAME_STEP, by enum, value ("SameStep") or name ("same_step")."""
        if isinstance(mode, str) and not isinstance(mode, AutoresetMode):
            by_name = {m.name.lower(): m for m in AutoresetMode}
            mode = by_name.get(mode.lower(), mode)
        try:
            mode = AutoresetMode(mode)
        except ValueError:
            mode = None
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError("autoreset_mode must be NEXT_STEP or SAME_STEP (the worlds restart themselves)")
        self.episodes.autoreset = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}

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
            obs = self.episodes.reset(self.np_random, frames, actions, options.get("carried"))  # (B,K) or (B,T,K)
        else:
            obs = self.episodes.reset(self.np_random, carried=options.get("carried"))
        self._started = True
        return obs, self._info(0.0)

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = check_actions(self.action_space, actions)
        out = self.episodes.step(actions, self.np_random)
        self.last_step_latency_s = out.latency_s
        info = self._info(out.latency_s)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and out.restarted.any():
            info["final_obs"] = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(out.restarted):
                info["final_obs"][i] = out.final_frames[i]
            info["_final_obs"] = out.restarted
        return out.frames, out.rewards, out.terminated, out.truncated, info

    def _info(self, latency: float) -> dict[str, Any]:
        every = np.ones(self.num_envs, bool)
        info = {
            "frame_index": self.world.frame_index.copy(),
            "_frame_index": every,
            "context_length": self.world.context_length.copy(),
            "_context_length": every,
        }
        carried = self.world.carried
        for i, name in enumerate(self.world.carried_names):  # the carried game variables (doom's health)
            info[name], info[f"_{name}"] = carried[:, i].copy(), every
        if self.timing:
            info["step_latency_s"] = np.full(self.num_envs, latency)
            info["_step_latency_s"] = every
        return info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.episodes.frames.copy()
        return None
