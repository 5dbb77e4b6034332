"""Long-context memory: does the model remember a place when the agent comes back to it?

A revisit is found from the maze's saved poses (``agent_pos`` (T+1,2), ``agent_dir`` (T+1,2)
extras): at frame r the agent stands where it stood at an earlier frame e (position within
``pos_tol`` cells, heading within ``angle_tol_deg``), more than ``short_window`` frames
earlier, so that e is outside the short window and only the long-term context can hold it,
and in between it was away from that pose (farther than ``away_factor`` times a tolerance).

The model generates frame r with the true actions, once with its long-term context (default)
and once with the short window only, from the same noise; the frame is scored against the
true frame r. Two rollout variants:
  open_loop       from real context frames at the start of the episode (or as far back as the
                  cache reaches), everything after them generated through r
  teacher_forced  real frames up to r - lead, then ``lead`` generated frames: e is a real frame
                  in the long-term context, and fewer generated frames blur the comparison
Revisits whose earlier frame is beyond the cache's reach (``max_long_frames + short_window - 1``
frames) cannot be remembered by construction and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from far_world.data.episodes import Episode, iter_episodes
from far_world.evaluation.metrics import psnr, ssim
from far_world.evaluation.rollouts import rollout_contexts
from far_world.world import WorldModel

POSE_EXTRAS = ("agent_pos", "agent_dir")


def _angles_deg(direction: np.ndarray) -> np.ndarray:
    """Pairwise angles (T, T) in degrees between heading vectors (T, 2)."""
    unit = direction / np.linalg.norm(direction, axis=1, keepdims=True).clip(min=1e-9)
    return np.degrees(np.arccos(np.clip(unit @ unit.T, -1.0, 1.0)))


def find_revisits(
    pos: np.ndarray,
    direction: np.ndarray,
    min_gap: int,
    max_gap: int | None = None,
    pos_tol: float = 0.5,
    angle_tol_deg: float = 30.0,
    away_factor: float = 2.0,
) -> list[tuple[int, int]]:
    """Revisits (r, e) in a pose trace: positions (T, 2), headings (T, 2) (any length).

    e is the most recent frame with r - e > min_gap (and <= max_gap) whose pose r matches, the
    agent having left e's pose in between. Only the first frame of a return is kept: the next
    revisit is looked for from r + min_gap on.
    """
    pos, direction = np.asarray(pos, np.float64), np.asarray(direction, np.float64)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    angle = _angles_deg(direction)
    match = (dist <= pos_tol) & (angle <= angle_tol_deg)
    away = (dist > away_factor * pos_tol) | (angle > away_factor * angle_tol_deg)
    found: list[tuple[int, int]] = []
    r = min_gap + 1
    while r < len(pos):
        lowest = 0 if max_gap is None else max(0, r - max_gap)
        for e in range(r - min_gap - 1, lowest - 1, -1):
            if match[r, e] and away[e, e + 1 : r].any():
                found.append((r, e))
                break
        r = r + min_gap if found and found[-1][0] == r else r + 1
    return found


@dataclass
class Revisit:
    episode: Episode
    source: str  # file name
    frame: int  # r: the frame to generate
    earlier: int  # e: the frame it revisits

    def to_dict(self) -> dict:
        return {"episode": self.source, "frame": self.frame, "earlier": self.earlier}


def collect_revisits(
    folder: str | Path,
    min_gap: int,
    max_gap: int,
    max_revisits: int,
    pos_tol: float = 0.5,
    angle_tol_deg: float = 30.0,
    min_frame: int = 1,
) -> list[Revisit]:
    """Revisits at frames >= ``min_frame`` from every episode with pose extras, taken in turn
    across episodes (one from each, then a second from each, ...) up to ``max_revisits``."""
    per_episode = []
    for path, ep in iter_episodes(folder, mmap=True):
        if not all(k in ep.extras for k in POSE_EXTRAS):
            continue
        pairs = find_revisits(ep.extras["agent_pos"], ep.extras["agent_dir"], min_gap, max_gap, pos_tol, angle_tol_deg)
        per_episode.append([Revisit(ep, path.name, r, e) for r, e in pairs if r >= min_frame])
    picked: list[Revisit] = []
    for turn in range(max((len(p) for p in per_episode), default=0)):
        picked += [p[turn] for p in per_episode if turn < len(p)]
    return picked[:max_revisits]


@dataclass
class MemoryScores:
    """Per-revisit scores of the generated revisit frame with and without long-term context."""

    psnr_long: np.ndarray
    psnr_short: np.ndarray
    ssim_long: np.ndarray
    ssim_short: np.ndarray
    # PSNR of the true earlier frame e against the true frame r: how alike the two views are.
    psnr_earlier_view: np.ndarray

    def to_dict(self) -> dict:
        gain = self.psnr_long - self.psnr_short
        return {
            "revisits": len(gain),
            "psnr_long": float(self.psnr_long.mean()),
            "psnr_short": float(self.psnr_short.mean()),
            "psnr_gain": float(gain.mean()),
            "psnr_gain_stderr": float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else None,
            "ssim_long": float(self.ssim_long.mean()),
            "ssim_short": float(self.ssim_short.mean()),
            "ssim_gain": float((self.ssim_long - self.ssim_short).mean()),
            "long_better_share": float((gain > 0).mean()),
            "psnr_earlier_view": float(self.psnr_earlier_view.mean()),
        }


def _cases(revisits: list[Revisit], span: int, context: int, lead: int | None) -> tuple[list, np.ndarray, np.ndarray]:
    """Contexts, padded future actions (N, L[, K]) and generation lengths (N,) of each revisit,
    the rollouts starting ``span`` frames before the revisit (or at the episode start)."""
    contexts, actions, lengths = [], [], []
    for rv in revisits:
        start = max(0, rv.frame - span)
        end = start + context if lead is None else rv.frame - lead + 1  # context is [start, end)
        contexts.append((np.asarray(rv.episode.frames[start:end]), np.asarray(rv.episode.actions[start : end - 1])))
        actions.append(np.asarray(rv.episode.actions[end - 1 : rv.frame]))
        lengths.append(rv.frame - end + 1)
    padded = np.zeros((len(actions), max(lengths), *actions[0].shape[1:]), np.int64)
    for i, a in enumerate(actions):
        padded[i, : len(a)] = a
    return contexts, padded, np.array(lengths)


def rollout_lengths(revisits: list[Revisit], span: int, context: int, lead: int | None) -> np.ndarray:
    """Frames generated for each revisit in one context mode (for time estimates)."""
    return _cases(revisits, span, context, lead)[2]


def evaluate_memory(
    world: WorldModel,
    revisits: list[Revisit],
    context: int,
    lead: int | None = None,
    span: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> MemoryScores:
    """Score the generated revisit frames with long-term context on and off (module doc).

    ``lead`` None: open loop from ``context`` real frames; an int: teacher-forced, ``lead`` frames
    generated. Rollouts start ``span`` frames before each revisit (default: the cache's reach,
    ``max_long_frames + short_window - 1``), which must not be closer than its earlier frame;
    revisits must leave room for the context (see :func:`collect_revisits`' ``min_frame``).
    """
    cfg = world.far.cfg
    span = span or cfg.max_long_frames + cfg.short_window - 1
    contexts, actions, lengths = _cases(revisits, span, context, lead)
    last = lengths - 1
    rows = np.arange(len(revisits))
    generated = {}
    for mode, long_context in (("long", True), ("short", False)):
        frames = rollout_contexts(world, contexts, actions, lengths, seed, long_context, batch_size, bar)
        generated[mode] = frames[rows, last]
    truth = np.stack([np.asarray(rv.episode.frames[rv.frame]) for rv in revisits])
    earlier = np.stack([np.asarray(rv.episode.frames[rv.earlier]) for rv in revisits])
    return MemoryScores(
        psnr(truth, generated["long"]), psnr(truth, generated["short"]),
        ssim(truth, generated["long"]), ssim(truth, generated["short"]), psnr(truth, earlier),
    )  # fmt: skip
