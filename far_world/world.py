"""WorldModel: a released checkpoint as a batched, KV-cached next-frame predictor over pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

from far_world.checkpoint import WorldCheckpoint, load_world_checkpoint
from far_world.model.autoencoder import FrameAutoencoder
from far_world.model.far import FARModel

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "maze.pt"
CHECKPOINT_ENV_VAR = "FAR_WORLD_CKPT"


def default_checkpoint_path() -> Path:
    """The released default world (``checkpoints/maze.pt``), or ``$FAR_WORLD_CKPT`` when set."""
    return Path(os.environ.get(CHECKPOINT_ENV_VAR, DEFAULT_CHECKPOINT))


def action_space_from_spec(spec: dict[str, Any]) -> gymnasium.spaces.Space:
    if spec.get("type") == "discrete":
        return gymnasium.spaces.Discrete(int(spec["n"]))
    if spec.get("type") == "multi_discrete":
        return gymnasium.spaces.MultiDiscrete(np.asarray(spec["nvec"], dtype=np.int64))
    raise ValueError(f"unsupported action space {spec!r}")


@dataclass
class WorldStep:
    frames: np.ndarray  # (B, H, W, 3) uint8
    rewards: np.ndarray  # (B,) float32, predicted by the reward head
    terminated: np.ndarray  # (B,) bool, termination head's probability > 0.5


class WorldModel:
    """B learned worlds stepped together: pixels in, pixels out, context kept in a KV cache.

    Context actions follow the episode convention (``actions[t]`` leads from ``frames[t]`` to
    ``frames[t+1]``, so T frames come with T-1 actions); the first context frame gets the null
    action. Sampling settings (Euler steps, guidance, FlexRoPE slope) can change between steps.
    """

    def __init__(self, ckpt: WorldCheckpoint, device: str | torch.device = "cpu", batch_size: int = 1) -> None:
        self.device = torch.device(device)
        self.checkpoint = ckpt
        self.autoencoder = FrameAutoencoder(ckpt.ae_config).to(self.device).eval()
        self.far = FARModel(ckpt.far_config).to(self.device).eval()
        try:
            self.autoencoder.load_state_dict(ckpt.ae_state)
            self.far.load_state_dict(ckpt.far_state)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint weights do not match its config: {exc}") from exc
        self.batch_size = int(batch_size)
        self.world_spec = ckpt.world
        self.action_names = list(ckpt.action_names)
        self.action_space_spec = dict(ckpt.action_space)
        self.action_space = action_space_from_spec(self.action_space_spec)
        self.action_shape: tuple[int, ...] = tuple(self.action_space.shape)
        self.resolution: tuple[int, int] = tuple(int(s) for s in ckpt.prompt_frames.shape[2:4])
        self.prompt_frames = ckpt.prompt_frames.numpy()
        # Bundled prompts are stored in the model convention (action into each frame): drop the first.
        self.prompt_actions = ckpt.prompt_actions[:, 1:].numpy()
        defaults = ckpt.summary.get("inference", {})
        self.sampling_steps = int(defaults.get("sampling_steps", 4))
        self.guidance = float(defaults.get("guidance", 1.0))
        self.far.flex_rope_slope = float(defaults.get("flex_rope_slope", ckpt.far_config.flex_rope_slope))
        self._null = torch.tensor(ckpt.far_config.action_nvec, dtype=torch.long, device=self.device)
        self._nvec = np.asarray(ckpt.far_config.action_nvec, dtype=np.int64)  # classes per component
        self._state = None
        self._generator = torch.Generator(self.device)
        self.frame_index = np.zeros(self.batch_size, np.int64)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 1) -> "WorldModel":
        """Load a checkpoint file (``None``: the released default world)."""
        if path is None:
            path = default_checkpoint_path()
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"the default checkpoint {path} is missing: pass a checkpoint path, set "
                    f"${CHECKPOINT_ENV_VAR}, or train one (docs/training.md)"
                )
        return cls(load_world_checkpoint(path), device=device, batch_size=batch_size)

    def configure(
        self, sampling_steps: int | None = None, guidance: float | None = None, flex_rope_slope: float | None = None
    ) -> None:
        """Change sampling settings; ``None`` keeps the current value."""
        if sampling_steps is not None:
            if int(sampling_steps) < 1:
                raise ValueError(f"sampling_steps must be >= 1, got {sampling_steps}")
            self.sampling_steps = int(sampling_steps)
        if guidance is not None:
            self.guidance = float(guidance)
        if flex_rope_slope is not None:
            if float(flex_rope_slope) < 0:
                raise ValueError(f"flex_rope_slope must be >= 0, got {flex_rope_slope}")
            self.far.flex_rope_slope = float(flex_rope_slope)

    @property
    def context_length(self) -> np.ndarray:
        """Frames currently held in each row's context (long-term + short-term)."""
        if self._state is None:
            return np.zeros(self.batch_size, np.int64)
        return self._state.context_length.cpu().numpy().astype(np.int64)

    def _encode_context(self, frames: np.ndarray, actions: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (R,T,H,W,3) uint8, actions (R,T-1[,K]) -> latents (R,T,C,h,w), actions into frames (R,T,K)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[2:] != (*self.resolution, 3):
            raise ValueError(f"context frames must be uint8 (B,T,{self.resolution[0]},{self.resolution[1]},3), got {frames.dtype} {frames.shape}")
        rows, steps = frames.shape[:2]
        k = len(self._null)
        into = self._null.expand(rows, steps, k).clone()
        if actions is not None:
            actions = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device).reshape(rows, steps - 1, -1)
            if actions.shape[-1] != k:
                raise ValueError(f"context actions must have {k} component(s), got shape {tuple(actions.shape)}")
            into[:, 1:] = actions
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).reshape(rows * steps, *frames.shape[2:])
        with torch.no_grad():
            latents = self.autoencoder.encode(pixels.to(self.device))
        return latents.reshape(rows, steps, *latents.shape[1:]), into

    def reset(self, frames: np.ndarray, actions: np.ndarray | None = None, seed: int | None = None) -> None:
        """Start all B worlds from context frames (B,T,H,W,3) uint8 and actions (B,T-1[,K])."""
        if len(frames) != self.batch_size:
            raise ValueError(f"reset needs context for all {self.batch_size} worlds, got {len(frames)}")
        if seed is not None:
            self._generator.manual_seed(int(seed))
        latents, into = self._encode_context(frames, actions)
        self._state = self.far.new_state(self.batch_size, self.device)
        self.far.prefill(self._state, latents, into, generator=self._generator)
        self.frame_index[:] = 0

    def reset_rows(self, rows: np.ndarray, frames: np.ndarray, actions: np.ndarray | None = None) -> None:
        """Restart the worlds flagged in ``rows`` (B,) bool from R new contexts (R,T,H,W,3)."""
        if self._state is None:
            raise RuntimeError("call reset() before reset_rows()")
        rows = np.asarray(rows, dtype=bool)
        latents, into = self._encode_context(frames, actions)
        self.far.reset_rows(self._state, torch.from_numpy(rows).to(self.device), latents, into, generator=self._generator)
        self.frame_index[rows] = 0

    def step(self, actions: np.ndarray) -> WorldStep:
        """Advance every world by one frame; actions (B,) for Discrete, (B,K) for MultiDiscrete."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        expected = (self.batch_size, *self.action_shape)
        if actions.shape != expected or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers of shape {expected}, got {actions.dtype} {actions.shape}")
        flat = actions.reshape(self.batch_size, -1)
        if (flat < 0).any() or (flat >= self._nvec).any():
            raise ValueError(f"actions {actions.tolist()} are outside the action space {self.action_space}")
        out = self.far.generate(
            self._state,
            torch.as_tensor(actions, dtype=torch.long, device=self.device),
            steps=self.sampling_steps,
            guidance=self.guidance,
            generator=self._generator,
        )
        with torch.no_grad():
            frames = self.autoencoder.decode(out.latents)
        self.frame_index += 1
        return WorldStep(
            frames=frames.cpu().numpy(),
            rewards=out.reward.float().cpu().numpy(),
            terminated=(out.terminated_prob > 0.5).cpu().numpy(),
        )
