"""Open-loop rollouts of a world model against real held-out episodes.

Rollouts step batches of :class:`WorldModel` worlds (``world.with_batch``: same weights) like
play does, with the two options evaluation needs: the null action (the model unconditioned on
the future) and long-term context switched off. The sampling settings are the world's unless
a :class:`SamplingSettings` value is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from far_world.data.episodes import iter_episodes
from far_world.model.sampler import SamplingSettings
from far_world.world import WorldModel

# One row's context: frames (T,H,W,3) uint8 and the T-1 actions between them (episode convention).
Context = tuple[np.ndarray, np.ndarray]


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

    @property
    def contexts(self) -> list[Context]:
        return list(zip(self.context_frames, self.context_actions))

    def subset(self, rows: Sequence[int] | np.ndarray) -> "EvalWindows":
        rows = np.asarray(rows)
        return EvalWindows(
            self.context_frames[rows], self.context_actions[rows], self.future_frames[rows],
            self.future_actions[rows], [self.sources[i] for i in rows],
        )  # fmt: skip


def load_windows(
    folder: str | Path,
    context: int,
    horizon: int,
    max_windows: int = 64,
    per_episode: int = 1,
    seed: int = 0,
    at_start: bool = False,
) -> EvalWindows:
    """Cut up to ``per_episode`` windows of ``context + horizon`` frames from each valid episode of
    ``folder``, at random starts (deterministic in ``seed``) or, with ``at_start``, at frame 0."""
    rng = np.random.default_rng(seed)
    length = context + horizon
    cf, ca, ff, fa, src = [], [], [], [], []
    for path, ep in iter_episodes(folder, mmap=True):
        if len(ep.frames) < length:
            continue
        choices = len(ep.frames) - length + 1
        starts = [0] if at_start else sorted(rng.choice(choices, size=min(per_episode, choices), replace=False))
        for start in starts:
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


def null_actions(world: WorldModel, rows: int, horizon: int) -> np.ndarray:
    """The null action (index = class count, per component) for every step: (rows, horizon[, K])."""
    nvec = np.asarray(world.far.cfg.action_nvec, dtype=np.int64)
    return np.broadcast_to(nvec, (rows, horizon, len(nvec))).reshape(rows, horizon, *world.action_shape).copy()


def actions_into(world: WorldModel, actions: np.ndarray, frames: int) -> torch.Tensor:
    """Episode-convention actions (T-1[,K]) -> the model's (T,K): the action into each frame, null first."""
    null = world.far.null_action
    into = null.expand(frames, len(null)).clone()
    if frames > 1:
        into[1:] = torch.as_tensor(np.array(actions), dtype=torch.long, device=null.device).reshape(frames - 1, -1)
    return into


def batch_steps(lengths: np.ndarray | Sequence[int], batch_size: int) -> int:
    """Batched generation steps :func:`rollout_contexts` takes for rows of these lengths. Times
    are estimated as this count x the measured cost of a full batch's step: an upper bound for
    the smaller batches at the end."""
    ordered = np.sort(np.asarray(lengths))
    return int(sum(ordered[lo : lo + batch_size].max() for lo in range(0, len(ordered), batch_size)))


def rollout_contexts(
    world: WorldModel,
    contexts: Sequence[Context],
    future_actions: np.ndarray,
    lengths: np.ndarray | None = None,
    seed: int = 0,
    long_context: bool = True,
    batch_size: int = 8,
    bar: tqdm | None = None,
    settings: SamplingSettings | None = None,
) -> np.ndarray:
    """Predict frames for N rows, each from its own context, with actions (N, Hz[, K]) (the
    null action allowed).

    Row i is generated for ``lengths[i]`` steps (default Hz); frames past it stay 0. Rows are
    batched by similar length so that few frames are generated for nothing. Returns uint8
    (N, Hz, H, W, 3). The same ``seed`` draws the same noise in either context mode, so the
    two are compared on paired samples. ``settings``: the world's if None.
    """
    n, horizon = len(contexts), future_actions.shape[1]
    lengths = np.full(n, horizon) if lengths is None else np.asarray(lengths)
    out = np.zeros((n, horizon, *world.resolution, 3), np.uint8)
    order = np.argsort(lengths, kind="stable")
    for lo in range(0, n, batch_size):
        rows = order[lo : lo + batch_size]
        batch = world.with_batch(len(rows), long_context=long_context, settings=settings)
        batch.reset([contexts[i][0] for i in rows], [contexts[i][1] for i in rows], seed=seed + lo)
        for t in range(int(lengths[rows].max())):
            frames = batch.step(future_actions[rows, t], allow_null=True).frames
            live = lengths[rows] > t
            out[rows[live], t] = frames[live]
            if bar is not None:
                bar.update(int(live.sum()))
    return out


def rollout(
    world: WorldModel,
    windows: EvalWindows,
    actions: np.ndarray | None = None,
    seed: int = 0,
    long_context: bool = True,
    batch_size: int = 8,
    bar: tqdm | None = None,
    settings: SamplingSettings | None = None,
) -> np.ndarray:
    """Predict every window's future frames (N, Hz, H, W, 3) from its context and ``actions``
    (N, Hz[, K]) (default: the true future actions; the null action is allowed)."""
    actions = windows.future_actions if actions is None else actions
    return rollout_contexts(world, windows.contexts, actions, None, seed, long_context, batch_size, bar, settings)


def autoencoder_reconstruction(world: WorldModel, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """decode(encode(frames)) for uint8 frames (..., H, W, 3): the ceiling any rollout can reach."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty_like(flat)
    with torch.no_grad():
        for lo in range(0, len(flat), batch):
            pixels = torch.from_numpy(np.ascontiguousarray(flat[lo : lo + batch])).to(world.device)
            out[lo : lo + batch] = world.autoencoder.decode(world.autoencoder.encode(pixels)).cpu().numpy()
    return out.reshape(frames.shape)
