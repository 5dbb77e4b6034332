"""Drift control: the model's own estimates and rollouts shown as context in training."""

from __future__ import annotations

import torch

from far_world.model.far import CONTEXT, FARModel
from far_world.model.sampler import SamplingSettings, sample_euler
from far_world.training.presets import FAR_PRESETS, apply_overrides, preset
from far_world.training.self_context import own_estimates, own_rollouts


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


def test_rollouts_are_the_models_free_play_under_the_clips_actions(one_thread):
    model, latents, actions = _model_and_clip()
    settings = SamplingSettings(steps=2)
    rolled = own_rollouts(model, latents, actions, 3, settings, torch.Generator().manual_seed(3))
    start, last = 3, latents.shape[1] - 1
    assert torch.equal(rolled[:, :start], latents[:, :start]) and torch.equal(rolled[:, last], latents[:, last])

    # The uncached reference, frame by frame from the same noise: each generated frame joins the
    # context clean and is followed under the action into it.
    generator = torch.Generator().manual_seed(3)
    expected = latents.clone()
    for t in range(start, last):
        noise = torch.randn(latents[:, t].shape, generator=generator)

        def velocity(x, s, t=t):
            clip = torch.cat([expected[:, :t], x[:, None]], dim=1)
            times = torch.full(clip.shape[:2], float(CONTEXT))
            times[:, -1] = s
            with torch.no_grad():
                return model.velocity(clip, actions[:, : t + 1], times)[:, -1]

        expected[:, t] = sample_euler(velocity, noise, settings.steps, settings.guidance, settings.time_shift)
    assert torch.allclose(rolled, expected, atol=1e-4)

    other_actions = (actions + 1) % 6
    elsewhere = own_rollouts(model, latents, other_actions, 3, settings, torch.Generator().manual_seed(3))
    assert not torch.allclose(elsewhere[:, start:last], rolled[:, start:last], atol=1e-3)


def test_rollouts_refuse_clips_too_short_to_hold_them(one_thread):
    model, latents, actions = _model_and_clip()
    try:
        own_rollouts(model, latents, actions, latents.shape[1] - 1, SamplingSettings(steps=1))
    except ValueError as err:
        assert "at least" in str(err)
    else:
        raise AssertionError("a rollout that leaves no true prompt frame must be refused")


def test_last_frame_rows_denoise_only_their_last_frame(one_thread):
    model, latents, actions = _model_and_clip(clean_context_prob=0.0)
    rewards, ends = torch.zeros(2, 7), torch.zeros(2, 7, dtype=torch.bool)
    shown = latents + 0.3

    def flow(truth, rows):
        out = model.training_loss(truth, actions, rewards, ends, torch.Generator().manual_seed(1), shown, rows)
        return out["flow"]

    every_row = torch.ones(2, dtype=torch.bool)
    changed_before_last = latents.clone()
    changed_before_last[:, :-1] += 0.5  # only the last frame's truth is a target in these rows
    assert torch.equal(flow(latents, every_row), flow(changed_before_last, every_row))
    changed_last = latents.clone()
    changed_last[:, -1] += 0.5
    assert not torch.allclose(flow(latents, every_row), flow(changed_last, every_row))
    # Rows not flagged train as before: their short-window frames are all denoised targets.
    no_row = torch.zeros(2, dtype=torch.bool)
    assert torch.equal(flow(latents, no_row), flow(latents, None))
    assert not torch.allclose(flow(latents, no_row), flow(changed_before_last, no_row))


def test_heads_learn_only_from_frames_shown_as_they_truly_are(one_thread):
    model, latents, actions = _model_and_clip(clean_context_prob=0.0)
    ends = torch.zeros(2, 7, dtype=torch.bool)
    every_row = torch.ones(2, dtype=torch.bool)  # all frames but the last are clean context
    shown = latents.clone()
    shown[:, 4] += 0.5  # the model's own frame 4, as a rollout would show it

    def reward_loss(rewards):
        generator = torch.Generator().manual_seed(1)
        return model.training_loss(latents, actions, rewards, ends, generator, shown, every_row)["reward"]

    rewards = torch.zeros(2, 7)
    relabelled_own = rewards.clone()
    relabelled_own[:, 4] = 5.0
    assert torch.equal(reward_loss(rewards), reward_loss(relabelled_own))
    relabelled_true = rewards.clone()
    relabelled_true[:, 5] = 5.0
    assert not torch.allclose(reward_loss(rewards), reward_loss(relabelled_true))
