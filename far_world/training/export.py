"""Assembling the released one-file world model from a finished FAR run."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from far_world.checkpoint import WorldCheckpoint, save_world_checkpoint
from far_world.data.clips import EpisodeStore
from far_world.data.episodes import DatasetMeta
from far_world.model.autoencoder import FrameAutoencoder
from far_world.model.config import FARConfig


def prompt_clips(
    folder: str | os.PathLike, count: int, frames: int, action_nvec: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``frames`` frames of ``count`` episodes spread over ``folder``.

    Returns uint8 (P, T, H, W, 3) and int64 actions (P, T) or (P, T, K) in the model's
    convention (the action into each frame; the null action for the episode's first).
    """
    store = EpisodeStore(folder, min_frames=frames, action_nvec=action_nvec)
    count = min(count, len(store))
    picks = torch.linspace(0, len(store) - 1, count).round().long().unique().tolist()
    windows = [store.window(i, 0, frames) for i in picks]
    frames_out = torch.stack([torch.from_numpy(w["frames"]) for w in windows])
    actions_out = torch.stack([torch.from_numpy(w["actions"]) for w in windows]).long()
    return frames_out, actions_out


def export_world(
    path: str | os.PathLike,
    far_config: FARConfig,
    far_state: dict[str, torch.Tensor],
    ae: FrameAutoencoder,
    meta: DatasetMeta,
    prompt_folders: Sequence[str | os.PathLike],
    num_prompts: int,
    prompt_frames: int,
    summary: dict[str, Any],
) -> Path:
    """Write the released checkpoint; prompts come from the first of ``prompt_folders`` that
    has episodes of ``prompt_frames`` frames (the test split first, the train split as fallback)."""
    frames = actions = None
    for folder in prompt_folders:
        try:
            frames, actions = prompt_clips(folder, num_prompts, prompt_frames, far_config.action_nvec)
            break
        except (ValueError, FileNotFoundError) as exc:
            warnings.warn(f"no prompt clips from {folder}: {exc}", stacklevel=2)
    if frames is None:
        raise ValueError(f"no episode of {prompt_frames} frames in {list(map(str, prompt_folders))} for prompts")
    ckpt = WorldCheckpoint(
        far_config=far_config,
        ae_config=ae.cfg,
        ae_state={k: v.detach().cpu() for k, v in ae.state_dict().items()},
        far_state=far_state,
        action_names=list(meta.action_names),
        action_space=dict(meta.action_space),
        prompt_frames=frames,
        prompt_actions=actions,
        summary=summary,
        world=meta.world,
        world_kwargs=dict(meta.info.get("world_kwargs", {})),
    )
    return save_world_checkpoint(path, ckpt)
