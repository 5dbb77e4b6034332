"""Drift control: the model's own estimates shown as context in training."""

from __future__ import annotations

import torch

from far_world.model.far import FARModel
from far_world.training.presets import FAR_PRESETS, apply_overrides, preset
from far_world.training.self_context import own_estimates


def _model_and_clip(clean_context_prob: float = 0.5):
    cfg = apply_overrides(preset(FAR_PRESETS, "tiny"), [f"far.clean_context_prob={clean_context_prob}"]).far
    torch.manual_seed(0)
    model = FARModel(cfg)
    with torch.no_grad():  # zero-initialized outputs would make every estimate the noisy input
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latents = torch.randn(2, 7, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    actions = torch.randint(0, 6, (2, 7))
    return model, latents, actions


def test_estimates_replace_only_short_window_frames(one_thread):
    model, latents, actions = _model_and_clip()
    n_long = latents.shape[1] - model.cfg.short_window
    shown = own_estimates(model, latents, actions, prob=1.0, max_time=0.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shown[:, :n_long], latents[:, :n_long])
    assert (shown[:, n_long:] - latents[:, n_long:]).abs().mean() > 1e-3
    untouched = own_estimates(model, latents, actions, prob=0.0, max_time=0.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(untouched, latents)


def test_context_latents_change_the_loss_only_through_clean_frames(one_thread):
    model, latents, actions = _model_and_clip()
    rewards, ends = torch.zeros(2, 7), torch.zeros(2, 7, dtype=torch.bool)

    def flow(shown=None, clean_prob=None):
        return model.training_loss(latents, actions, rewards, ends, torch.Generator().manual_seed(1), shown)["flow"]

    assert torch.equal(flow(), flow(latents))  # the truth shown as context: the same loss, same draws
    assert not torch.allclose(flow(), flow(latents + 0.5))
    model.cfg.clean_context_prob = 0.0  # no short-window context frame: only long frames are clean
    n_long = latents.shape[1] - model.cfg.short_window
    changed_short = latents.clone()
    changed_short[:, n_long:] += 0.5
    assert torch.equal(flow(), flow(changed_short))
