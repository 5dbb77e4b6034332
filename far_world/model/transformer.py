"""The FAR transformer's pieces: patchify, the frame-causal mask, adaLN blocks with two token streams.

A sequence is one joint run of tokens [long ; short]: long-term frames (4 tokens each) first,
then short-term frames (16 or 64 tokens each). The two streams have their own input, Q/K/V and
output projections and q/k norms (MM-DiT style); modulation and the MLP are shared, so a frame
is described by one conditioning vector whichever stream it travels in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from far_world.model.rope import apply_rope


def patchify(latents: Tensor, patch: int) -> Tensor:
    """'b f c (h p1) (w p2) -> b f (h w) (c p1 p2)': frames (B,F,C,H,W) to tokens (B,F,T,C*p*p)."""
    return rearrange(latents, "b f c (h p1) (w p2) -> b f (h w) (c p1 p2)", p1=patch, p2=patch)


def unpatchify(tokens: Tensor, patch: int, size: int) -> Tensor:
    """Inverse of :func:`patchify`: tokens (B,F,T,C*p*p) to frames (B,F,C,size,size)."""
    return rearrange(tokens, "b f (h w) (c p1 p2) -> b f c (h p1) (w p2)", h=size // patch, p1=patch, p2=patch)


def frame_attention_mask(
    q_frame: Tensor, k_frame: Tensor, q_valid: Tensor | None = None, k_valid: Tensor | None = None
) -> Tensor:
    """Block-causal mask: a query attends to every key of its own frame and of earlier frames.

    q_frame (B,Nq), k_frame (B,Nk) per-token frame positions; q_valid, k_valid (B,Nq), (B,Nk)
    flag tokens of real frames -> bool (B,1,Nq,Nk), True = attend. Order is read from positions,
    not from where tokens sit, so cached frames may be stored in any order (a ring buffer).
    A padding query attends to everything before it: its output is never used, but a row of
    keys all masked would give NaN, and NaN leaks through the zero weights of later queries.
    """
    allowed = k_frame[:, None, :] <= q_frame[:, :, None]
    if k_valid is not None:
        keep = k_valid[:, None, :]
        if q_valid is not None:
            keep = keep | ~q_valid[:, :, None]
        allowed = allowed & keep
    return allowed[:, None]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: scale and shift normalized tokens (B,F,T,D) per frame ((B,F,1,D))."""
    return torch.addcmul(shift, x, 1 + scale)


def layer_norm(x: Tensor) -> Tensor:
    """LayerNorm without affine: the frame's modulation supplies scale and shift."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class StreamAttention(nn.Module):
    """One token stream's attention weights: fused biased QKV, per-head q/k RMSNorm, output projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.out = nn.Linear(width, width)

    def project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens (B,F,T,D) -> q, k, v each (B,H,F*T,Dh), q and k normalized per head."""
        b, f, t, d = h.shape
        q, k, v = self.qkv(h).view(b, f * t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return self.q_norm(q), self.k_norm(k), v


class FARBlock(nn.Module):
    """A DiT block over the joint [long ; short] sequence with per-frame adaLN modulation."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.modulation = nn.Linear(width, 6 * width)
        self.attn_long = StreamAttention(width, heads)
        self.attn_short = StreamAttention(width, heads)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(
        self,
        x_long: Tensor,
        x_short: Tensor,
        cond: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Run the new tokens, attending to themselves and to ``past``.

        x_long (B,Fl,Tl,D), x_short (B,Fs,Ts,D); cond (B,Fl+Fs,D), SiLU already applied;
        rope: cos, sin (B|1,1,N,Dh/2) of the N = Fl*Tl + Fs*Ts new tokens; mask (B|1,1|H,N,Np+N)
        over keys [past ; new]; past: k, v (B,H,Np,Dh), k already rotated.
        Returns the updated streams and the new tokens' k (before RoPE) and v (B,H,N,Dh).
        """
        fl = x_long.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).unsqueeze(2).chunk(6, dim=-1)
        xs, attns, frames = [x_long, x_short], (self.attn_long, self.attn_short), (slice(None, fl), slice(fl, None))
        # A stream without frames is skipped, not run on empty tensors: at inference one of the
        # two is usually empty, and each of its calls would cost as much as a small real one.
        active = [i for i in (0, 1) if xs[i].shape[1] > 0]
        projected = [attns[i].project(modulate(layer_norm(xs[i]), shift1[:, frames[i]], scale1[:, frames[i]])) for i in active]
        q, k, v = (torch.cat(parts, dim=2) if len(parts) > 1 else parts[0] for parts in zip(*projected))
        cos, sin = rope
        q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_all, v_all = (k_rot, v) if past is None else (torch.cat([past[0], k_rot], 2), torch.cat([past[1], v], 2))
        o = F.scaled_dot_product_attention(q_rot, k_all, v_all, attn_mask=mask)
        o = rearrange(o, "b h n d -> b n (h d)")
        for i, o_stream in zip(active, o.split([p[0].shape[2] for p in projected], dim=1)):
            x = xs[i] + gate1[:, frames[i]] * attns[i].out(o_stream).view_as(xs[i])
            xs[i] = x + gate2[:, frames[i]] * self.mlp(modulate(layer_norm(x), shift2[:, frames[i]], scale2[:, frames[i]]))
        return xs[0], xs[1], (k, v)


class FinalLayer(nn.Module):
    """Modulated norm and a zero-initialized linear map from tokens to patch velocities."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x (B,F,T,D), cond (B,F,D) SiLU already applied -> (B,F,T,out_dim)."""
        shift, scale = self.modulation(cond).unsqueeze(2).chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))
