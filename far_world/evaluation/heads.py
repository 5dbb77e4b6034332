"""How well the reward, termination and carried heads read real transitions (teacher forcing).

Every held-out episode is fed to the model frame by frame, each real frame appended to the
context as a generated one would be (``FARModel.observe``), and the heads' readings are compared
with the rewards and ends the real world gave. This is what an agent trained in imagination
relies on: a world whose reward head is wrong teaches the wrong policy however good its frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from far_world.data.episodes import Episode, iter_episodes
from far_world.evaluation.rollouts import actions_into
from far_world.model.heads import Carried
from far_world.world import WorldModel


@dataclass
class HeadReport:
    episodes: int
    transitions: int
    reward_mae: float
    reward_rmse: float
    # The same errors for a constant prediction, the mean reward of these transitions: the bar to beat.
    constant_reward_mae: float
    constant_reward_rmse: float
    terminations: int
    predicted_terminations: int
    termination_precision: float | None
    termination_recall: float | None
    # Mean termination probability on the final transition of episodes that ended, and elsewhere.
    mean_probability_at_end: float | None
    mean_probability_elsewhere: float
    # Worlds that carry variables: their error after each transition, given the true values
    # before it, against holding the value before (per variable; empty for other worlds).
    carried_mae: dict[str, float] = field(default_factory=dict)
    carried_mae_holding: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeacherForced:
    """The heads' readings of one episode's transitions, its real frames given as context."""

    rewards: np.ndarray  # (T-1,)
    termination_probs: np.ndarray  # (T-1,)
    features: torch.Tensor  # (T-1,D) what the heads read
    carried: np.ndarray | None  # (T-1,K) the carried variables after each transition, if the world has any


def teacher_forced(
    world: WorldModel,
    latents: list[torch.Tensor],
    actions: list[torch.Tensor],
    carried: list[torch.Tensor] | None = None,
    bar: tqdm | None = None,
) -> list[TeacherForced]:
    """Feed episodes (latents (T,C,h,w), actions into each frame (T,K), and for a world that
    carries variables their true values (T,K) at each frame) frame by frame, together as rows of
    a batch, each real frame appended to the context as a generated one would be."""
    lengths = [len(x) - 1 for x in latents]
    steps = max(lengths)

    def padded(rows: list[torch.Tensor]) -> torch.Tensor:
        # Rows shorter than the longest repeat their last frame; those readings are dropped.
        return torch.stack([torch.cat([r, r[-1:].expand(steps + 1 - len(r), *r.shape[1:])]) for r in rows])

    lat, into = padded(latents).to(world.device), padded(actions).to(world.device)
    state = Carried.along(padded(carried), world.far.heads.carried_scale.cpu()) if world.carried_names else None
    # Teacher forcing reads real frames as they are: no inference-time context noise.
    settings = world.settings.replace(context_noise=0.0)
    cache = world.sampler.new_cache(len(latents), world.device)
    world.sampler.prefill(cache, lat[:, :1], into[:, :1], settings)
    outs = []
    for t in range(1, steps + 1):
        before = None if state is None else Carried(*(part[:, t - 1].to(world.device) for part in state))
        outs.append(world.sampler.observe(cache, lat[:, t], into[:, t], settings, before))
        if bar is not None:  # padded rows are not counted
            bar.update(sum(t <= n for n in lengths))
    rewards = torch.stack([o.reward for o in outs], 1).float().cpu().numpy()
    probs = torch.stack([o.terminated_prob for o in outs], 1).float().cpu().numpy()
    features = torch.stack([o.features for o in outs], 1).float().cpu()
    after = None if state is None else torch.stack([o.carried.values for o in outs], 1).float().cpu().numpy()
    return [
        TeacherForced(rewards[i, :n], probs[i, :n], features[i, :n], None if after is None else after[i, :n])
        for i, n in enumerate(lengths)
    ]


def carried_values(world: WorldModel, episode: Episode) -> torch.Tensor:
    """The episode's recorded values (T,K) of the variables ``world`` carries."""
    missing = [n for n in world.carried_names if n not in episode.extras]
    if missing:
        raise ValueError(f"this world carries {missing}, which the episodes do not record: collect them again (train/collect.py)")
    return torch.from_numpy(np.stack([np.asarray(episode.extras[n], np.float32) for n in world.carried_names], axis=1))


