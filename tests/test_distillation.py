"""Few-step distillation: the student's grid step is taught to land where the teacher's smaller steps do."""

from __future__ import annotations

import torch

from far_world.model.far import FARModel
from far_world.training.distillation import distillation_loss, frozen_teacher, teacher_landing
from far_world.training.presets import FAR_PRESETS, apply_overrides, preset


def _model_and_clip() -> tuple[FARModel, torch.Tensor, torch.Tensor]:
    cfg = apply_overrides(preset(FAR_PRESETS, "tiny"), ["far.action_nvec=6"]).far
    torch.manual_seed(0)
    model = FARModel(cfg)
    with torch.no_grad():  # zero-initialized outputs would make every velocity 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    latents = torch.randn(4, 5, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    return model, latents, torch.randint(0, 6, (4, 5))


def test_a_student_equal_to_its_teacher_has_nothing_to_learn_from_one_substep(one_thread):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)
    loss = distillation_loss(model, teacher, latents, actions, 3, substeps=1, generator=torch.Generator().manual_seed(0))
    assert loss < 1e-10
    # With smaller teacher steps the landing moves: the student has a target to learn.
    loss = distillation_loss(model, teacher, latents, actions, 3, substeps=4, generator=torch.Generator().manual_seed(0))
    assert loss > 1e-6


def test_teacher_landing_is_its_euler_integration_and_the_teacher_stays_frozen(one_thread):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)
    assert not any(p.requires_grad for p in teacher.parameters())
    context, x = latents[:, :-1], torch.randn_like(latents[:, -1])
    s, s_next = torch.full((4,), 1.0), torch.full((4,), 0.5)
    two = teacher_landing(teacher, context, x, actions, s, s_next, substeps=2)
    half = teacher_landing(teacher, context, x, actions, s, torch.full((4,), 0.75), substeps=1)
    assert torch.allclose(two, teacher_landing(teacher, context, half, actions, torch.full((4,), 0.75), s_next, 1), atol=1e-6)


def test_training_on_the_loss_brings_the_student_to_the_teachers_landing(one_thread):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        return distillation_loss(model, teacher, latents, actions, 2, substeps=4, generator=torch.Generator().manual_seed(0))

    first = float(loss().detach())
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < 0.5 * first
