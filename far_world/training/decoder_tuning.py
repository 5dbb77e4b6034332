"""The decoder fine-tuned on the latents the world model draws, against the frames they stand for.

The autoencoder's decoder learnt to draw the encoder's latents of real frames. In play it draws
the transformer's latents instead, which may be softer than any the encoder makes; if the blur a
player sees came from the decoder's reading of them, a decoder tuned on them would mend it at no
cost per step (it keeps its shape, and the encoder, the latent statistics, the transformer and
its caches stay as they are). Pairs come from real windows: the latent the model drew for frame
t under the window's true actions, and the true frame t. Real latents (the encoder's) share each
batch, scored against their frames, so reconstructions are kept. GameNGen tuned its decoder for
the same reason, from real latents only.

Two ways to score a drawn frame. Against the true frame (``drawn_weight``): the autoencoder's
loss, pixel L1 plus, with ``gradient_weight``, an L1 on Sobel gradients
(far_world/model/edges.py). A latent the model was unsure of stands for several frames, and a
loss against one of them teaches the decoder to draw their average: measured, this term blurs.
Against real frames in general (``adversarial_weight``): a small critic of pixel patches tells
real frames from drawn ones, and the decoder learns to draw the model's latents as frames that
could be real. Measured (docs/RESULTS.md, "The decoder tuned on the model's own latents"), it
leaves the maze's free play nearly as it was, since the maze's blur is in the latents; on doom,
at a weight of 0.05 it paints a regular grain that the critic takes for texture, and at 0.01 it
sharpens a little without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from tqdm import tqdm

from far_world.evaluation.metrics import sobel_energy
from far_world.evaluation.rollouts import EvalWindows
from far_world.model.autoencoder import FrameAutoencoder, frames_to_float, psnr
from far_world.model.edges import gradient_l1
from far_world.training.ae_trainer import reconstruction_psnr, reconstruction_sharpness
from far_world.training.schedule import lr_at
from far_world.world import WorldModel


@dataclass
class DecoderPairs:
    """Latents the model drew, each beside the true frame it stood for."""

    latents: np.ndarray  # (N, C, h, w) float32, normalized as the model's
    frames: np.ndarray  # (N, H, W, 3) uint8: the truth at the same step
    horizons: np.ndarray  # (N,) int: steps since the last real frame, 1..Hz

    def __len__(self) -> int:
        return len(self.latents)


def draw_pairs(
    world: WorldModel, windows: EvalWindows, batch_size: int = 32, seed: int = 0, bar: tqdm | None = None
) -> DecoderPairs:
    """Roll every window out from its real context with its true future actions (the world's
    sampling settings) and pair each drawn latent with the true frame of that step."""
    latents, frames, horizons = [], [], []
    horizon = windows.future_actions.shape[1]
    for lo in range(0, len(windows), batch_size):
        rows = np.arange(lo, min(lo + batch_size, len(windows)))
        batch = world.with_batch(len(rows))
        batch.reset(windows.context_frames[rows], windows.context_actions[rows], seed=seed + lo)
        for t in range(horizon):
            step = batch.step(windows.future_actions[rows, t])
            latents.append(step.latents)
            frames.append(windows.future_frames[rows, t])
            horizons.append(np.full(len(rows), t + 1))
            if bar is not None:
                bar.update(len(rows))
    return DecoderPairs(np.concatenate(latents), np.concatenate(frames), np.concatenate(horizons))


class FrameCritic(nn.Module):
    """Patch logits (N, P) for frames (N,3,64,64) in [-1, 1]: real frames high, drawn ones low.

    Spectrally normalized, so its gradient, which is all the decoder learns from it, stays
    bounded; each logit sees a 22-pixel patch, enough for a wall's edge, not for the layout.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(3, width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 1, 3, padding=1)),
        )

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(frames).flatten(1)


