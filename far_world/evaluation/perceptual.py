"""LPIPS (AlexNet variant) from local weight files, and the distance head ST-LPIPS shares with it.

LPIPS compares deep features: both images, scaled to [-1, 1] and shifted/scaled per channel,
go through AlexNet's five conv stages; each stage's ReLU output is unit-normalized along
channels, the squared difference is weighted per channel by a learnt non-negative 1x1 "linear
head", averaged over space and summed over stages.

Weights come from two public files, passed together (their keys do not overlap):
  - AlexNet's ImageNet weights in torchvision's naming (``features.{0,3,6,8,10}.{weight,bias}``;
    ``classifier.*`` is ignored), e.g. ``alexnet-owt-7be5be79.pth``;
  - the LPIPS linear heads (``lin{0..4}.model.1.weight``, shape (1, C, 1, 1), as the LPIPS
    project's ``weights/v0.1/alex.pth`` names them; ``lin{k}.weight`` is accepted too).
A single file holding both sets of keys works as well. Files are read with
``torch.load(weights_only=True)``: a weight file never runs code. No registry package ships
torchvision's AlexNet weights, so LPIPS needs files the user brings; the shift-tolerant
ST-LPIPS (``far_world.evaluation.stlpips``), whose weights the ``metrics`` extra ships, is the
perceptual distance available offline.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

# Per-channel shift and scale LPIPS applies to [-1, 1] inputs before AlexNet.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# (out channels, kernel, stride, padding) of AlexNet's conv layers; a max-pool follows the first two.
_CONVS = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# Indices of the convs in torchvision's ``alexnet().features`` (ReLUs and pools in between).
_TORCHVISION_INDEX = (0, 3, 6, 8, 10)


class PerceptualDistance(nn.Module):
    """The LPIPS distance head over a trunk's five ReLU stages; subclasses build ``features``.

    Both LPIPS and ST-LPIPS: inputs shifted/scaled per channel, each stage unit-normalized along
    channels, squared differences weighted per channel by the linear heads, averaged over space
    and summed over stages. ``_STAGE_ENDS`` lists the ``features`` indices whose outputs are stages.
    """

    _STAGE_ENDS: tuple[int, ...] = ()

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.heads = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c, *_ in _CONVS)
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None], persistent=False)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output for images (N,3,H,W) in [-1, 1]."""
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._STAGE_ENDS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance (N,) between images x, y (N,3,H,W) in [-1, 1]; at least 32x32 pixels."""
        total = x.new_zeros(len(x))
        for fx, fy, head in zip(self._stages(x), self._stages(y), self.heads):
            # LPIPS normalizes with an epsilon of 1e-10 added to the norm.
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((fx - fy).pow(2) * head).sum(1).mean(dim=(1, 2))
        return total


class LPIPS(PerceptualDistance):
    """LPIPS distance with torchvision's AlexNet trunk; build it with :func:`load_lpips`."""

    # The ReLUs after each conv in torchvision's ``alexnet().features``.
    _STAGE_ENDS = tuple(i + 1 for i in _TORCHVISION_INDEX)

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        channels = 3
        for i, (out, kernel, stride, pad) in enumerate(_CONVS):
            if i in (1, 2):
                layers.append(nn.MaxPool2d(3, 2))
            layers += [nn.Conv2d(channels, out, kernel, stride, pad), nn.ReLU()]
            channels = out
        # Same module indices as torchvision's AlexNet, so its state dict loads unchanged.
        super().__init__(nn.Sequential(*layers))


def head_key(key: str) -> str | None:
    """``heads.K`` for an LPIPS-project linear-head key (``lin{K}.model.1.weight``, ``lin{K}.weight``)."""
    head = re.fullmatch(r"(?:net\.)?lin(\d)(?:\.model\.1)?\.weight", key)
    return f"heads.{head.group(1)}" if head else None


def _lpips_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision AlexNet and LPIPS head keys onto :class:`LPIPS`'s own."""
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            out[key] = value
        elif head_key(key):
            out[head_key(key)] = value
    return out


def load_lpips(paths: Sequence[str | os.PathLike], device: str | torch.device = "cpu") -> LPIPS:
    """Build LPIPS from one or more local state-dict files (see the module doc).

    Raises ValueError naming what is missing when the files do not hold every weight.
    """
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: not a state dict")
        state.update(_lpips_keys(loaded))
    net = LPIPS()
    missing = sorted(set(net.state_dict()) - set(state))
    if missing:
        raise ValueError(
            f"LPIPS weights incomplete: {missing} not found in {[str(p) for p in paths]} "
            "(pass torchvision's AlexNet weights and the LPIPS alex.pth linear heads)"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"LPIPS weights do not fit an AlexNet trunk: {exc}") from exc
    return net.to(device).eval()


def lpips_distance(
    net: PerceptualDistance, reference: np.ndarray, estimate: np.ndarray, batch: int = 256
) -> np.ndarray:
    """Per-frame distance (LPIPS or ST-LPIPS, as ``net`` is) of uint8 frames (..., H, W, 3); returns shape (...)."""
    lead = reference.shape[:-3]
    ref = reference.reshape(-1, *reference.shape[-3:])
    est = estimate.reshape(-1, *estimate.shape[-3:])
    device = net.shift.device
    out = np.empty(len(ref), np.float64)

    def to_input(frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1

    with torch.no_grad():
        for lo in range(0, len(ref), batch):
            out[lo : lo + batch] = net(to_input(ref[lo : lo + batch]), to_input(est[lo : lo + batch])).cpu().numpy()
    return out.reshape(lead)
