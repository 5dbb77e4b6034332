"""Heads that carry game variables (doom's health), fitted on a trained world's frozen features.

In health_gathering the episode ends when the health runs out, and the health falls on a clock
and rises at each medkit. A frame the model draws does not show it reliably (its health digits
stop counting down in free play), so a termination head that reads frames alone never sees an
imagined death. The world therefore carries the value itself (:class:`FrameHeads`): a head reads
a frame's features with the value before the transition and predicts its change, and the
termination head reads the value after it.

The heads learn from two banks of features of the frozen world, each with the true values: real
frames given as context (teacher forcing), and frames the world drew itself from real context
under the true actions, which is what the heads read in imagination.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from far_world.data.episodes import Episode
from far_world.evaluation.heads import teacher_forced
from far_world.checkpoint import atomic_torch_save
from far_world.evaluation.rollouts import actions_into
from far_world.model.heads import Carried, FrameHeads
from far_world.training.termination_head import ENDING_SHARE
from far_world.world import WorldModel


@dataclass
class CarriedEpisode:
    """An episode as the model reads it, with its carried variables per frame."""

    latents: Tensor  # (T,C,h,w)
    actions: Tensor  # (T,K) the action into each frame, null first
    carried: Tensor  # (T,V) float32, the variables at each frame
    clocks: Tensor  # (T,V) steps since each last fell, at each frame (Carried.since_fall)
    ended: Tensor  # (T,) bool: the transition into frame t ended the episode


def encode_carried(world: WorldModel, episodes: Iterable[Episode], names: Sequence[str]) -> list[CarriedEpisode]:
    """Encode episodes that recorded every variable in ``names`` as an extra."""
    out = []
    with torch.no_grad():
        for episode in episodes:
            missing = [n for n in names if n not in episode.extras]
            if missing:
                raise ValueError(f"an episode has no recorded {missing}: collect the data again (train/collect.py)")
            latents = world.autoencoder.encode(torch.from_numpy(np.array(episode.frames)))
            ended = torch.zeros(len(latents), dtype=torch.bool)
            ended[1:] = torch.from_numpy(np.asarray(episode.terminated, bool))
            carried = torch.from_numpy(np.stack([np.asarray(episode.extras[n], np.float32) for n in names], axis=1))
            clocks = Carried.along(carried, world.far.heads.carried_scale.cpu()).since_fall
            out.append(CarriedEpisode(latents, actions_into(world, episode.actions, len(latents)), carried, clocks, ended))
    return out


@dataclass
class FeatureBank:
    """Per transition: the frame's features and the carried values before and after it."""

    features: Tensor  # (N,D)
    before: Tensor  # (N,V)
    since_fall: Tensor  # (N,V) the fall clocks before the transition
    after: Tensor  # (N,V)
    ended: Tensor  # (N,) bool
    drawn: Tensor  # (N,) bool: features of a frame the world drew itself

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def concat(cls, banks: Sequence["FeatureBank"]) -> "FeatureBank":
        return cls(*(torch.cat([getattr(b, f.name) for b in banks]) for f in fields(cls)))

    def save(self, path: str | Path) -> None:
        """Plain tensors only, so that :meth:`load` reads the file without running pickled code."""
        atomic_torch_save({f.name: getattr(self, f.name) for f in fields(self)}, path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureBank":
        return cls(**torch.load(path, map_location="cpu", weights_only=True))

    def where(self, rows: Tensor) -> "FeatureBank":
        """The transitions flagged in ``rows`` (N,) bool."""
        return FeatureBank(*(getattr(self, f.name)[rows] for f in fields(self)))


def teacher_forced_features(
    world: WorldModel, episodes: Sequence[CarriedEpisode], batch_size: int = 16, bar: tqdm | None = None
) -> FeatureBank:
    """Features of every transition, each real frame appended to the context as play appends a drawn one."""
    banks = []
    for lo in range(0, len(episodes), batch_size):
        group = episodes[lo : lo + batch_size]
        readings = teacher_forced(
            world, [e.latents for e in group], [e.actions for e in group], [e.carried for e in group], bar
        )
        for episode, reading in zip(group, readings):
            n = len(reading.features)
            banks.append(FeatureBank(
                reading.features, episode.carried[:-1], episode.clocks[:-1], episode.carried[1:], episode.ended[1:],
                torch.zeros(n, dtype=torch.bool),
            ))  # fmt: skip
    return FeatureBank.concat(banks)


def drawn_windows(episodes: Sequence[CarriedEpisode], context: int, horizon: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(episode, first drawn frame) of the windows to draw: per episode one whose drawn frames
    end at its last frame (its death, if it ended in one) and one at random."""
    windows = []
    for i, episode in enumerate(episodes):
        last_start = len(episode.latents) - horizon
        if last_start < context:
            continue
        windows.append((i, last_start))
        windows.append((i, int(rng.integers(context, last_start + 1))))
    return windows


def drawn_features(
    world: WorldModel,
    episodes: Sequence[CarriedEpisode],
    context: int,
    horizon: int,
    rng: np.random.Generator,
    batch_size: int = 64,
    bar: tqdm | None = None,
) -> FeatureBank:
    """Features of frames the world draws from ``context`` real frames under the true actions,
    ``horizon`` frames a window, with the true carried values before and after each."""
    windows = drawn_windows(episodes, context, horizon, rng)
    if not windows:
        raise ValueError(f"no episode is long enough for {context} context and {horizon} drawn frames")
    settings = world.settings
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    banks = []
    for lo in range(0, len(windows), batch_size):
        group = windows[lo : lo + batch_size]
        def window(name: str, first: int, last: int) -> Tensor:
            return torch.stack([getattr(episodes[i], name)[s + first : s + last] for i, s in group])

        cache = world.sampler.new_cache(len(group), world.device)
        world.sampler.prefill(cache, window("latents", -context, 0), window("actions", -context, 0), settings, generator)
        actions, carried, clocks = window("actions", 0, horizon), window("carried", -1, horizon), window("clocks", -1, horizon)
        features = []
        for t in range(horizon):
            before = Carried(carried[:, t], clocks[:, t]) if world.carried_names else None
            out = world.sampler.generate(cache, actions[:, t], settings, generator=generator, carried=before)
            features.append(out.features)
            if bar is not None:
                bar.update(len(group))
        banks.append(FeatureBank(
            torch.stack(features, dim=1).flatten(0, 1), carried[:, :-1].flatten(0, 1), clocks[:, :-1].flatten(0, 1),
            carried[:, 1:].flatten(0, 1),
            window("ended", 0, horizon).flatten(), torch.ones(len(group) * horizon, dtype=torch.bool),
        ))  # fmt: skip
    return FeatureBank.concat(banks)


def fit_carried_heads(
    heads: FrameHeads,
    bank: FeatureBank,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    bar: tqdm | None = None,
    drawn_share: float | None = None,
) -> list[float]:
    """Train the carried and termination heads (in place) on ``bank``; returns the losses.

    A share :data:`ENDING_SHARE` of each batch are episode ends, which are one transition in
    hundreds. The carried loss, the MSE of the values at the heads' scale, reads only the rest of
    the batch, drawn uniformly: a death is also a fall, and learnt from a batch rich in them the
    change comes out too low at every frame, which free play adds up. With ``drawn_share`` that
    share of the uniform rows comes from the drawn frames (what the heads read in imagination),
    the rest from the whole bank; None draws them all from the whole bank.
    """
    if heads.carried is None:
        raise ValueError("these heads carry no variables")
    ends, drawn = bank.ended.nonzero()[:, 0], bank.drawn.nonzero()[:, 0]
    if drawn_share is not None and (not 0.0 <= drawn_share <= 1.0 or (drawn_share > 0 and len(drawn) == 0)):
        raise ValueError(f"drawn_share must be in [0, 1], with drawn frames in the bank; got {drawn_share}")
    if len(ends) == 0:
        raise ValueError("no transition of the bank ends an episode: nothing for the termination head to learn")
    torch.manual_seed(seed)
    params = [*heads.carried.parameters(), *heads.termination.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n_end = max(1, int(batch_size * ENDING_SHARE))
    n_drawn = 0 if drawn_share is None else int(round((batch_size - n_end) * drawn_share))
    losses = []
    for _ in range(steps):
        rows = torch.cat([
            ends[torch.randint(len(ends), (n_end,), generator=generator)],
            drawn[torch.randint(max(len(drawn), 1), (n_drawn,), generator=generator)],
            torch.randint(len(bank), (batch_size - n_end - n_drawn,), generator=generator),
        ])  # fmt: skip
        out = heads(bank.features[rows], Carried(bank.before[rows], bank.since_fall[rows]))
        uniform = rows[n_end:]
        carried_loss = F.mse_loss(out.carried.values[n_end:] / heads.carried_scale, bank.after[uniform] / heads.carried_scale)
        termination_loss = F.binary_cross_entropy_with_logits(out.termination_logit, bank.ended[rows].float())
        loss = carried_loss + termination_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
    return losses


@torch.no_grad()
def read_bank(heads: FrameHeads, bank: FeatureBank) -> tuple[np.ndarray, np.ndarray]:
    """The heads' termination probabilities (N,) and carried values after (N,V) on ``bank``."""
    out = heads(bank.features, Carried(bank.before, bank.since_fall))
    return torch.sigmoid(out.termination_logit).numpy(), out.carried.values.numpy()


def bank_report(heads: FrameHeads, bank: FeatureBank, names: Sequence[str]) -> dict:
    """Carried-value error against holding the value, and termination precision/recall (p > 0.5)."""
    probs, after = read_bank(heads, bank)
    true_after, before, ended = bank.after.numpy(), bank.before.numpy(), bank.ended.numpy()
    said = probs > 0.5
    hits = int((said & ended).sum())
    return {
        "transitions": len(bank),
        "ends": int(ended.sum()),
        **{f"{n}_mae": float(np.abs(after[:, i] - true_after[:, i]).mean()) for i, n in enumerate(names)},
        **{f"{n}_mae_holding": float(np.abs(before[:, i] - true_after[:, i]).mean()) for i, n in enumerate(names)},
        "predicted_ends": int(said.sum()),
        "precision": hits / int(said.sum()) if said.any() else None,
        "recall": hits / int(ended.sum()) if ended.any() else None,
    }

