"""An adversarial term against blur: a small critic tells the data's next frames from the model's.

Flow matching with a squared error learns the mean of the frames that could follow the
context. A sampler of a few Euler steps lands near that mean, which is a blur, and free play
then feeds on the blur. The critic sees a latent frame beside the true frame before it and
learns to tell the data's next frames from the model's clean estimates (x0_hat = x_s - s v).
Its gradient pulls the estimates toward frames that look like the data's: sharp, and in the
scene's own colours. The flow loss stays, so the frames also stay near the truth.

Conditioning on the previous true frame makes the critic judge a plausible *next* frame, not
any frame of the game: a drifted estimate in a rollout clip (far_world/training/self_context.py)
is judged against where the scene truly was. A fine-tuning tool, as adversarial post-training
is: from scratch the critic would only judge noise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class LatentCritic(nn.Module):
    """Patch logits (N, P) for latent frames (N,C,h,w) beside the frames before them (N,C,h,w),
    and with ``action_nvec``, the actions into them (N,K): then it judges whether a frame
    follows from that action too, so that the model cannot pass it by ignoring its keys.

    Spectrally normalized convolutions keep the critic's gradient bounded, so it cannot
    overwhelm the flow loss it is added to.
    """

    def __init__(self, channels: int, width: int = 64, action_nvec: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.stem = spectral_norm(nn.Conv2d(2 * channels, width, 3, padding=1))
        self.action = None
        if action_nvec is not None:
            # One table per component with its null row (as the model's), summed: a bias per channel.
            sizes = [n + 1 for n in action_nvec]
            self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
            self.action = nn.Embedding(sum(sizes), width)
            nn.init.zeros_(self.action.weight)
        self.net = nn.Sequential(
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, frames: Tensor, previous: Tensor, actions: Tensor | None = None) -> Tensor:
        h = self.stem(torch.cat([frames, previous], dim=1))
        if self.action is not None:
            if actions is None:
                raise ValueError("this critic judges frames with their actions: pass them")
            h = h + self.action(actions.long() + self.offsets).sum(dim=1)[:, :, None, None]
        return self.net(h).flatten(1)


class NextFramePairs(NamedTuple):
    """Frames to judge, each (N,...): the model's estimates, the true frames, the true frames
    before them, and the actions into them (N,K) as the model was given them."""

    estimates: Tensor
    truths: Tensor
    previous: Tensor
    actions: Tensor


def _mean(x: Tensor) -> Tensor:
    """The mean, 0 for no elements: a batch without a scored frame still takes a step (in
    lockstep with the other ranks), just with zero gradients."""
    return x.sum() / max(x.numel(), 1)


def next_frame_pairs(latents: Tensor, estimates: Tensor, denoised: Tensor, actions: Tensor) -> NextFramePairs:
    """The denoised short-window frames that have a frame before them.

    latents (B,F,C,h,w), the clip's true latents; estimates (B,Fs,C,h,w), the model's clean
    estimates of the last Fs frames; denoised (B,Fs) bool, which of those were denoised;
    actions (B,F,K), the actions into the clip's frames as the model was given them.
    """
    n_frames, n_short = latents.shape[1], estimates.shape[1]
    first = n_frames - n_short
    has_previous = torch.arange(first, n_frames, device=denoised.device) >= 1
    pick = denoised & has_previous[None]
    rows, cols = pick.nonzero(as_tuple=True)
    frames = cols + first
    x0 = latents.float()
    return NextFramePairs(estimates[rows, cols], x0[rows, frames], x0[rows, frames - 1], actions[rows, frames])


class AdversarialTerm:
    """The critic, its optimizer, and the two hinge losses of the game between it and the model."""

    def __init__(
        self, channels: int, width: int, lr: float, device: torch.device, action_nvec: tuple[int, ...] | None = None
    ) -> None:
        self.critic = LatentCritic(channels, width, action_nvec).to(device)
        # beta1 = 0: momentum lags a moving target; the usual choice for GAN critics.
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.0, 0.99))

    def model_loss(self, pairs: NextFramePairs) -> Tensor:
        """The model's hinge loss: it gains where the critic scores its estimates as data.
        The critic's own weights get no gradient from it."""
        self.critic.requires_grad_(False)
        try:
            return -_mean(self.critic(pairs.estimates, pairs.previous, pairs.actions))
        finally:
            self.critic.requires_grad_(True)

    def update(self, pairs: NextFramePairs) -> dict[str, float]:
        """One critic step on the detached estimates against the true frames; its loss and the
        share of patches it tells apart. Gradients are averaged over ranks when distributed."""
        real = self.critic(pairs.truths, pairs.previous, pairs.actions)
        fake = self.critic(pairs.estimates.detach(), pairs.previous, pairs.actions)
        loss = _mean(F.relu(1 - real)) + _mean(F.relu(1 + fake))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.critic.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        self.optimizer.step()
        told_apart = 0.5 * (_mean((real > 0).float()) + _mean((fake < 0).float()))
        return {"critic": float(loss.detach()), "critic_accuracy": float(told_apart)}

    def state_dict(self) -> dict[str, Any]:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
