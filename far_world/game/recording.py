"""Recording play: videos (.mp4) and episodes in the dataset format (to grow a dataset)."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np

from far_world.data.episodes import DatasetMeta, Episode, episode_paths, read_meta, save_episode, write_meta


class VideoRecorder:
    """Writes RGB uint8 frames to an .mp4 (written incrementally: a crash keeps what was shown)."""

    def __init__(self, path: str | Path, fps: float, frame_hw: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (frame_hw[1], frame_hw[0])
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self._writer.isOpened():
            raise RuntimeError(f"cannot open a video writer for {self.path}")
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_NEAREST)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        self.frames_written += 1

    def close(self) -> None:
        self._writer.release()


class EpisodeRecorder:
    """Collects (frame, action, reward, terminated) as they are played and saves whole episodes.

    Each finished episode is saved atomically as the next ``ep_NNNNNN.npz`` in ``folder``;
    the folder's meta.json describes the world, so the recordings train a model directly.
    """

    def __init__(self, folder: str | Path, meta: DatasetMeta) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = read_meta(self.folder) if (self.folder / "meta.json").is_file() else None
        if existing is not None and (existing.world, existing.action_names) != (meta.world, meta.action_names):
            # One meta.json labels every episode of a folder: a mixed folder would mislabel some.
            raise ValueError(
                f"{self.folder} already holds episodes of world '{existing.world}' with actions "
                f"{existing.action_names}; record '{meta.world}' into another folder"
            )
        write_meta(self.folder, meta)
        taken = {p.stem for p in episode_paths(self.folder)}
        self._names = (f"ep_{i:06d}" for i in itertools.count() if f"ep_{i:06d}" not in taken)
        self._frames: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._terminated: list[bool] = []
        self.saved: list[Path] = []

    def start(self, first_frame: np.ndarray) -> None:
        self.finish()
        self._frames = [first_frame.copy()]

    def add(self, action, frame: np.ndarray, reward: float, terminated: bool) -> None:
        if not self._frames:
            raise RuntimeError("EpisodeRecorder.start() must come before add()")
        self._actions.append(np.asarray(action, dtype=np.int64))
        self._frames.append(frame.copy())
        self._rewards.append(float(reward))
        self._terminated.append(bool(terminated))

    def finish(self) -> Path | None:
        """Save the episode in progress (if it has at least one step) and start afresh."""
        path = None
        if self._actions:
            episode = Episode(
                frames=np.stack(self._frames),
                actions=np.stack(self._actions),
                rewards=np.asarray(self._rewards, np.float32),
                terminated=np.asarray(self._terminated, bool),
            )
            path = save_episode(self.folder / f"{next(self._names)}.npz", episode)
            self.saved.append(path)
        self._frames, self._actions, self._rewards, self._terminated = [], [], [], []
        return path
