"""Revisit windows: training clips whose last frame looks back past the short window.

A world at play holds its recent frames at full tokens and older ones compressed. When the
player turns back to a view that has left the short window, only the long-term frames can tell
the model what it looks like; if training rarely asks for that, the model learns to ignore them
(on the maze the long-term frames added nothing at revisits; docs/RESULTS.md). A window of
``L`` frames ending at frame t is a revisit when some long-term frame of it (t - L + 1 ..
t - short_window) is closer to frame t than ``margin`` times the closest short-window context
frame (t - short_window + 1 .. t - 1). Distances are squared L2 between whole observations,
latents in a latent cache: no world-specific labels are needed.
"""

from __future__ import annotations

import numpy as np

from far_world.data.clips import EpisodeStore


def lookback_distances(observations: np.ndarray, max_lookback: int) -> np.ndarray:
    """Squared L2 distance of each frame to each of the ``max_lookback`` frames before it:
    observations (N, ...) -> float32 (N, max_lookback + 1), entry [t, k] = |o_t - o_{t-k}|^2 and
    inf where t - k < 0 (column 0 is each frame's distance to itself, 0)."""
    flat = np.asarray(observations, np.float32).reshape(len(observations), -1)
    out = np.full((len(flat), max_lookback + 1), np.inf, np.float32)
    for k in range(max_lookback + 1):
        if k < len(flat):
            out[k:, k] = ((flat[k:] - flat[: len(flat) - k]) ** 2).sum(axis=1)
    return out


def revisit_ends(distances: np.ndarray, clip_len: int, short_window: int, margin: float) -> np.ndarray:
    """Frames t of one episode that end a revisit window of ``clip_len`` frames (module doc):
    distances from :func:`lookback_distances` (N, >= clip_len) -> int64 indices t >= clip_len - 1."""
    if clip_len <= short_window:
        return np.zeros(0, np.int64)  # no long-term frame in the window
    long_term = distances[:, short_window:clip_len].min(axis=1)
    short_term = distances[:, 1:short_window].min(axis=1)
    ends = np.nonzero(long_term < margin * short_term)[0]
    return ends[ends >= clip_len - 1].astype(np.int64)


class RevisitWindows:
    """The revisit windows of every episode of a store, by clip length (computed once per length)."""

    def __init__(self, store: EpisodeStore, short_window: int, max_clip_len: int, margin: float = 0.5) -> None:
        if short_window < 2 or max_clip_len < 1 or not 0.0 < margin <= 1.0:
            got = f"{short_window}, {max_clip_len}, {margin}"
            raise ValueError(f"need short_window >= 2, max_clip_len >= 1 and margin in (0, 1], got {got}")
        self.short_window, self.max_clip_len, self.margin = short_window, max_clip_len, margin
        self._distances = [lookback_distances(store.observations(i), max_clip_len - 1) for i in range(len(store))]
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def windows(self, clip_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(episodes, starts) of every revisit window of ``clip_len`` frames, int64 each."""
        if clip_len not in self._windows:
            if clip_len > self.max_clip_len:
                raise ValueError(f"clip_len {clip_len} is longer than the lookback computed ({self.max_clip_len} frames)")
            ends = [revisit_ends(d, clip_len, self.short_window, self.margin) for d in self._distances]
            episodes = np.concatenate([np.full(len(e), i, np.int64) for i, e in enumerate(ends)])
            self._windows[clip_len] = episodes, np.concatenate(ends) - (clip_len - 1)
        return self._windows[clip_len]

    def share(self, clip_len: int) -> float:
        """The share of all windows of ``clip_len`` frames that are revisits (for the log)."""
        total = sum(max(len(d) - clip_len + 1, 0) for d in self._distances)
        return len(self.windows(clip_len)[0]) / max(total, 1)