class DecoderTuner:
    """The decoder's optimizer and its steps; the encoder and the latent statistics stay frozen.

    Each step draws ``batch_size`` pairs and ``real_share`` as many real frames besides (their
    latents from the frozen encoder). Real reconstructions are always scored against the real
    frames; the drawn frames against the true ones with ``drawn_weight``, and by the critic with
    ``adversarial_weight`` (the critic then takes a step of its own after each of the decoder's).
    """

    def __init__(
        self,
        ae: FrameAutoencoder,
        pairs: DecoderPairs,
        real_frames: np.ndarray,
        steps: int,
        lr: float = 2e-4,
        batch_size: int = 32,
        real_share: float = 0.5,
        gradient_weight: float = 0.5,
        drawn_weight: float = 1.0,
        adversarial_weight: float = 0.0,
        critic_lr: float = 2e-4,
        warmup_steps: int = 50,
        seed: int = 0,
    ) -> None:
        if not len(pairs):
            raise ValueError("no pairs to tune the decoder on")
        if real_share < 0 or drawn_weight < 0 or adversarial_weight < 0:
            got = f"{real_share}, {drawn_weight}, {adversarial_weight}"
            raise ValueError(f"real_share, drawn_weight and adversarial_weight must be >= 0, got {got}")
        if adversarial_weight > 0 and not len(real_frames):
            raise ValueError("the critic needs real frames to tell drawn ones from")
        self.ae, self.pairs, self.real_frames = ae, pairs, real_frames
        self.steps, self.lr, self.batch_size, self.warmup_steps = steps, lr, batch_size, warmup_steps
        self.real_batch = max(1, int(round(real_share * batch_size))) if len(real_frames) else 0
        self.gradient_weight, self.drawn_weight = gradient_weight, drawn_weight
        self.adversarial_weight = adversarial_weight
        self.seed = seed
        ae.requires_grad_(False)
        ae.decoder.requires_grad_(True)
        self.optimizer = torch.optim.Adam(ae.decoder.parameters(), lr=lr)
        self.critic = self.critic_optimizer = None
        if adversarial_weight > 0:
            torch.manual_seed(seed)
            self.critic = FrameCritic().to(ae.latent_mean.device)
            # beta1 = 0: momentum lags a moving target; the usual choice for GAN critics.
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, betas=(0.0, 0.99))
        self.step = 0

    def _batch(self) -> tuple[Tensor, Tensor]:
        """Raw latents and their target pixels in [-1, 1] for this step (a pure function of the
        step): ``batch_size`` drawn latents first, then the real frames' latents."""
        rng = np.random.default_rng([self.seed, self.step])
        device = self.ae.latent_mean.device
        pick = rng.integers(0, len(self.pairs), self.batch_size)
        latents = self.ae.denormalize(torch.from_numpy(self.pairs.latents[pick]).to(device))
        targets = frames_to_float(torch.from_numpy(self.pairs.frames[pick]), device)
        if self.real_batch:
            picked = self.real_frames[rng.integers(0, len(self.real_frames), self.real_batch)]
            real = frames_to_float(torch.from_numpy(picked), device)
            with torch.no_grad():
                latents = torch.cat([latents, self.ae.encode_raw(real)])
            targets = torch.cat([targets, real])
        return latents, targets

    def _frame_loss(self, drawn: Tensor, targets: Tensor) -> Tensor:
        """The autoencoder's loss: pixel L1 plus the weighted Sobel-gradient L1 (0 for no frames)."""
        if not len(drawn):
            return drawn.sum()
        return (drawn - targets).abs().mean() + self.gradient_weight * gradient_l1(drawn, targets)

    def train_step(self) -> dict[str, float]:
        """One step of the decoder (and of the critic, if any); returns the losses and learning rate."""
        latents, targets = self._batch()
        n = self.batch_size
        self.ae.decoder.train()
        frames = self.ae.decode_raw(latents)
        drawn, real = frames[:n], frames[n:]
        drawn_loss, real_loss = self._frame_loss(drawn, targets[:n]), self._frame_loss(real, targets[n:])
        loss = real_loss + self.drawn_weight * drawn_loss
        metrics = {"drawn_loss": float(drawn_loss.detach()), "reconstruction_loss": float(real_loss.detach())}
        if self.critic is not None:
            self.critic.requires_grad_(False)
            fooled = -self.critic(drawn).mean()
            self.critic.requires_grad_(True)
            loss = loss + self.adversarial_weight * fooled
            metrics["adversarial"] = float(fooled.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = lr_at(self.step, self.lr, self.warmup_steps, self.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.ae.decoder.eval()
        if self.critic is not None:
            metrics.update(self._critic_step(drawn.detach(), targets[n:]))
        self.step += 1
        return {**metrics, "lr": lr}

    def _critic_step(self, drawn: Tensor, real: Tensor) -> dict[str, float]:
        """One hinge-loss step of the critic: real frames above +1, drawn ones below -1."""
        assert self.critic is not None and self.critic_optimizer is not None
        real_logits, drawn_logits = self.critic(real), self.critic(drawn)
        loss = F.relu(1 - real_logits).mean() + F.relu(1 + drawn_logits).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        told_apart = 0.5 * ((real_logits > 0).float().mean() + (drawn_logits < 0).float().mean())
        return {"critic": float(loss.detach()), "critic_accuracy": float(told_apart)}

    def state_dict(self) -> dict[str, Any]:
        """The optimizers' and the critic's state, for an exact resume (the decoder is the model's)."""
        state: dict[str, Any] = {"step": self.step, "optimizer": self.optimizer.state_dict()}
        if self.critic is not None:
            state |= {"critic": self.critic.state_dict(), "critic_optimizer": self.critic_optimizer.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])


@torch.no_grad()
def decoder_scores(
    ae: FrameAutoencoder, pairs: DecoderPairs, real_frames: np.ndarray, batch: int = 256
) -> dict[str, float]:
    """How a decoder draws the model's latents and real ones: PSNR and the sharpness ratio
    (Sobel energy over the truth's; 1 = as sharp, and a blurred frame scores low where PSNR does
    not) of the drawn frames against the true ones, by horizon band, and of real reconstructions."""
    ae.eval()
    drawn = np.concatenate(
        [ae.decode(torch.from_numpy(pairs.latents[i : i + batch])).numpy() for i in range(0, len(pairs), batch)]
    )
    scores = {}
    bands = {"all": np.ones(len(pairs), bool), "h1": pairs.horizons == 1, "h2+": pairs.horizons >= 2}
    for name, rows in bands.items():
        if not rows.any():
            continue
        truth = pairs.frames[rows]
        scores[f"drawn_psnr_{name}"] = psnr(torch.from_numpy(truth), torch.from_numpy(drawn[rows]))
        sharpness = sobel_energy(drawn[rows]).mean() / max(sobel_energy(truth).mean(), 1e-8)
        scores[f"drawn_sharpness_{name}"] = float(sharpness)
    if len(real_frames):
        real = torch.from_numpy(real_frames)
        scores["reconstruction_psnr"] = reconstruction_psnr(ae, real, batch)
        scores["reconstruction_sharpness"] = reconstruction_sharpness(ae, real)
    return scores
