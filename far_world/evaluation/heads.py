"""How well the reward and termination heads read real transitions (teacher forcing).

Every held-out episode is fed to the model frame by frame, each real frame appended to the
context as a generated one would be (``FARModel.observe``), and the heads' readings are compared
with the rewards and ends the real world gave. This is what an agent trained in imagination
relies on: a world whose reward head is wrong teaches the wrong policy however good its frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from far_world.data.episodes import Episode, iter_episodes
from far_world.evaluation.rollouts import actions_into
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

    def to_dict(self) -> dict:
        return asdict(self)


def read_heads(world: WorldModel, episodes: list[Episode], bar: tqdm | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per episode, the heads' (reward, termination probability) of each of its transitions,
    read with the episode's frames as context; the episodes are fed together as rows of a batch."""
    device = world.device
    lengths = [e.num_steps for e in episodes]
    steps = max(lengths)
    latents, into = [], []
    with torch.no_grad():
        for episode in episodes:
            frames = torch.from_numpy(np.array(episode.frames)).to(device)
            lat = world.autoencoder.encode(frames)
            act = actions_into(world, episode.actions, len(frames))
            # Rows shorter than the longest repeat their last frame; those readings are dropped.
            pad = steps + 1 - len(lat)
            latents.append(torch.cat([lat, lat[-1:].expand(pad, *lat.shape[1:])]))
            into.append(torch.cat([act, act[-1:].expand(pad, *act.shape[1:])]))
    latents, into = torch.stack(latents), torch.stack(into)
    # Teacher forcing reads real frames as they are: no inference-time context noise.
    settings = world.settings.replace(context_noise=0.0)
    state = world.sampler.new_cache(len(episodes), device)
    world.sampler.prefill(state, latents[:, :1], into[:, :1], settings)
    rewards, probs = [], []
    for t in range(1, steps + 1):
        out = world.sampler.observe(state, latents[:, t], into[:, t], settings)
        rewards.append(out.reward.float().cpu().numpy())
        probs.append(out.terminated_prob.float().cpu().numpy())
        if bar is not None:
            bar.update(len(episodes))
    rewards, probs = np.stack(rewards, axis=1), np.stack(probs, axis=1)
    return [(rewards[i, :n], probs[i, :n]) for i, n in enumerate(lengths)]


def read_heads_in_batches(
    world: WorldModel, episodes: list[Episode], batch_size: int = 16, bar: tqdm | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
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
    reward_pred = np.concatenate([r for r, _ in readings]).astype(np.float64)
    ended = np.concatenate([e.terminated for e in episodes]).astype(bool)
    prob = np.concatenate([p for _, p in readings]).astype(np.float64)
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
    )
