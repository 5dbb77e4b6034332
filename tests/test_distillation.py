"""Few-step distillation: the student's grid step is taught to land where the teacher's smaller steps do."""

from __future__ import annotations

import torch

from far_world.model.far import FARModel
from far_world.training import distillation
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


def test_a_guided_teacher_moves_its_guided_rows_along_the_guided_velocity_only(one_thread):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)
    context, x = latents[:, :-1], torch.randn_like(latents[:, -1])
    s, s_next = torch.full((4,), 1.0), torch.full((4,), 0.5)
    plain = teacher_landing(teacher, context, x, actions, s, s_next, substeps=1)
    weights = torch.tensor([1.0, 3.0, 1.0, 3.0])
    guided = teacher_landing(teacher, context, x, actions, s, s_next, substeps=1, guidance=weights)
    # Unguided rows land where the plain teacher does.
    assert torch.allclose(guided[[0, 2]], plain[[0, 2]], atol=1e-6)
    # Guided rows step along v_u + w (v_c - v_u), the unconditional branch dropping the new frame's action only.
    unconditional = actions.clone()
    unconditional[:, -1] = int(teacher.null_action)
    v_uncond = (x - teacher_landing(teacher, context, x, unconditional, s, s_next, substeps=1)) / 0.5
    v_cond = (x - plain) / 0.5
    expected = x - 0.5 * (v_uncond + 3.0 * (v_cond - v_uncond))
    assert torch.allclose(guided[[1, 3]], expected[[1, 3]], atol=1e-5)
    assert not torch.allclose(guided[[1, 3]], plain[[1, 3]], atol=1e-3)


def test_guidance_reaches_the_rows_on_the_first_guided_steps_of_the_grid_only(one_thread):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)

    def loss(guidance: float, guided_steps: int) -> float:
        generator = torch.Generator().manual_seed(0)
        out = distillation_loss(
            model, teacher, latents, actions, 3, substeps=1, generator=generator, guidance=guidance, guided_steps=guided_steps
        )
        return float(out.detach())

    # One substep: the student equals its unguided teacher, so only guided rows leave anything to
    # learn, and each grid step brought under guidance adds its rows' error to the mean.
    assert loss(1.0, 3) < 1e-10
    by_guided_steps = [loss(2.0, n) for n in (1, 2, 3)]
    assert by_guided_steps == sorted(by_guided_steps)
    assert by_guided_steps[-1] > 1e-6


def test_steps_before_from_step_are_left_out_and_the_rest_are_all_taught(one_thread, monkeypatch):
    model, latents, actions = _model_and_clip()
    teacher = frozen_teacher(model)
    starts: list[float] = []

    def recording_landing(teacher, context, x_s, actions, s, *args, **kwargs):
        starts.extend(s.tolist())
        return teacher_landing(teacher, context, x_s, actions, s, *args, **kwargs)

    monkeypatch.setattr(distillation, "teacher_landing", recording_landing)
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        distillation_loss(model, teacher, latents, actions, 3, substeps=1, generator=generator, from_step=1)
    # The 3-step grid starts at flow times 1, 2/3 and 1/3: the first is left to the flow loss.
    assert {round(s, 4) for s in starts} == {0.6667, 0.3333}


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
