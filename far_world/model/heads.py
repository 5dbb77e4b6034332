"""Reward and termination heads: what the transition into a frame earned and whether it ended the
episode; and, for worlds that carry game variables (doom's health), how those changed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# The heads read the steps since a carried value last fell, capped here: periodic losses (doom's
# acid floor takes 8 health every 8 steps) are timed by that clock, which no frame shows.
CLOCK_CAP = 32
# A drop by more than this share of a variable's scale is a fall; the heads' small errors are not.
FALL_SHARE = 0.02


class Carried(NamedTuple):
    """Carried game variables and, per variable, the steps since it last fell."""

    values: Tensor  # (...,K)
    since_fall: Tensor  # (...,K) float, capped at CLOCK_CAP

    @classmethod
    def along(cls, history: Tensor, scale: Tensor) -> "Carried":
        """The state at every frame (...,T,K) of values recorded frame by frame; the clocks start
        at 0 on the first frame."""
        state = cls(history[..., 0, :], torch.zeros_like(history[..., 0, :]))
        clocks = [state.since_fall]
        for t in range(1, history.shape[-2]):
            state = state.advance(history[..., t, :], scale)
            clocks.append(state.since_fall)
        return cls(history, torch.stack(clocks, dim=-2))

    @classmethod
    def from_history(cls, history: Tensor, scale: Tensor) -> "Carried":
        """The state at the last of the values (...,T,K) recorded frame by frame."""
        return cls(*(part[..., -1, :] for part in cls.along(history, scale)))

    def advance(self, after: Tensor, scale: Tensor) -> "Carried":
        """The state after a transition to the values ``after``."""
        fell = after < self.values - FALL_SHARE * scale
        return Carried(after, torch.where(fell, torch.zeros_like(self.since_fall), (self.since_fall + 1).clamp(max=CLOCK_CAP)))


class HeadReadings(NamedTuple):
    """What the heads read from frames' features (leading dims ``...``)."""

    reward: Tensor  # (...) of the transition into the frame
    termination_logit: Tensor  # (...)
    carried: Carried | None  # the carried variables after the transition; None if the world carries none


class _Readout(nn.Sequential):
    """LayerNorm of the features, then an MLP; carried values join after the norm, as they are."""

    def __init__(self, width: int, hidden: int, outputs: int = 1, extra: int = 0) -> None:
        out = nn.Linear(hidden, outputs)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        super().__init__(nn.LayerNorm(width), nn.Linear(width + extra, hidden), nn.SiLU(), out)

    def forward(self, features: Tensor, extra: Tensor | None = None) -> Tensor:
        x = self[0](features)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=-1)
        return self[3](self[2](self[1](x)))


class FrameHeads(nn.Module):
    """Small MLPs on a frame's mean-pooled final features.

    A frame's features have seen the frames before it and the action into it (its modulation),
    everything the transition's reward and termination depend on, unless the episode's end
    depends on a value the frames do not show reliably. Such values are carried
    (``carried_scale``, one per variable; :class:`Carried`): the carried head reads the features
    and each value's fall clock and predicts the values' change (zero at initialization), and the
    termination head reads the values after it with the clocks (one-hot counts). The change does
    not read the values themselves: fed its own output frame after frame, a head that did would
    compound its errors (doom's health ran off to thousands); the clock is capped.
    """

    def __init__(self, width: int, hidden: int = 256, carried_scale: Sequence[float] = ()) -> None:
        super().__init__()
        k = len(carried_scale)
        self.reward = _Readout(width, hidden)
        clock = k * (CLOCK_CAP + 1)  # one-hot: a periodic loss is a step at one count, not a slope
        self.termination = _Readout(width, hidden, extra=k + clock)
        self.carried = _Readout(width, hidden, outputs=k, extra=clock) if k else None
        self.register_buffer("carried_scale", torch.tensor([float(v) for v in carried_scale]), persistent=False)

    def forward(self, features: Tensor, carried: Carried | None = None) -> HeadReadings:
        """features (...,D) and the carried state before each transition -> :class:`HeadReadings`."""
        reward = self.reward(features).squeeze(-1)
        if self.carried is None:
            return HeadReadings(reward, self.termination(features).squeeze(-1), None)
        if carried is None:
            raise ValueError(f"this world carries {len(self.carried_scale)} variable(s): give their values before each frame")
        clock = F.one_hot(carried.since_fall.long().clamp(0, CLOCK_CAP), CLOCK_CAP + 1).flatten(-2).to(features.dtype)
        after = carried.values.to(features.dtype) / self.carried_scale + self.carried(features, clock)
        # The termination head reads the values as given: its loss does not shape them.
        logit = self.termination(features, torch.cat([after.detach(), clock], dim=-1)).squeeze(-1)
        return HeadReadings(reward, logit, carried.advance(after * self.carried_scale, self.carried_scale))


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
