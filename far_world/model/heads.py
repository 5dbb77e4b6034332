"""Reward and termination heads: what the transition into a frame earned and whether it ended the episode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mlp(width: int, hidden: int) -> nn.Sequential:
    out = nn.Linear(hidden, 1)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.SiLU(), out)


class FrameHeads(nn.Module):
    """Two small MLPs on a frame's mean-pooled final features.

    A frame's features have seen the frames before it and the action into it (its modulation),
    everything the transition's reward and termination depend on.
    """

    def __init__(self, width: int, hidden: int = 256) -> None:
        super().__init__()
        self.reward = _mlp(width, hidden)
        self.termination = _mlp(width, hidden)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features (B,F,D) -> reward (B,F) and termination logit (B,F)."""
        return self.reward(features).squeeze(-1), self.termination(features).squeeze(-1)


def head_losses(
    reward: Tensor,
    termination_logit: Tensor,
    target_reward: Tensor,
    terminated: Tensor,
    weight: Tensor,
    termination_pos_weight: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Weighted mean MSE of rewards and BCE of terminations, all (B,F); weight >= 0 per frame.

    ``termination_pos_weight`` scales the loss of frames that end an episode: an episode ends
    once in hundreds of frames, and unweighted the head learns to say "never".
    """
    total = weight.sum().clamp_min(1e-8)
    mse = F.mse_loss(reward.float(), target_reward.float(), reduction="none")
    pos_weight = torch.tensor(float(termination_pos_weight), device=termination_logit.device)
    bce = F.binary_cross_entropy_with_logits(
        termination_logit.float(), terminated.float(), reduction="none", pos_weight=pos_weight
    )
    return (mse * weight).sum() / total, (bce * weight).sum() / total
