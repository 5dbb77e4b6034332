"""Frame and video metrics on inputs whose answers are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from far_world.evaluation.fvd import fvd, fvd_from_features, load_i3d, video_features
from far_world.evaluation.metrics import PSNR_CAP_DB, feature_statistics, frechet_distance, psnr, ssim
from far_world.evaluation.perceptual import LPIPS, load_lpips, lpips_distance

torch.set_num_threads(1)


def _frames(seed: int, shape=(2, 3, 32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----- PSNR -----


def test_psnr_of_identical_frames_is_the_documented_cap():
    x = _frames(0)
    np.testing.assert_allclose(psnr(x, x), PSNR_CAP_DB, rtol=1e-5)


def test_psnr_known_value_and_shape():
    ref = np.zeros((4, 5, 8, 8, 3), np.uint8)
    est = np.full_like(ref, 51)  # MSE = (51/255)^2 = 0.04 -> 10 log10(1/0.04) = 13.98 dB
    out = psnr(ref, est)
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out, 10 * np.log10(1 / 0.04), rtol=1e-5)


def test_psnr_rejects_float_frames():
    with pytest.raises(TypeError):
        psnr(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))


# ----- SSIM -----


def test_ssim_of_identical_frames_is_one():
    x = _frames(1)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-6)


def test_ssim_of_constant_frames_matches_closed_form():
    # No variance: SSIM = (2 mx my + c1) / (mx^2 + my^2 + c1), the contrast term being c2 / c2.
    x = np.full((1, 16, 16, 3), 204, np.uint8)
    y = np.full((1, 16, 16, 3), 102, np.uint8)
    mx, my, c1 = 0.8, 0.4, 0.01**2
    # float32 like torchmetrics: E[x^2] - E[x]^2 leaves ~1e-8 of cancellation noise next to c2 = 9e-4.
    np.testing.assert_allclose(ssim(x, y), (2 * mx * my + c1) / (mx**2 + my**2 + c1), atol=1e-4)


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of one (H, W, 3) pair with scipy's Gaussian filter (11 taps, sigma 1.5), valid region."""
    x, y = x.astype(np.float64) / 255, y.astype(np.float64) / 255
    truncate = 5 / 1.5  # radius 5 -> an 11-tap window

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=(1.5, 1.5, 0), truncate=truncate, mode="constant")[5:-5, 5:-5]

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean())


def test_ssim_matches_an_independent_implementation():
    rng = np.random.default_rng(2)
    x = ndimage.uniform_filter(rng.integers(0, 256, (32, 32, 3)).astype(np.float64), size=(4, 4, 1)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, x.shape), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(ssim(x[None], y[None])[0], _ssim_reference(x, y), atol=1e-5)


# ----- Fréchet distance -----


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 6))
    cov = a @ a.T + np.eye(6)
    mu = rng.standard_normal(6)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_shifted_means_is_squared_shift():
    cov = np.diag([1.0, 2.0, 3.0])
    d = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(np.zeros(3), cov, d, cov) == pytest.approx(float(d @ d), rel=1e-8)


def test_frechet_one_dimensional_closed_form():
    # (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == pytest.approx(4.0 + 1.0)


def test_frechet_two_dimensional_diagonal_closed_form():
    s1, s2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    expected = 1.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = frechet_distance(np.array([0.0, 0.0]), np.diag(s1), np.array([1.0, 0.0]), np.diag(s2))
    assert got == pytest.approx(expected)


def test_feature_statistics_need_two_samples():
    with pytest.raises(ValueError):
        feature_statistics(np.zeros((1, 4)))
    mu, cov = feature_statistics(np.array([[0.0, 0.0], [2.0, 2.0]]))
    np.testing.assert_allclose(mu, [1, 1])
    np.testing.assert_allclose(cov, [[2, 2], [2, 2]])


def test_fvd_from_features_of_samples_of_two_distributions():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4000, 2))
    b = rng.standard_normal((4000, 2)) + np.array([3.0, 0.0])
    assert fvd_from_features(a, b) == pytest.approx(9.0, rel=0.05)
    assert fvd_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


# ----- LPIPS -----


def _lpips_files(tmp_path, seed: int = 0):
    """Random weights saved the way the public files name them: torchvision AlexNet + LPIPS heads."""
    torch.manual_seed(seed)
    net = LPIPS()
    alexnet = {k: torch.randn_like(v) * 0.05 for k, v in net.state_dict().items() if k.startswith("features.")}
    alexnet["classifier.1.weight"] = torch.zeros(4, 4)  # present in torchvision's file, ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(alexnet, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")
    return tmp_path / "alexnet.pth", tmp_path / "alex.pth"


def test_lpips_loads_local_files_and_behaves_as_a_distance(tmp_path):
    net = load_lpips(_lpips_files(tmp_path))
    x, y = _frames(5, (3, 64, 64, 3)), _frames(6, (3, 64, 64, 3))
    np.testing.assert_allclose(lpips_distance(net, x, x), 0.0, atol=1e-7)
    d = lpips_distance(net, x, y)
    assert d.shape == (3,) and (d > 0).all()
    np.testing.assert_allclose(d, lpips_distance(net, y, x), rtol=1e-5)


def test_lpips_without_heads_names_what_is_missing(tmp_path):
    alexnet, _ = _lpips_files(tmp_path)
    with pytest.raises(ValueError, match="heads"):
        load_lpips([alexnet])


# ----- FVD with a stand-in detector of the I3D calling convention -----


class _MomentDetector(nn.Module):
    """Per-channel mean and std of a video: the I3D call signature with 6 features."""

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[-2:] == (224, 224)
        flat = x.flatten(2)
        return torch.cat([flat.mean(2), flat.std(2)], dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script/save: the detector's format
def test_fvd_through_a_torchscript_detector(tmp_path):
    path = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(_MomentDetector()), str(path))
    detector = load_i3d(path)
    white = np.full((2, 4, 16, 16, 3), 255, np.uint8)
    feats = video_features(detector, white)
    np.testing.assert_allclose(feats[:, :3], 1.0, atol=1e-6)  # videos reach the detector in [-1, 1]
    rng = np.random.default_rng(7)
    real = rng.integers(0, 200, (6, 4, 16, 16, 3), dtype=np.uint8)
    assert fvd(detector, real, real) == pytest.approx(0.0, abs=1e-6)
    assert fvd(detector, real, np.clip(real.astype(int) + 50, 0, 255).astype(np.uint8)) > 0.1


def test_load_i3d_rejects_a_non_torchscript_file(tmp_path):
    path = tmp_path / "not_i3d.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="TorchScript"):
        load_i3d(path)
