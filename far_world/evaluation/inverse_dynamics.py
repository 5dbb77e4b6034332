"""An inverse-dynamics model (frame t, frame t+1 -> action t) that scores action following.

Trained on the real training episodes of a world, it reads which action separates two
frames. Its accuracy on a world model's rollouts, against its accuracy on real frames of the
same windows, says how well the generated motion matches the actions the model was given
(MineWorld scores Minecraft world models this way with VPT's IDM). Real accuracy is below 1
where actions leave no trace (walking into a wall looks like a no-op): the real number is the
reference, not 1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from far_world.data.episodes import iter_episodes


class InverseDynamics(nn.Module):
    """Small CNN: a frame pair (N,H,W,3) x2 uint8 -> logits per action component."""

    def __init__(self, action_nvec: Sequence[int], width: int = 32) -> None:
        super().__init__()
        self.action_nvec = tuple(int(n) for n in action_nvec)
        chans = (9, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.GroupNorm(8, cout), nn.GELU()]
        # Any resolution (64x64 worlds, 128x128 Minecraft) ends as a 4x4 grid.
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(chans[-1] * 16, 256), nn.GELU(), nn.Linear(256, sum(self.action_nvec)))

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> list[torch.Tensor]:
        a = before.permute(0, 3, 1, 2).float() / 127.5 - 1
        b = after.permute(0, 3, 1, 2).float() / 127.5 - 1
        # The difference image is given explicitly: the action is in what changed, and a small
        # net trained for a few hundred steps finds it much sooner this way.
        logits = self.head(self.trunk(torch.cat([a, b, b - a], dim=1)))
        return list(logits.split(self.action_nvec, dim=1))

    @torch.no_grad()
    def predict(self, before: np.ndarray, after: np.ndarray, batch: int = 256) -> np.ndarray:
        """Predicted actions (N, K) int64 for uint8 frame pairs (N, H, W, 3)."""
        device = next(self.parameters()).device
        out = []
        for lo in range(0, len(before), batch):
            x = torch.from_numpy(np.ascontiguousarray(before[lo : lo + batch])).to(device)
            y = torch.from_numpy(np.ascontiguousarray(after[lo : lo + batch])).to(device)
            out.append(torch.stack([lg.argmax(1) for lg in self(x, y)], dim=1).cpu().numpy())
        return np.concatenate(out)


def action_matrix(actions: np.ndarray, components: int) -> np.ndarray:
    """Actions (N,) or (N, K) as (N, K) int64."""
    return np.asarray(actions, dtype=np.int64).reshape(len(actions), components)


def accuracy(model: InverseDynamics, before: np.ndarray, after: np.ndarray, actions: np.ndarray) -> float:
    """Share of pairs whose every action component the model reads right."""
    truth = action_matrix(actions, len(model.action_nvec))
    return float((model.predict(before, after) == truth).all(axis=1).mean())


def chance_accuracy(actions: np.ndarray, components: int) -> float:
    """Accuracy of always answering the most frequent action: the floor an IDM must beat."""
    _, counts = np.unique(action_matrix(actions, components), axis=0, return_counts=True)
    return float(counts.max() / counts.sum())


def rollout_pairs(context_frames: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive pairs of a rollout (N, Hz, H, W, 3) that starts after context (N, T, H, W, 3):
    (before, after), each (N*Hz, H, W, 3); the first pair starts at the last context frame."""
    before = np.concatenate([context_frames[:, -1:], frames[:, :-1]], axis=1)
    return before.reshape(-1, *frames.shape[2:]), frames.reshape(-1, *frames.shape[2:])


class TransitionSampler:
    """Random (frame t, frame t+1, action t) triples from a folder of episodes (memory-mapped)."""

    def __init__(self, folder: str | Path, seed: int = 0) -> None:
        self.episodes = [ep for _, ep in iter_episodes(folder, mmap=True) if ep.num_steps > 0]
        if not self.episodes:
            raise ValueError(f"no episode with a transition in {folder}")
        self.steps = np.array([ep.num_steps for ep in self.episodes])
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n transitions, uniform over all of them: before, after (n,H,W,3) uint8, actions (n[,K])."""
        eps = self.rng.choice(len(self.episodes), size=n, p=self.steps / self.steps.sum())
        ts = self.rng.integers(0, self.steps[eps])
        before = np.stack([self.episodes[e].frames[t] for e, t in zip(eps, ts)])
        after = np.stack([self.episodes[e].frames[t + 1] for e, t in zip(eps, ts)])
        actions = np.stack([self.episodes[e].actions[t] for e, t in zip(eps, ts)])
        return before, after, actions


@dataclass
class IDMTraining:
    steps: int
    final_loss: float
    train_accuracy: float  # on the last batches seen
    seconds: float

    def to_dict(self) -> dict:
        return {"steps": self.steps, "final_loss": self.final_loss, "train_accuracy": self.train_accuracy, "seconds": self.seconds}


def train_idm(
    folder: str | Path,
    action_nvec: Sequence[int],
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[InverseDynamics, IDMTraining]:
    """Train an IDM on the transitions of ``folder`` with AdamW (cosine decay, no warm-up)."""
    torch.manual_seed(seed)
    sampler = TransitionSampler(folder, seed)
    model = InverseDynamics(action_nvec).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    recent_loss, recent_acc = [], []
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="inverse dynamics", unit="step", leave=False, disable=not progress):
        before, after, actions = sampler.sample(batch_size)
        target = torch.from_numpy(action_matrix(actions, len(model.action_nvec))).to(device)
        logits = model(torch.from_numpy(before).to(device), torch.from_numpy(after).to(device))
        loss = sum(F.cross_entropy(lg, target[:, k]) for k, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hit = torch.stack([lg.argmax(1) for lg in logits], 1).eq(target).all(1).float().mean()
        recent_loss = (recent_loss + [loss.item()])[-20:]
        recent_acc = (recent_acc + [hit.item()])[-20:]
    model.eval()
    return model, IDMTraining(steps, float(np.mean(recent_loss)), float(np.mean(recent_acc)), time.perf_counter() - start)
