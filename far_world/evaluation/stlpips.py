"""ST-LPIPS (Ghildyal & Liu, 2022): the shift-tolerant LPIPS with its own AlexNet, weights from
``stlpips-pytorch==0.0.2`` (``stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth``).

A published metric in its own right, not LPIPS: the AlexNet trunk was retrained with
anti-aliased downsampling, so a one-pixel shift moves it much less than blur does, and its
figures are not comparable with LPIPS tables. It is named ST-LPIPS wherever it is reported.

The package's own code imports torchvision, which must never be installed beside this
project's CPU torch, so the trunk is built here (the package's ``shift_tolerant`` AlexNet):
conv 11x11 at stride 1, then every stride-2 step done as reflect-pad 2 + a 3x3 binomial blur at
stride 2 (``Downsample(pad_more=True)``), max pools at stride 1. The package is installed
without dependencies, never imported, and its weight file is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from far_world.evaluation.perceptual import _SCALE, _SHIFT, PerceptualDistance, head_key
from far_world.evaluation.weight_files import package_file


class BlurDownsample(nn.Module):
    """Reflect-pad 2, then a per-channel 3x3 binomial ([1,2,1] x [1,2,1] / 16) blur at stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(a, a) / 16
        self.register_buffer("filt", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class STLPIPS(PerceptualDistance):
    """ST-LPIPS with the shift-tolerant AlexNet; build it with :func:`load_stlpips`."""

    # Module indices as in the package's ``features`` (its state-dict keys map one to one).
    _STAGE_ENDS = (2, 6, 10, 12, 14)

    def __init__(self) -> None:
        super().__init__(
            nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=1, padding=2),
                BlurDownsample(64),
                nn.ReLU(),  # 2
                nn.MaxPool2d(3, stride=1),
                BlurDownsample(64),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.ReLU(),  # 6
                nn.MaxPool2d(3, stride=1),
                BlurDownsample(192),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.ReLU(),  # 10
                nn.Conv2d(384, 256, 3, padding=1),
                nn.ReLU(),  # 12
                nn.Conv2d(256, 256, 3, padding=1),
                nn.ReLU(),  # 14
            )
        )


def default_stlpips_weights() -> Path | None:
    """The stlpips-pytorch package's AlexNet weight file, if that package is installed (never imported)."""
    return package_file("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth")


def _stlpips_keys(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The package's keys (``net.slice{k}.{i}.*``, ``lin{k}.model.1.weight``) onto :class:`STLPIPS`'s."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
            out[f"features.{parts[2]}.{parts[3]}"] = value
        elif head_key(key):
            out[head_key(key)] = value
        elif key in ("scaling_layer.shift", "scaling_layer.scale"):
            expected = torch.tensor(_SHIFT if key.endswith("shift") else _SCALE)
            if not torch.allclose(value.flatten().float(), expected, atol=1e-6):
                raise ValueError(f"{path}: {key} {value.flatten().tolist()} differs from LPIPS's {expected.tolist()}")
    return out


def load_stlpips(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> STLPIPS:
    """ST-LPIPS from the package's AlexNet weight file (default: the installed ``stlpips-pytorch``'s).

    Raises ValueError naming the file when it is missing or does not fit the network.
    """
    path = path if path is not None else default_stlpips_weights()
    if path is None:
        raise ValueError("no ST-LPIPS weights: install the metrics extra (stlpips-pytorch) or pass a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise ValueError(f"{path}: not a readable weights-only state dict ({exc})") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: not a state dict")
    net = STLPIPS()
    state = _stlpips_keys(loaded, path)
    missing = sorted(set(net.state_dict()) - set(state))
    if missing:
        raise ValueError(f"{path}: ST-LPIPS weights incomplete, {missing[:4]} not found")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the shift-tolerant AlexNet: {exc}") from exc
    return net.to(device).eval()
