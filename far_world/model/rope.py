"""3D rotary position embedding on (frame, row, col) and FlexRoPE's temporal logit bias.

Every token has a position (frame, row, col). Rows and columns are measured in latent
pixels at the centre of the token's patch, so a long-term token (a 4x4 patch) sits among the
short-term tokens of its area instead of on a coarser grid of its own.

The head dim is rotated in planes (i, i + D/2), the rotate-half layout: the first D/2
channels pair with the last D/2. Of the D/2 planes, the first dt/2 turn with the frame, the
next dh/2 with the row and the last dw/2 with the column.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of the head dim given to (frame, row, col): 16:24:24 at 64, scaled, all even."""
    if head_dim % 4:
        raise ValueError(f"head dim {head_dim} must be divisible by 4")
    t = 2 * max(1, round(head_dim / 8))
    if ((head_dim - t) // 2) % 2:
        t += 2
    s = (head_dim - t) // 2
    if s < 2:
        raise ValueError(f"head dim {head_dim} is too small for a 3D rotary split")
    return t, s, s


def axis_frequencies(dim: int, theta: float) -> Tensor:
    """Rotation speeds of one axis's dim/2 planes: theta^(-2i/dim), float32 (dim/2,)."""
    return theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim).float()


def patch_centres(latent_size: int, patch: int) -> Tensor:
    """(row, col) of each patch's centre in latent pixels, row-major: float32 (T, 2), T = (size/patch)^2."""
    n = latent_size // patch
    centre = torch.arange(n, dtype=torch.float32) * patch + (patch - 1) / 2
    rows, cols = torch.meshgrid(centre, centre, indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1)


def rope_angles(frame_pos: Tensor, centres: Tensor, head_dim: int, theta: float) -> Tensor:
    """Rotation angles of every token of every frame.

    frame_pos (..., F) frame positions (any real), centres (T, 2) -> (..., F*T, head_dim/2), frame-major.
    """
    dt, dh, dw = rope_split(head_dim)
    device = frame_pos.device
    f_t = axis_frequencies(dt, theta).to(device)
    f_h = axis_frequencies(dh, theta).to(device)
    f_w = axis_frequencies(dw, theta).to(device)
    centres = centres.to(device)
    temporal = frame_pos.float()[..., None] * f_t  # (..., F, dt/2)
    spatial = torch.cat([centres[:, :1] * f_h, centres[:, 1:] * f_w], dim=-1)  # (T, (dh+dw)/2)
    *lead, frames = frame_pos.shape
    tokens = centres.shape[0]
    angles = torch.cat(
        [
            temporal[..., None, :].expand(*lead, frames, tokens, dt // 2),
            spatial.expand(*lead, frames, tokens, spatial.shape[-1]),
        ],
        dim=-1,
    )
    return angles.reshape(*lead, frames * tokens, head_dim // 2)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., N, D) by angles given as cos, sin (..., N, D/2); returns x's dtype.

    The tables stay float32 under bf16 autocast: angles of far frames lose their phase in bf16.
    """
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class RopeTable:
    """cos and sin of :func:`rope_angles` at the integer frame positions 0..P-1, per device, built
    once and grown on demand: inference lays out tokens several times a step at positions that
    repeat (they are re-based to the oldest frame held), so a lookup replaces recomputing them.

    The table holds exactly what rope_angles gives for those positions. Negative positions mark
    empty cache slots, which are masked out; they read position 0.
    """

    def __init__(self, centres: Tensor, head_dim: int, theta: float) -> None:
        self.centres, self.head_dim, self.theta = centres, head_dim, theta
        self._tables: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def lookup(self, frame_pos: Tensor) -> tuple[Tensor, Tensor]:
        """frame_pos (..., F) integer positions -> cos, sin each (..., F*T, head_dim/2), frame-major."""
        *lead, frames = frame_pos.shape
        pos = frame_pos.long().clamp(min=0)
        needed = int(pos.max()) + 1 if pos.numel() else 1
        cos, sin = self._tables.get(frame_pos.device, (None, None))
        if cos is None or cos.shape[0] < needed:
            size = max(needed, 2 * (0 if cos is None else cos.shape[0]), 64)
            angles = rope_angles(torch.arange(size, device=frame_pos.device), self.centres, self.head_dim, self.theta)
            angles = angles.view(size, len(self.centres), self.head_dim // 2)
            cos, sin = angles.cos(), angles.sin()
            self._tables[frame_pos.device] = cos, sin
        shape = (*lead, frames * len(self.centres), self.head_dim // 2)
        return cos[pos].reshape(shape), sin[pos].reshape(shape)


def flex_rope_slopes(slope: float | Sequence[float], heads: int, device: torch.device) -> Tensor | None:
    """FlexRoPE slopes (heads,) from one slope or one per head, or None when all are 0: then no
    bias is added at all, so slope 0 is plain RoPE exactly."""
    slopes = torch.as_tensor(slope, dtype=torch.float32).flatten()
    if not bool(slopes.any()):
        return None
    if len(slopes) not in (1, heads):
        raise ValueError(f"flex_rope_slope needs one slope or one per head ({heads}), got {len(slopes)}")
    return slopes.expand(heads).to(device)


def flex_rope_bias(q_frame: Tensor, k_frame: Tensor, slopes: Tensor) -> Tensor:
    """FlexRoPE's additive logit bias -slope_h * (query frame - key frame).

    q_frame (B, Nq), k_frame (B, Nk) frame positions, slopes (H,) -> float32 (B, H, Nq, Nk).
    It decays attention to distant frames the longer the gap, a test-time knob to extrapolate
    beyond the context lengths seen in training; only differences matter, so re-basing frame
    positions leaves it unchanged.
    """
    gap = (q_frame[:, :, None] - k_frame[:, None, :]).float()
    return -slopes.float().view(1, -1, 1, 1) * gap[:, None]
