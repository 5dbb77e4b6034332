"""TECO's DMLab and Minecraft long-video sets (the data FAR is evaluated on) into episodes.

Source files hold 300 frames each: an ``.npz`` with ``video`` uint8 (T,H,W,3) and ``actions``
int (T,), one action per frame. The published Minecraft set keeps the video beside it as
``<name>.mp4`` and only ``actions`` in ``<name>.npz``; both layouts are read.

The two sets index actions differently, and our format fixes one convention
(``actions[t]`` is taken after ``frames[t]`` and leads to ``frames[t+1]``):
  DMLab      ``actions[t]`` drives t -> t+1; the last one leads nowhere and is dropped.
  Minecraft  ``actions[t]`` produced frame t; ``actions[0]`` is a placeholder 0, so the
             action from t to t+1 is ``actions[t+1]``: shift by one.
Either way an episode gets all T frames and T-1 actions. TECO's agents walk at random
without rewards or ends: rewards are 0, nothing terminates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from far_world.data.episodes import DatasetMeta, Episode
from far_world.data.loaders.base import LoaderError
from far_world.data.loaders.video import read_video, resize_frames

TecoVariant = Literal["dmlab", "minecraft"]

# DMLab: TECO's random walk uses three action ids (0, 1, 2); its collection code does not
# name them, so neither do we rather than guess an order of forward / turn left / turn right.
TECO_DMLAB_ACTIONS = ("action_0", "action_1", "action_2")
# Minecraft (TECO's collector): 1 = forward with jump, 2 = turn left 20 degrees, 3 = turn right
# 20 degrees; 0 only marks the first frame, which no action produced. The ids are kept as they
# are (4 classes, as in FAR's configs) so that checkpoints agree with FAR's numbering.
TECO_MINECRAFT_ACTIONS = ("placeholder", "forward_jump", "turn_left", "turn_right")

_ACTION_NAMES: dict[str, tuple[str, ...]] = {"dmlab": TECO_DMLAB_ACTIONS, "minecraft": TECO_MINECRAFT_ACTIONS}
_NATIVE_RESOLUTION = {"dmlab": 64, "minecraft": 128}


class TecoLoader:
    """Reads TECO ``.npz`` (or ``.npz`` + ``.mp4``) files; ``resolution`` (e.g. 64) resizes square frames."""

    def __init__(self, variant: TecoVariant, resolution: int | None = None) -> None:
        if variant not in _ACTION_NAMES:
            raise ValueError(f"unknown TECO variant {variant!r}; expected 'dmlab' or 'minecraft'")
        self.variant = variant
        self.name = f"teco-{variant}"
        self.resolution = resolution

    @property
    def _size(self) -> tuple[int, int] | None:
        return None if self.resolution is None else (self.resolution, self.resolution)

    def find(self, src: Path) -> list[Path]:
        """Every ``.npz`` under ``src`` (TECO nests them as ``{train,test}/<shard>/<n>.npz``)."""
        if src.is_file():
            return [src]
        return sorted(p for p in src.rglob("*.npz") if not p.name.startswith("."))

    def load(self, item: Path) -> Episode:
        """Convert one TECO file into an episode of T frames and T-1 actions (see the module doc)."""
        with np.load(item, allow_pickle=False) as data:
            if "actions" not in data:
                raise LoaderError(f"{item}: no 'actions' array (keys: {sorted(data.keys())})")
            actions = np.asarray(data["actions"])
            video = np.asarray(data["video"]) if "video" in data else None
        if video is None:
            mp4 = item.with_suffix(".mp4")
            if not mp4.is_file():
                raise LoaderError(f"{item}: no 'video' array and no {mp4.name} beside it")
            video = read_video(mp4, self._size)
        else:
            if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
                raise LoaderError(f"{item}: video must be uint8 (T,H,W,3), got {video.dtype} {video.shape}")
            video = resize_frames(video, self._size)
        if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer):
            raise LoaderError(f"{item}: actions must be integer (T,), got {actions.dtype} {actions.shape}")
        if len(actions) != len(video):
            raise LoaderError(f"{item}: {len(actions)} actions for {len(video)} frames (TECO has one per frame)")
        if len(video) < 2:
            raise LoaderError(f"{item}: needs at least two frames")
        steps = actions[:-1] if self.variant == "dmlab" else actions[1:]
        num_actions = len(_ACTION_NAMES[self.variant])
        if steps.min() < 0 or steps.max() >= num_actions:
            raise LoaderError(f"{item}: action ids {steps.min()}..{steps.max()} outside 0..{num_actions - 1}")
        n = len(steps)
        return Episode(
            frames=np.ascontiguousarray(video),
            actions=steps.astype(np.int64),
            rewards=np.zeros(n, np.float32),
            terminated=np.zeros(n, np.bool_),
        )

    def meta(self) -> DatasetMeta:
        side = self.resolution or _NATIVE_RESOLUTION[self.variant]
        names = list(_ACTION_NAMES[self.variant])
        return DatasetMeta(
            world=self.name,
            action_names=names,
            action_space={"type": "discrete", "n": len(names)},
            resolution=[side, side],
            policy="TECO random walk",
            info={"source_format": self.name},
        )
