"""Where the tokens of a [long ; short] sequence sit: their RoPE tables and their attention mask.

Training clips and cached inference lay tokens out alike: long-term frames first (``long_tokens``
each), then short-term frames (``short_tokens`` each), every token at its frame's temporal
position. Rows and columns are fixed per stream (patch centres), so RoPE tables are looked up by
frame position rather than recomputed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor

from far_world.model.config import FARConfig
from far_world.model.rope import RopeTable, flex_rope_bias, patch_centres
from far_world.model.transformer import frame_attention_mask

# Training-clip layouts kept per shape; clips of random length would otherwise keep one (N, N)
# mask per length.
_CLIP_CACHE_SIZE = 8

Rope = tuple[Tensor, Tensor]


class TokenLayout:
    """RoPE tables and frame-causal masks of one model's token layout (no weights; any device)."""

    def __init__(self, cfg: FARConfig) -> None:
        self.cfg = cfg
        self._long = RopeTable(patch_centres(cfg.latent_size, cfg.long_patch_size), cfg.head_dim, cfg.rope_theta)
        self._short = RopeTable(patch_centres(cfg.latent_size, cfg.patch_size), cfg.head_dim, cfg.rope_theta)
        self._clips: OrderedDict[tuple, tuple[Rope, Tensor]] = OrderedDict()

    def tokens(self, long_per_frame: Tensor, short_per_frame: Tensor) -> Tensor:
        """Per-frame values (R,Fl), (R,Fs) repeated onto each frame's tokens: (R, Fl*Tl + Fs*Ts)."""
        return torch.cat(
            [
                long_per_frame.repeat_interleave(self.cfg.long_tokens, dim=1),
                short_per_frame.repeat_interleave(self.cfg.short_tokens, dim=1),
            ],
            dim=1,
        )

    def rope(self, long_pos: Tensor, short_pos: Tensor) -> Rope:
        """cos, sin (R,1,N,Dh/2) of the tokens of long frames then short frames at positions (R,Fl), (R,Fs)."""
        long_cos, long_sin = self._long.lookup(long_pos)
        short_cos, short_sin = self._short.lookup(short_pos)
        return torch.cat([long_cos, short_cos], dim=1)[:, None], torch.cat([long_sin, short_sin], dim=1)[:, None]

    def attention(
        self,
        long_pos: Tensor,
        short_pos: Tensor,
        slopes: Tensor | None,
        long_valid: Tensor | None = None,
        short_valid: Tensor | None = None,
        past_pos: Tensor | None = None,
        past_valid: Tensor | None = None,
    ) -> tuple[Rope, Tensor]:
        """RoPE tables of the new tokens and their attention mask over [past ; new] keys.

        Frame positions long_pos (R,Fl), short_pos (R,Fs) with optional validity; past keys'
        token positions and validity (R,Np); FlexRoPE ``slopes`` (H,) or None. The mask is
        bool, or float with FlexRoPE's bias.
        """
        q_pos = self.tokens(long_pos, short_pos)
        q_valid = None if long_valid is None else self.tokens(long_valid, short_valid)
        k_pos = q_pos if past_pos is None else torch.cat([past_pos, q_pos], dim=1)
        k_valid = q_valid if past_valid is None else torch.cat([past_valid, q_valid], dim=1)
        mask = frame_attention_mask(q_pos, k_pos, q_valid, k_valid)
        if slopes is not None:
            mask = flex_rope_bias(q_pos, k_pos, slopes).masked_fill(~mask, float("-inf"))
        return self.rope(long_pos, short_pos), mask

    def clip(self, n_long: int, n_short: int, slopes: Tensor | None, device: torch.device) -> tuple[Rope, Tensor]:
        """The layout of a training clip (frames 0..F-1, the same for every row), built once per shape."""
        key = (n_long, n_short, str(device), None if slopes is None else tuple(slopes.tolist()))
        if key not in self._clips:
            pos = torch.arange(n_long + n_short, device=device)[None]
            self._clips[key] = self.attention(pos[:, :n_long], pos[:, n_long:], slopes)
            if len(self._clips) > _CLIP_CACHE_SIZE:
                self._clips.popitem(last=False)
        self._clips.move_to_end(key)
        return self._clips[key]
