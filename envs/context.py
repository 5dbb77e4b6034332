"""Where a learned world's first frames come from: bundled prompts, a dataset folder, or the caller."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from far_world.action_spaces import check_actions
from far_world.data.episodes import iter_episodes
from far_world.world import WorldModel


def validate_context(
    frames, actions, world: WorldModel
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check caller-supplied context: frames uint8 (T,H,W,3), actions (T-1,) or (T-1,K) in the action space."""
    frames = np.asarray(frames)
    h, w = world.resolution
    if frames.ndim == 3:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise ValueError(f"context frames must be uint8 (T,{h},{w},3), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError(f"the context is empty: reset needs at least one frame, uint8 (T>=1,{h},{w},3)")
    if actions is None:
        return frames, None
    actions = np.asarray(actions)
    expected = (len(frames) - 1, *world.action_shape)
    if actions.shape != expected:
        raise ValueError(f"context actions must have shape {expected} (one per transition), got {actions.shape}")
    try:
        checked = [check_actions(world.action_space, a) for a in actions]
    except ValueError as exc:
        raise ValueError(f"context {exc}") from None
    return frames, np.asarray(checked, dtype=np.int64).reshape(expected)


@dataclass
class Context:
    """One context to start an episode from."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    actions: np.ndarray  # (T-1[, K]) int64
    carried: np.ndarray | None  # (T, K) the carried game variables at each frame; None: the world's start values


@dataclass
class ContextSource:
    """A bank of (frames, actions) contexts to start episodes from, with the carried game
    variables at their frames where the world carries some and the episodes recorded them."""

    frames: np.ndarray  # (N, T, H, W, 3) uint8
    actions: np.ndarray  # (N, T-1[, K]) int64
    carried: np.ndarray | None = None  # (N, T, K) float32

    @classmethod
    def from_spec(cls, spec: str, world: WorldModel, length: int | None = None) -> "ContextSource":
        """``"prompts"``: the checkpoint's bundled prompt clips; otherwise a folder of episodes."""
        if spec == "prompts":
            return cls(world.prompt_frames, world.prompt_actions)
        folder = Path(spec)
        if not folder.is_dir():
            raise FileNotFoundError(f"context must be 'prompts' or a folder of episodes; {folder} is neither")
        length = length or world.prompt_frames.shape[1]
        frames, actions, carried = [], [], []
        for _, ep in iter_episodes(folder, mmap=True, resolution=world.resolution):
            if len(ep.frames) >= length:
                frames.append(np.array(ep.frames[:length]))
                actions.append(np.array(ep.actions[: length - 1]))
                if all(name in ep.extras for name in world.carried_names):
                    carried.append(np.stack([ep.extras[name][:length] for name in world.carried_names], axis=-1))
        if not frames:
            raise ValueError(f"{folder} holds no valid episode of at least {length} frames")
        # Without a recorded value for every context the world starts all from its start values.
        values = np.asarray(carried, np.float32) if world.carried_names and len(carried) == len(frames) else None
        return cls(np.stack(frames), np.stack(actions), values)

    def sample(self, rng: np.random.Generator) -> Context:
        i = int(rng.integers(len(self.frames)))
        return Context(self.frames[i], self.actions[i], None if self.carried is None else self.carried[i])
