"""Open-loop rollouts of a world model against real held-out episodes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from far_world.data.episodes import iter_episodes
from far_world.world import WorldModel


@dataclass
class EvalWindows:
    """N windows cut from real episodes: T context frames, then H frames to predict."""

    context_frames: np.ndarray  # (N, T, H, W, 3) uint8
    context_actions: np.ndarray  # (N, T-1[, K]) actions between the context frames
    future_frames: np.ndarray  # (N, Hz, H, W, 3) uint8: the truth
    future_actions: np.ndarray  # (N, Hz[, K]): future_actions[:, 0] leads from the last context frame
    sources: list[str]

    def __len__(self) -> int:
        return len(self.context_frames)


def load_windows(
    folder: str | Path, context: int, horizon: int, max_windows: int = 64, per_episode: int = 1, seed: int = 0
) -> EvalWindows:
    """Cut up to ``per_episode`` random windows from each valid episode of ``folder`` (deterministic)."""
    rng = np.random.default_rng(seed)
    length = context + horizon
    cf, ca, ff, fa, src = [], [], [], [], []
    for path, ep in iter_episodes(folder, mmap=True):
        if len(ep.frames) < length:
            continue
        for start in sorted(rng.choice(len(ep.frames) - length + 1, size=min(per_episode, len(ep.frames) - length + 1), replace=False)):
            frames = np.asarray(ep.frames[start : start + length])
            actions = np.asarray(ep.actions[start : start + length - 1])
            cf.append(frames[:context])
            ca.append(actions[: context - 1])
            ff.append(frames[context:])
            fa.append(actions[context - 1 :])
            src.append(f"{path.name}@{start}")
            if len(cf) >= max_windows:
                break
        if len(cf) >= max_windows:
            break
    if not cf:
        raise ValueError(f"no episode in {folder} has the {length} frames a window needs")
    return EvalWindows(np.stack(cf), np.stack(ca), np.stack(ff), np.stack(fa), src)


def rollout(
    world: WorldModel, windows: EvalWindows, actions: np.ndarray | None = None, seed: int = 0, progress: bool = True
) -> np.ndarray:
    """Predict every window's future frames (N, Hz, H, W, 3) from its context and ``actions``
    (default: the true future actions), ``world.batch_size`` windows at a time."""
    actions = windows.future_actions if actions is None else actions
    b = world.batch_size
    n, horizon = len(windows), actions.shape[1]
    out = np.zeros((n, horizon, *windows.future_frames.shape[2:]), np.uint8)
    bar = tqdm(total=n * horizon, desc="rollout", unit="frame", disable=not progress, leave=False)
    for lo in range(0, n, b):
        idx = np.arange(lo, lo + b) % n  # pad the last batch by wrapping around; extra rows are dropped
        world.reset(windows.context_frames[idx], windows.context_actions[idx], seed=seed + lo)
        for t in range(horizon):
            step = world.step(actions[idx, t])
            keep = idx[: min(b, n - lo)]
            out[keep, t] = step.frames[: len(keep)]
            bar.update(len(keep))
    bar.close()
    return out


def autoencoder_reconstruction(world: WorldModel, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """decode(encode(frames)) for uint8 frames (..., H, W, 3): the ceiling any rollout can reach."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty_like(flat)
    with torch.no_grad():
        for lo in range(0, len(flat), batch):
            pixels = torch.from_numpy(np.ascontiguousarray(flat[lo : lo + batch])).to(world.device)
            out[lo : lo + batch] = world.autoencoder.decode(world.autoencoder.encode(pixels)).cpu().numpy()
    return out.reshape(frames.shape)
