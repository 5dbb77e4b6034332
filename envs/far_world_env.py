"""FARWorld-v0: the learned world as a single Gymnasium environment."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from far_world.action_spaces import check_actions
from far_world.envs.context import ContextSource, validate_context
from far_world.envs.stepping import EpisodeStepper
from far_world.world import WorldModel


class FARWorldEnv(gymnasium.Env):
    """One world of a FAR world model; ``step`` predicts the next frame from the cached context.

    Observations are uint8 (H, W, 3) frames; the action space, reward and termination come
    from the checkpoint (its learned heads). The episode limit is Gymnasium's: ``gymnasium.make``
    wraps the env in ``TimeLimit`` (1000 steps, or the caller's ``max_episode_steps``); the env
    itself truncates only when constructed with a ``max_episode_steps`` of its own.
    It steps a batch of one through :class:`EpisodeStepper`, the loop the vector env runs too.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 15}

    def __init__(
        self,
        ckpt: str | None = None,
        render_mode: str | None = None,
        context: str = "prompts",
        max_episode_steps: int | None = None,
        sampling_steps: int | None = None,
        guidance: float | None = None,
        flex_rope_slope: float | None = None,
        context_noise: float | None = None,
        time_shift: float | None = None,
        start_time: float | None = None,
        device: str = "cpu",
        timing: bool = False,
        world_model: WorldModel | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.world = world_model if world_model is not None else WorldModel.load(ckpt, device=device, batch_size=1)
        self.world.configure(
            sampling_steps=sampling_steps, guidance=guidance, flex_rope_slope=flex_rope_slope, context_noise=context_noise,
            time_shift=time_shift, start_time=start_time,
        )
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        # Wall-clock latency is not a function of seed and action, so it enters `info` only on
        # request (Gymnasium's determinism check compares infos); it is always in last_step_latency_s.
        self.timing = timing
        self.last_step_latency_s = 0.0
        self.context = ContextSource.from_spec(context, self.world)
        h, w = self.world.resolution
        self.observation_space = gymnasium.spaces.Box(0, 255, (h, w, 3), np.uint8)
        self.action_space = self.world.action_space
        self.episodes = EpisodeStepper(self.world, self.context, self.max_episode_steps)
        self._frame: np.ndarray | None = None
        self._renderer = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        carried = options.get("carried")  # the carried variables (K,) or per frame (T,K)
        carried = None if carried is None else np.asarray(carried, np.float32)[None]
        if "frames" in options:
            frames, actions = validate_context(options["frames"], options.get("actions"), self.world)
            self._frame = self.episodes.reset(
                self.np_random, frames[None], None if actions is None else actions[None], carried
            )[0]
        else:
            self._frame = self.episodes.reset(self.np_random, carried=carried)[0]
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), self._info(latency=0.0)

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        out = self.episodes.step(check_actions(self.action_space, action)[None], self.np_random)
        self.last_step_latency_s = out.latency_s
        self._frame = out.frames[0]
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), float(out.rewards[0]), bool(out.terminated[0]), bool(out.truncated[0]), self._info(out.latency_s)

    def _info(self, latency: float) -> dict[str, Any]:
        info = {"frame_index": int(self.world.frame_index[0]), "context_length": int(self.world.context_length[0])}
        # The carried game variables (doom's health), as the real world's info names them.
        info.update(zip(self.world.carried_names, self.world.carried[0].tolist()))
        if self.timing:
            info["step_latency_s"] = latency
        return info

    def render(self):
        if self._frame is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self.render_mode == "human":
            if self._renderer is None:
                from far_world.envs.human_renderer import HumanRenderer

                self._renderer = HumanRenderer("FARWorld-v0", self._frame.shape[:2])
            self._renderer.show(self._frame, fps=self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
