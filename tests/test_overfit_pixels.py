"""A tiny FAR model overfits one real clip: its cached rollout, decoded to pixels, reconstructs it."""

from __future__ import annotations

import pytest
import torch

from far_world.checkpoint import load_world_checkpoint
from far_world.evaluation.metrics import psnr
from far_world.model.autoencoder import FrameAutoencoder
from far_world.model.config import FARConfig
from far_world.model.far import FARModel
from far_world.model.inference import CachedSampler
from far_world.model.sampler import SamplingSettings
from far_world.world import default_checkpoint_path


@pytest.mark.skipif(not default_checkpoint_path().is_file(), reason="needs the released checkpoint's autoencoder")
def test_overfit_clip_rollout_exceeds_28_db_in_decoded_pixels():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ckpt = load_world_checkpoint(default_checkpoint_path())
        ae = FrameAutoencoder(ckpt.ae_config).eval()
        ae.load_state_dict(ckpt.ae_state)
        frames = ckpt.prompt_frames[0, :6]  # six real maze frames
        actions = ckpt.prompt_actions[0:1, :6].clone()
        actions[0, 0] = ckpt.far_config.action_nvec[0]  # nothing led into the first frame: null
        with torch.no_grad():
            latents = ae.encode(frames)[None]
        torch.manual_seed(0)
        cfg = FARConfig(
            latent_channels=latents.shape[2], depth=2, width=128, heads=2, patch_size=2, short_window=4,
            max_long_frames=8, action_nvec=ckpt.far_config.action_nvec, clean_context_prob=0.5, action_dropout=0.0,
        )
        model = FARModel(cfg)
        g = torch.Generator().manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
        steps = 1200
        # Linear decay to zero: the last steps polish the fit instead of jittering around it.
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1 - i / steps)
        zeros = torch.zeros(8, 6)
        for step in range(steps):
            length = 2 + step % 5  # every prefix: the rollout meets each layout
            out = model.training_loss(
                latents[:, :length].expand(8, -1, -1, -1, -1), actions[:, :length].expand(8, -1),
                zeros[:, :length], zeros[:, :length].bool(), g,
            )
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            schedule.step()
        model.eval()
        sampler, settings = CachedSampler(model), SamplingSettings(steps=8)
        state = sampler.new_cache(1)
        sampler.prefill(state, latents[:, :2], actions[:, :2], settings)
        noise = torch.Generator().manual_seed(1)
        generated = torch.cat([sampler.generate(state, actions[:, t], settings, generator=noise).latents for t in range(2, 6)])
        with torch.no_grad():
            rollout_pixels = ae.decode(generated).numpy()
            target_pixels = ae.decode(latents[0, 2:]).numpy()
        scores = psnr(target_pixels, rollout_pixels)
        assert scores.min() > 28.0, f"decoded rollout PSNR per frame {scores.round(2).tolist()}"
    finally:
        torch.set_num_threads(threads)
