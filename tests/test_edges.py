"""Image gradients: the edge loss sees blur that pixel L1 forgives."""

from __future__ import annotations

import torch

from far_world.model.edges import gaussian_blur, gradient_l1


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
