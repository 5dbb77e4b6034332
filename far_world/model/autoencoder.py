"""The frame autoencoder: 64x64x3 uint8 frames <-> (C, 8, 8) float latents, one frame at a time.

It is deliberately light: it trains on a 2-core CPU and its decoder runs on every generated
frame. Pixel-unshuffle stems move the spatial work into channels, so the network never
convolves at full resolution: the encoder starts at 16x16 and the decoder ends there, and
a pixel shuffle turns its channels back into pixels.

Latents are normalized by per-channel statistics of the training set (stored as buffers, so
they travel with the weights): the transformer sees zero-mean, unit-variance inputs whatever
scale the encoder happens to learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AEConfig:
    image_size: int = 64
    latent_channels: int = 16
    latent_size: int = 8
    # Pixel-unshuffle factor of the stem: 64x64x3 -> 16x16x48 with 4.
    stem_factor: int = 4
    # Channels per stage; stage 0 runs at image_size / stem_factor, each later stage at half the size.
    channels: tuple[int, ...] = (64, 128)
    blocks_per_stage: int = 1
    # Gaussian noise (in units of the latent's running std) added to latents while training, so the
    # decoder tolerates the small errors of generated latents; 0 = plain autoencoder.
    latent_noise: float = 0.0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        factor = self.stem_factor * 2 ** (len(self.channels) - 1)
        if self.image_size != self.latent_size * factor:
            raise ValueError(
                f"stem_factor {self.stem_factor} and {len(self.channels)} stages downsample by {factor}, "
                f"but image_size {self.image_size} / latent_size {self.latent_size} "
                f"needs {self.image_size // self.latent_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AEConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown AEConfig fields {sorted(unknown)}")
        return cls(**d)


class ResBlock(nn.Module):
    """Two 3x3 convs with a residual path; no normalization (it costs more than it helps at this depth)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # Zero-init the last conv: each block starts as the identity, which keeps early training stable.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])


class FrameAutoencoder(nn.Module):
    """Per-frame conv autoencoder with normalized latents.

    ``encode``/``decode`` speak uint8 pixels and normalized latents (the interface the rest of
    the project uses); ``encode_raw``/``decode_raw`` work on float pixels in [-1, 1] and
    unnormalized latents (for training).
    """

    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        stem_in = 3 * cfg.stem_factor**2

        enc: list[nn.Module] = [nn.PixelUnshuffle(cfg.stem_factor), nn.Conv2d(stem_in, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            enc.append(_stage(c, cfg.blocks_per_stage))
            if i + 1 < len(ch):
                # Strided downsampling by unshuffle + 1x1 conv: no information is dropped before mixing.
                enc += [nn.PixelUnshuffle(2), nn.Conv2d(4 * c, ch[i + 1], 1)]
        enc += [nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[-1], 3, padding=1)]
        for i in range(len(ch) - 1, -1, -1):
            dec.append(_stage(ch[i], cfg.blocks_per_stage))
            if i > 0:
                dec += [nn.Conv2d(ch[i], 4 * ch[i - 1], 1), nn.PixelShuffle(2)]
        dec += [nn.SiLU(), nn.Conv2d(ch[0], stem_in, 3, padding=1), nn.PixelShuffle(cfg.stem_factor)]
        self.decoder = nn.Sequential(*dec)

        self.register_buffer("latent_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_std", torch.ones(cfg.latent_channels))

    # -- float interface (training) --------------------------------------------------------
    def encode_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] -> unnormalized latents (N, C, h, w)."""
        return self.encoder(pixels)

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Unnormalized latents (N, C, h, w) -> (N, 3, H, W) float, nominally in [-1, 1]."""
        return self.decoder(latents)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction of (N, 3, H, W) pixels in [-1, 1]; returns (reconstruction, raw latents)."""
        z = self.encode_raw(pixels)
        if self.training and self.cfg.latent_noise > 0:
            z_in = z + self.cfg.latent_noise * z.detach().std(dim=(0, 2, 3), keepdim=True) * torch.randn_like(z)
        else:
            z_in = z
        return self.decode_raw(z_in), z

    # -- uint8 interface (everyone else) ---------------------------------------------------
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, H, W, 3) -> normalized latents (N, C, h, w), float32."""
        z = self.encode_raw(frames_to_float(frames, self._device()))
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (N, C, h, w), as the world model sees them -> the decoder's raw inputs."""
        return latents * self.latent_std[:, None, None] + self.latent_mean[:, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (N, C, h, w) -> uint8 frames (N, H, W, 3)."""
        return float_to_frames(self.decode_raw(self.denormalize(latents.to(self._device(), torch.float32))))

    @torch.no_grad()
    def fit_latent_stats(self, frames: torch.Tensor, batch_size: int = 256) -> None:
        """Set the per-channel latent mean/std from uint8 frames (N, H, W, 3) of the training set."""
        chunks = [frames[i : i + batch_size] for i in range(0, len(frames), batch_size)]
        zs = [self.encode_raw(frames_to_float(chunk, self._device())) for chunk in chunks]
        z = torch.cat(zs).transpose(0, 1).reshape(self.cfg.latent_channels, -1)
        self.latent_mean.copy_(z.mean(dim=1))
        # The floor keeps a dead channel from being blown up to unit variance from numerical noise.
        self.latent_std.copy_(z.std(dim=1).clamp_min(1e-4))

    def fingerprint(self) -> str:
        """A hash of config and weights (statistics included): names the latents this model makes."""
        digest = hashlib.sha256(json.dumps(self.cfg.to_dict(), sort_keys=True).encode())
        for name, value in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _device(self) -> torch.device:
        return self.latent_mean.device


def frames_to_float(frames: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    return frames.to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def float_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clipped."""
    return pixels.detach().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Mean per-frame PSNR in dB between uint8 frames (N, H, W, 3) (data range 255)."""
    err = (reference.float() - estimate.float()).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / err)).mean())
