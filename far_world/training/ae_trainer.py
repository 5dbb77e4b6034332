"""One autoencoder training run: L1 reconstruction of random frames, resumable at any step."""

from __future__ import annotations

import time

import numpy as np
import torch

from far_world.checkpoint import TrainingState, capture_rng_state, restore_rng_state
from far_world.data.clips import FrameDataset
from far_world.data.episodes import iter_episodes
from far_world.evaluation.metrics import sobel_energy
from far_world.model.autoencoder import FrameAutoencoder, frames_to_float, psnr
from far_world.model.edges import gradient_l1
from far_world.training.presets import AETrainConfig
from far_world.training.schedule import lr_at


class AETrainer:
    """Model and optimizer of an autoencoder run; frames come from ``FrameDataset.sample_batch(step)``."""

    def __init__(self, cfg: AETrainConfig, dataset: FrameDataset, device: torch.device) -> None:
        self.cfg, self.dataset, self.device = cfg, dataset, device
        torch.manual_seed(cfg.seed)
        self.model = FrameAutoencoder(cfg.ae).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0

    def train_step(self) -> dict[str, float]:
        """One optimizer step on the batch of the current step; returns loss, lr, images/s."""
        cfg = self.cfg
        start = time.perf_counter()
        frames = torch.from_numpy(self.dataset.sample_batch(cfg.batch_size, self.step))
        pixels = frames_to_float(frames, self.device)
        self.model.train()
        reconstruction, _ = self.model(pixels)
        l1 = (reconstruction - pixels).abs().mean()
        loss = l1
        edges = None
        if cfg.gradient_loss_weight > 0:
            edges = gradient_l1(reconstruction, pixels)
            loss = loss + cfg.gradient_loss_weight * edges
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        seconds = time.perf_counter() - start
        metrics = {
            "l1": float(l1.detach()), "lr": lr, "grad_norm": float(grad_norm),
            "images_per_s": cfg.batch_size / seconds,
        }  # fmt: skip
        if edges is not None:
            metrics["gradient_l1"] = float(edges.detach())
        return metrics

    @torch.no_grad()
    def fit_latent_stats(self) -> None:
        """Latent mean/std from ``stats_frames`` training frames (a fixed draw, independent of the run's steps)."""
        self.model.eval()
        frames = FrameDataset(self.dataset.store.keys, seed=self.cfg.seed + 1).sample_batch(self.cfg.stats_frames, 0)
        self.model.fit_latent_stats(torch.from_numpy(frames))

    def training_state(self) -> TrainingState:
        return TrainingState(
            step=self.step,
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng=capture_rng_state(),
            config=self.cfg.to_dict(),
        )

    def load_training_state(self, state: TrainingState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        restore_rng_state(state.rng)
        self.step = int(state.step)


def held_out_frames(folder: str, count: int) -> torch.Tensor:
    """Up to ``count`` frames spread evenly over every episode of ``folder``: uint8 (N, H, W, 3)."""
    episodes = [ep.frames for _, ep in iter_episodes(folder, mmap=True)]
    if not episodes:
        raise ValueError(f"no episodes in {folder}")
    total = sum(len(f) for f in episodes)
    picks = np.unique(np.linspace(0, total - 1, num=min(count, total)).astype(np.int64))
    ends = np.cumsum([len(f) for f in episodes])
    which = np.searchsorted(ends, picks, side="right")
    offsets = picks - (ends[which] - [len(episodes[w]) for w in which])
    return torch.from_numpy(np.stack([np.array(episodes[w][o]) for w, o in zip(which, offsets)]))


@torch.no_grad()
def reconstruct(ae: FrameAutoencoder, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """encode -> decode of uint8 frames (N, H, W, 3), in batches."""
    ae.eval()
    chunks = [frames[i : i + batch_size] for i in range(0, len(frames), batch_size)]
    return torch.cat([ae.decode(ae.encode(chunk)).cpu() for chunk in chunks])


def reconstruction_psnr(ae: FrameAutoencoder, frames: torch.Tensor, batch_size: int = 256) -> float:
    """Mean per-frame PSNR (dB) of encode -> decode on uint8 frames (N, H, W, 3)."""
    return psnr(frames, reconstruct(ae, frames, batch_size))


def reconstruction_sharpness(ae: FrameAutoencoder, frames: torch.Tensor) -> float:
    """Sobel energy of the reconstructions over that of the frames (1.0 = just as sharp): PSNR
    alone rewards a blurred reconstruction, this does not."""
    real = sobel_energy(frames.numpy()).mean()
    return float(sobel_energy(reconstruct(ae, frames).numpy()).mean() / max(real, 1e-8))
