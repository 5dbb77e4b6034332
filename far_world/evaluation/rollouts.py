"""Open-loop rollouts of a world model against real held-out episodes.

Rollouts drive the checkpoint's FAR model and autoencoder directly rather than through
``WorldModel.step``: evaluation needs what play never does, namely the null action (the
model unconditioned on the future) and a short-window-only mode in which the long-term
context is switched off. The sampling settings (Euler steps, guidance, FlexRoPE slope) are
the world's, so ``world.configure`` sets them for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from far_world.data.episodes import iter_episodes
from far_world.model.cache import KVCache
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


class _Rows:
    """B rows stepped together from their own contexts (which may differ in length)."""

    def __init__(self, world: WorldModel, contexts: Sequence[Context], generator: torch.Generator, long_context: bool) -> None:
        self.world, self.far, self.generator = world, world.far, generator
        self.long_context = long_context
        self.batch = len(contexts)
        # Short-only mode keeps each row's last short_window - 1 latents and the actions into them.
        self.keep = self.far.cfg.short_window - 1
        self.history: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for frames, actions in contexts:
                # A copy: episode frames are often read-only memory maps, which torch cannot wrap.
                pixels = torch.from_numpy(np.array(frames)).to(world.device)
                latents = world.autoencoder.encode(pixels)
                into = actions_into(world, actions, len(frames))
                if not long_context:
                    latents, into = latents[-self.keep :], into[-self.keep :]
                self.history.append((latents, into))
        self.state = self._prefilled()

    def _prefilled(self) -> KVCache:
        """A cache holding every row's history; rows of equal length share one prefill pass."""
        state = self.far.new_state(self.batch, self.world.device)
        lengths = np.array([len(h[0]) for h in self.history])
        for length in np.unique(lengths):
            rows = lengths == length
            latents = torch.stack([h[0] for h, r in zip(self.history, rows) if r])
            into = torch.stack([h[1] for h, r in zip(self.history, rows) if r])
            self.far.reset_rows(state, torch.from_numpy(rows), latents, into, generator=self.generator)
        return state

    def step(self, actions: np.ndarray) -> torch.Tensor:
        """Generate every row's next latent (B,C,h,w) from actions (B[,K]) (the null action allowed)."""
        if not self.long_context and self.state is None:
            # Long-term context off: the model sees only the last short_window - 1 frames, exactly
            # as after a fresh prefill of them (FARConfig refuses max_long_frames=0, and a cache
            # whose long-term frames are cleared would still hold short-window keys computed
            # against them), so the window is re-prefilled before each frame.
            self.state = self._prefilled()
        a = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.world.device)
        out = self.far.generate(
            self.state, a, steps=self.world.sampling_steps, guidance=self.world.guidance, generator=self.generator
        )
        if not self.long_context:
            into = a.reshape(self.batch, -1)
            self.history = [
                (torch.cat([lat, out.latents[i : i + 1]])[-self.keep :], torch.cat([act, into[i : i + 1]])[-self.keep :])
                for i, (lat, act) in enumerate(self.history)
            ]
            self.state = None
        return out.latents


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
) -> np.ndarray:
    """Predict frames for N rows, each from its own context, with actions (N, Hz[, K]).

    Row i is generated for ``lengths[i]`` steps (default Hz); frames past it stay 0. Rows are
    batched by similar length so that few frames are generated for nothing. Returns uint8
    (N, Hz, H, W, 3). The same ``seed`` draws the same noise in either context mode, so the
    two are compared on paired samples.
    """
    n, horizon = len(contexts), future_actions.shape[1]
    lengths = np.full(n, horizon) if lengths is None else np.asarray(lengths)
    out = np.zeros((n, horizon, *world.resolution, 3), np.uint8)
    order = np.argsort(lengths, kind="stable")
    for lo in range(0, n, batch_size):
        rows = order[lo : lo + batch_size]
        generator = torch.Generator(world.device).manual_seed(seed + lo)
        driver = _Rows(world, [contexts[i] for i in rows], generator, long_context)
        for t in range(int(lengths[rows].max())):
            latents = driver.step(future_actions[rows, t])
            with torch.no_grad():
                frames = world.autoencoder.decode(latents).cpu().numpy()
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
) -> np.ndarray:
    """Predict every window's future frames (N, Hz, H, W, 3) from its context and ``actions``
    (N, Hz[, K]) (default: the true future actions; the null action is allowed)."""
    actions = windows.future_actions if actions is None else actions
    return rollout_contexts(world, windows.contexts, actions, None, seed, long_context, batch_size, bar)


def autoencoder_reconstruction(world: WorldModel, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """decode(encode(frames)) for uint8 frames (..., H, W, 3): the ceiling any rollout can reach."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty_like(flat)
    with torch.no_grad():
        for lo in range(0, len(flat), batch):
            pixels = torch.from_numpy(np.ascontiguousarray(flat[lo : lo + batch])).to(world.device)
            out[lo : lo + batch] = world.autoencoder.decode(world.autoencoder.encode(pixels)).cpu().numpy()
    return out.reshape(frames.shape)
