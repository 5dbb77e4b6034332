"""The termination head retrained alone on a world's frozen features, and its decision threshold.

Episode ends are one transition in hundreds, so a head trained with the flow model rarely says
"ended" with probability above a half. Here the transformer stays frozen and only the head
learns, on clips of real frames of which a fixed share end an episode; the head's bias is then
set so that the world's decision (probability > 0.5) falls where it catches ends best on
episodes it did not learn from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from far_world.data.episodes import Episode
from far_world.evaluation.rollouts import actions_into
from far_world.model.far import CONTEXT
from far_world.world import WorldModel

ENDING_SHARE = 0.25  # of each training batch
EncodedEpisode = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def encode(world: WorldModel, episodes: Iterable[Episode]) -> list[EncodedEpisode]:
    """Per episode: latents (T,C,h,w), actions into each frame (T,K), ended (T,) bool (frame t ends it)."""
    out = []
    with torch.no_grad():
        for episode in episodes:
            latents = world.autoencoder.encode(torch.from_numpy(np.array(episode.frames)))
            ended = torch.zeros(len(latents), dtype=torch.bool)
            ended[1:] = torch.from_numpy(np.asarray(episode.terminated, bool))
            out.append((latents, actions_into(world, episode.actions, len(latents)), ended))
    return out


def endings(episodes: Sequence[EncodedEpisode]) -> list[tuple[int, int]]:
    """(episode, frame) of every frame that ends an episode."""
    return [(i, int(e[2].nonzero()[0])) for i, e in enumerate(episodes) if e[2].any()]


def ending_batch(
    episodes: Sequence[EncodedEpisode], ends: list[tuple[int, int]], rng: np.random.Generator, size: int, max_frames: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips of real frames that end at the frame to read, a share of them at an episode's end (``ends``)."""
    length = int(rng.integers(4, max_frames + 1))
    latents, actions, ended = [], [], []
    for row in range(size):
        if row < size * ENDING_SHARE:
            i, last = ends[rng.integers(len(ends))]
        else:
            i = int(rng.integers(len(episodes)))
            last = int(rng.integers(1, len(episodes[i][0])))
        lat, act, end = episodes[i]
        first = max(0, last - length + 1)
        pad = length - (last + 1 - first)  # episodes shorter than the clip repeat their first frame
        latents.append(torch.cat([lat[first : first + 1].expand(pad, *lat.shape[1:]), lat[first : last + 1]]))
        actions.append(torch.cat([act[first : first + 1].expand(pad, *act.shape[1:]), act[first : last + 1]]))
        ended.append(float(end[last]))
    return torch.stack(latents), torch.stack(actions), torch.tensor(ended)


def prior_entropy() -> float:
    """The loss of a head that cannot tell an ending clip from another: the batch share's entropy."""
    q = ENDING_SHARE
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def fit_termination_head(
    world: WorldModel,
    episodes: Sequence[EncodedEpisode],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    bar: tqdm | None = None,
) -> list[float]:
    """Train ``world``'s termination head alone (in place) on ending-rich batches; returns the losses."""
    ends = endings(episodes)
    if not ends:
        raise ValueError("no episode ends in a termination: nothing for the head to learn")
    torch.manual_seed(seed)
    head = world.far.heads.termination
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    max_frames = world.far.cfg.max_long_frames + world.far.cfg.short_window  # the longest context held
    losses = []
    for _ in range(steps):
        latents, actions, ended = ending_batch(episodes, ends, rng, batch_size, max_frames)
        with torch.no_grad():
            _, features = world.far(latents, actions, torch.full(latents.shape[:2], CONTEXT))
        loss = F.binary_cross_entropy_with_logits(head(features[:, -1]).squeeze(-1), ended)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
    return losses


def best_logit_shift(probs: np.ndarray, ended: np.ndarray, min_recall: float = 0.0) -> tuple[float, float]:
    """The shift s of the head's logit that maximizes F1 of the decision p > 0.5 on these
    readings (p = sigmoid(logit + s)), and that F1. Ties go to the smallest shift.

    With ``min_recall`` only the shifts that catch at least that share of the ends compete: an
    agent that never sees its imagined episode end learns nothing about dying, so a world may
    rather raise a few false ends than miss half the real ones. Where no shift reaches it, the
    F1-best shift is kept."""
    if not ended.any():
        raise ValueError("no episode ends among these readings: no threshold can be chosen")
    logits = np.log(np.clip(probs, 1e-12, 1.0)) - np.log(np.clip(1.0 - probs, 1e-12, 1.0))
    best, best_with_recall = (0.0, -1.0), (0.0, -1.0)
    for shift in np.round(np.arange(-10.0, 10.01, 0.25), 2):
        said = logits + shift > 0
        hits = float((said & ended).sum())
        f1 = 2 * hits / max(float(said.sum() + ended.sum()), 1.0)
        if f1 > best[1]:
            best = (float(shift), f1)
        if hits >= min_recall * float(ended.sum()) and f1 > best_with_recall[1]:
            best_with_recall = (float(shift), f1)
    return best_with_recall if best_with_recall[1] > 0 else best
