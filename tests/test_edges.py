"""Image gradients: the edge loss sees blur that pixel L1 forgives."""

from __future__ import annotations

import torch

import pytest

from far_world.model.edges import detail_weights, gaussian_blur, gradient_l1


def _step_edges() -> torch.Tensor:
    """A hard vertical and horizontal edge, (1,3,32,32) in [0,1]."""
    img = torch.zeros(1, 3, 32, 32)
    img[..., :, 16:] = 1.0
    img[..., 20:, :] = 0.5
    return img


def test_gradient_loss_is_zero_for_a_copy_and_positive_for_a_blur():
    img = _step_edges()
    assert gradient_l1(img, img) == 0
    blurred = torch.nn.functional.pad(gaussian_blur(img, 1.5), (3, 3, 3, 3), mode="replicate")
    assert gradient_l1(blurred, img) > 0.05


def test_gradient_loss_charges_lost_texture_not_a_tint_of_equal_pixel_error():
    """Pixel L1 cannot tell a blurred texture from a faint tint with the same mean error; the
    edge term charges only the lost texture."""
    torch.manual_seed(0)
    img = torch.rand(1, 3, 32, 32)
    blurred = torch.nn.functional.pad(gaussian_blur(img, 1.0), (2, 2, 2, 2), mode="replicate")
    tinted = img + (blurred - img).abs().mean()
    assert torch.isclose((blurred - img).abs().mean(), (tinted - img).abs().mean())
    assert gradient_l1(tinted, img) < 1e-5 < 0.1 < gradient_l1(blurred, img)


def test_detail_weights_single_out_a_small_thing_on_a_flat_frame():
    """A medkit-sized odd cell on a flat latent frame weighs most; the frame's mean weight stays 1."""
    latents = torch.zeros(2, 3, 16, 8, 8)
    latents[..., 5, 2] = 4.0
    weights = detail_weights(latents, strength=3.0)
    assert weights.shape == (2, 3, 1, 8, 8)
    assert torch.allclose(weights.mean(dim=(-2, -1)), torch.ones(2, 3, 1))
    assert weights[0, 0, 0].flatten().argmax().item() == 5 * 8 + 2
    far_corner = weights[0, 0, 0, 0, 7]
    assert weights[0, 0, 0, 5, 2] > 3 * far_corner


@pytest.mark.parametrize("strength", [0.0, 3.0])
def test_detail_weights_are_even_without_strength_or_contrast(strength):
    torch.manual_seed(0)
    textured = torch.randn(4, 16, 8, 8)
    flat = torch.ones(4, 16, 8, 8)
    assert torch.allclose(detail_weights(flat, strength), torch.ones(4, 1, 8, 8))
    if strength == 0:
        assert torch.allclose(detail_weights(textured, strength), torch.ones(4, 1, 8, 8))