def read_heads(world: WorldModel, episodes: list[Episode], bar: tqdm | None = None) -> list[TeacherForced]:
    """Per episode, the heads' readings of each of its transitions (:func:`teacher_forced`), with
    the recorded values of the variables the world carries."""
    latents, into = [], []
    with torch.no_grad():
        for episode in episodes:
            frames = torch.from_numpy(np.array(episode.frames)).to(world.device)
            latents.append(world.autoencoder.encode(frames))
            into.append(actions_into(world, episode.actions, len(frames)))
    carried = [carried_values(world, e) for e in episodes] if world.carried_names else None
    return teacher_forced(world, latents, into, carried, bar)


def read_heads_in_batches(
    world: WorldModel, episodes: list[Episode], batch_size: int = 16, bar: tqdm | None = None
) -> list[TeacherForced]:
    """:func:`read_heads` over ``episodes``, ``batch_size`` of them at a time."""
    readings = []
    for lo in range(0, len(episodes), batch_size):
        readings += read_heads(world, episodes[lo : lo + batch_size], bar)
    return readings


def evaluate_heads(
    world: WorldModel, test: str | Path, max_episodes: int = 64, batch_size: int = 16, bar: tqdm | None = None
) -> HeadReport:
    """Reward error and termination precision/recall (probability > 0.5) on held-out episodes."""
    episodes = [e for _, e in iter_episodes(test) if e.num_steps > 0][:max_episodes]
    if not episodes:
        raise ValueError(f"no episodes in {test}")
    readings = read_heads_in_batches(world, episodes, batch_size, bar)
    reward_true = np.concatenate([e.rewards for e in episodes]).astype(np.float64)
    reward_pred = np.concatenate([r.rewards for r in readings]).astype(np.float64)
    ended = np.concatenate([e.terminated for e in episodes]).astype(bool)
    prob = np.concatenate([r.termination_probs for r in readings]).astype(np.float64)
    carried_mae, carried_mae_holding = {}, {}
    if world.carried_names:
        truth = [carried_values(world, e).numpy() for e in episodes]
        after = np.concatenate([t[1:] for t in truth])
        predicted = np.concatenate([r.carried for r in readings])
        held = np.concatenate([t[:-1] for t in truth])
        for i, name in enumerate(world.carried_names):
            carried_mae[name] = float(np.abs(predicted[:, i] - after[:, i]).mean())
            carried_mae_holding[name] = float(np.abs(held[:, i] - after[:, i]).mean())
    said = prob > 0.5
    hits = int((said & ended).sum())
    constant = reward_true - reward_true.mean()
    return HeadReport(
        episodes=len(episodes),
        transitions=len(reward_true),
        reward_mae=float(np.abs(reward_pred - reward_true).mean()),
        reward_rmse=float(np.sqrt(((reward_pred - reward_true) ** 2).mean())),
        constant_reward_mae=float(np.abs(constant).mean()),
        constant_reward_rmse=float(np.sqrt((constant**2).mean())),
        terminations=int(ended.sum()),
        predicted_terminations=int(said.sum()),
        termination_precision=hits / int(said.sum()) if said.any() else None,
        termination_recall=hits / int(ended.sum()) if ended.any() else None,
        mean_probability_at_end=float(prob[ended].mean()) if ended.any() else None,
        mean_probability_elsewhere=float(prob[~ended].mean()) if (~ended).any() else float("nan"),
        carried_mae=carried_mae,
        carried_mae_holding=carried_mae_holding,
    )
