"""The adversarial term against blur: which frames it scores, and that its critic pays for detail."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from far_world.model.far import FARModel
from far_world.training.adversarial import AdversarialTerm, NextFramePairs, next_frame_pairs
from far_world.training.presets import FAR_PRESETS, preset


def test_pairs_are_the_denoised_frames_with_a_frame_before_them():
    latents = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1, 1, 1).expand(2, 5, 3, 2, 2)
    estimates = -latents[:, 2:]  # the short window: clip frames 2, 3, 4
    denoised = torch.tensor([[True, False, True], [False, True, False]])
    actions = torch.arange(2 * 5).reshape(2, 5, 1)
    pairs = next_frame_pairs(latents, estimates, denoised, actions)
    assert torch.equal(pairs.estimates, torch.stack([-latents[0, 2], -latents[0, 4], -latents[1, 3]]))
    assert torch.equal(pairs.truths, torch.stack([latents[0, 2], latents[0, 4], latents[1, 3]]))
    assert torch.equal(pairs.previous, torch.stack([latents[0, 1], latents[0, 3], latents[1, 2]]))
    assert pairs.actions[:, 0].tolist() == [2, 4, 8]
    # A whole clip in the short window: its first frame has nothing before it to be judged against.
    pairs = next_frame_pairs(latents, -latents, torch.ones(2, 5, dtype=torch.bool), actions)
    assert len(pairs.estimates) == 2 * 4


def _sharp_and_blurred(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    sharp = torch.randn(n, 4, 8, 8)
    return sharp, F.avg_pool2d(sharp, 3, stride=1, padding=1, count_include_pad=False)


def test_a_critic_that_tells_blur_from_detail_pays_the_model_for_detail(one_thread):
    torch.manual_seed(0)
    term = AdversarialTerm(channels=4, width=16, lr=1e-3, device=torch.device("cpu"))
    previous, no_actions = torch.randn(64, 4, 8, 8), torch.zeros(64, 1, dtype=torch.long)
    for _ in range(150):
        sharp, blurred = _sharp_and_blurred(64)
        stats = term.update(NextFramePairs(blurred, sharp, previous, no_actions))
    assert stats["critic_accuracy"] > 0.9, stats
    sharp, blurred = _sharp_and_blurred(64)
    assert term.model_loss(NextFramePairs(sharp, sharp, previous, no_actions)) < term.model_loss(
        NextFramePairs(blurred, sharp, previous, no_actions)
    )

    # The model's loss moves the frames, never the critic.
    estimates = blurred.clone().requires_grad_(True)
    term.optimizer.zero_grad(set_to_none=True)
    term.model_loss(NextFramePairs(estimates, sharp, previous, no_actions)).backward()
    assert estimates.grad is not None and estimates.grad.abs().sum() > 0
    assert all(p.grad is None for p in term.critic.parameters())


def test_a_critic_given_the_actions_tells_a_frame_that_ignores_its_action(one_thread):
    """Frames follow their action (sign of the shift of the previous frame); the fake ones are
    as sharp but moved the other way. Only a critic that reads the action can tell them apart."""
    def batch(n: int) -> NextFramePairs:
        previous = torch.randn(n, 4, 8, 8)
        actions = torch.randint(0, 2, (n, 1))
        shift = torch.where(actions[:, 0, None, None, None] == 1, 1, -1)
        follows = torch.where(shift > 0, previous.roll(1, dims=3), previous.roll(-1, dims=3))
        ignores = torch.where(shift > 0, previous.roll(-1, dims=3), previous.roll(1, dims=3))
        return NextFramePairs(ignores, follows, previous, actions)

    def accuracy(action_nvec: tuple[int, ...] | None) -> float:
        torch.manual_seed(0)
        term = AdversarialTerm(channels=4, width=16, lr=1e-3, device=torch.device("cpu"), action_nvec=action_nvec)
        for _ in range(200):
            stats = term.update(batch(64))
        return stats["critic_accuracy"]

    assert accuracy((2,)) > 0.8
    assert accuracy(None) < 0.65


def test_training_loss_hands_out_its_clean_estimates_with_their_gradient(one_thread):
    cfg = preset(FAR_PRESETS, "tiny").far
    torch.manual_seed(0)
    model = FARModel(cfg)
    latents = torch.randn(2, 6, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    actions, rewards, ends = torch.randint(0, 6, (2, 6)), torch.zeros(2, 6), torch.zeros(2, 6, dtype=torch.bool)
    plain = model.training_loss(latents, actions, rewards, ends, torch.Generator().manual_seed(1))
    out = model.training_loss(latents, actions, rewards, ends, torch.Generator().manual_seed(1), keep_estimates=True)
    assert torch.equal(plain["loss"], out["loss"])
    assert out["estimates"].shape == (2, cfg.short_window, *latents.shape[2:])
    assert out["denoised"].shape == (2, cfg.short_window) and out["denoised"].dtype == torch.bool
    assert out["estimates"].requires_grad
