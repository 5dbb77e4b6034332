"""The per-layer KV cache of a batch of worlds, and the frames it needs to extend itself.

Keys are stored before RoPE. Positions are applied at each attention call, relative to the
row's oldest frame held, so a frame's keys stay valid when older frames are dropped and the
positions are re-based; FlexRoPE's bias is added at the call too, so its slope can change
between steps.

Each row holds:
- long-term frames: a ring of at most ``max_long_frames`` slots of ``long_tokens`` keys each,
  written once when a frame leaves the short window and never recomputed. When the ring is
  full the oldest frame is overwritten: from then on the remaining keys were computed with
  context that is no longer held, so outputs are no longer identical to a full recomputation
  (cost and memory stay bounded instead).
- the short-term context: the last ``short_window - 1`` frames at full tokens, right-aligned
  (newest last). Their keys depend on the long-term context they attend to, so they are
  re-encoded once per new frame; their latents and actions are kept for that.
A cache made without long-term context keeps the short-term context only.
Rows of a batch may hold different numbers of frames: empty slots have frame index -1 and
are masked out as keys. With guidance on, the K/V tensors stack two branches of B rows,
[conditional ; unconditional], the second computed with the null action everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from far_world.model.config import FARConfig

EMPTY = -1


@dataclass
class LeavingFrame:
    """The frame pushed out of the short window, bound for the long-term ring where ``valid``."""

    latent: Tensor  # (B,C,h,w)
    action: Tensor  # (B,K)
    level: Tensor  # (B,) context noise level
    frame: Tensor  # (B,) frame index, -1 where the row's window was not full
    valid: Tensor  # (B,) bool


class KVCache:
    """Context of B worlds: per-layer K/V (pre-RoPE) plus per-row frame indices and latents."""

    def __init__(self, cfg: FARConfig, batch_size: int, device: torch.device | str, long_context: bool = True) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = torch.device(device)
        # Without long-term context a frame leaving the short window is dropped, not kept: the
        # model sees exactly what a fresh start from the short window would show it.
        self.long_context = bool(long_context)
        self.branches = 1
        b, c, n = batch_size, cfg.latent_channels, cfg.latent_size
        ctx = cfg.short_window - 1
        kv_shape = (b, cfg.heads, 0, cfg.head_dim)
        self.long_k = [torch.zeros(kv_shape, device=self.device) for _ in range(cfg.depth)]
        self.long_v = [torch.zeros(kv_shape, device=self.device) for _ in range(cfg.depth)]
        short_shape = (b, cfg.heads, ctx * cfg.short_tokens, cfg.head_dim)
        self.short_k = [torch.zeros(short_shape, device=self.device) for _ in range(cfg.depth)]
        self.short_v = [torch.zeros(short_shape, device=self.device) for _ in range(cfg.depth)]
        long_ = dict(dtype=torch.long, device=self.device)
        self.long_frame = torch.full((b, 0), EMPTY, **long_)
        self.long_latents = torch.zeros(b, 0, c, n, n, device=self.device)
        self.long_levels = torch.zeros(b, 0, device=self.device)
        # Long frames written since the row's reset: the next one goes to slot count % max_long_frames.
        self.long_count = torch.zeros(b, **long_)
        self.short_frame = torch.full((b, ctx), EMPTY, **long_)
        self.short_latents = torch.zeros(b, ctx, c, n, n, device=self.device)
        self.short_actions = self.null_actions((b, ctx))
        self.short_levels = torch.zeros(b, ctx, device=self.device)
        # Which short-window frames the model generated (the rest were given: a prefill, an observation).
        self.short_generated = torch.zeros(b, ctx, dtype=torch.bool, device=self.device)
        self.next_frame = torch.zeros(b, **long_)

    @property
    def slots(self) -> int:
        """Long-term slots allocated (grows up to ``max_long_frames``)."""
        return self.long_frame.shape[1]

    @property
    def max_frames(self) -> int:
        """Frames a row can hold: the long-term ring (if kept) plus the short-term context."""
        return (self.cfg.max_long_frames if self.long_context else 0) + self.cfg.short_window - 1

    @property
    def context_length(self) -> Tensor:
        """Frames held per row (long-term + short-term), (B,)."""
        return (self.long_frame >= 0).sum(1) + (self.short_frame >= 0).sum(1)

    def null_actions(self, shape: tuple[int, ...]) -> Tensor:
        """The null action (index nvec[k] in every component), int64 (*shape, K)."""
        null = torch.tensor(self.cfg.action_nvec, dtype=torch.long, device=self.device)
        return null.expand(*shape, len(self.cfg.action_nvec)).clone()

    def nbytes(self) -> int:
        """Memory held by the cache's tensors."""
        tensors = [*self.long_k, *self.long_v, *self.short_k, *self.short_v]
        tensors += [self.long_frame, self.long_latents, self.long_levels, self.short_latents, self.short_actions]
        return sum(t.numel() * t.element_size() for t in tensors)

    def base(self) -> Tensor:
        """Per-row origin of temporal positions: the oldest frame held (the next frame if none), (B,)."""
        frames = torch.cat([self.long_frame, self.short_frame, self.next_frame[:, None]], dim=1)
        return torch.where(frames >= 0, frames, torch.iinfo(torch.long).max).amin(dim=1)

    def reset(self, rows: Tensor) -> None:
        """Forget everything rows (index tensor) hold."""
        self.long_frame[rows] = EMPTY
        self.long_count[rows] = 0
        self.short_frame[rows] = EMPTY
        self.next_frame[rows] = 0

    def load_rows(self, rows: Tensor, latents: Tensor, actions: Tensor, levels: Tensor) -> Tensor:
        """Replace what rows (index tensor, R) hold by context frames numbered from 0, oldest first.

        latents (R,T,C,h,w), actions (R,T,K) into each frame, levels (R,T) their noise levels,
        T <= :attr:`max_frames`: the last ``short_window - 1`` frames fill the short-term context
        (right-aligned), older ones the long-term slots. K/V are left to the caller to encode.
        Returns the long-term frames' actions (R, slots, K), null in empty slots: the cache keeps
        no long-term actions, but encoding the long-term keys needs them once.
        """
        n_rows, n_frames = latents.shape[:2]
        if n_frames > self.max_frames:
            raise ValueError(f"a row holds at most {self.max_frames} frames, got {n_frames}")
        ctx = self.cfg.short_window - 1
        n_long = max(0, n_frames - ctx)
        first_short = ctx - (n_frames - n_long)
        frames = torch.arange(n_frames, device=self.device)
        self.reset(rows)
        self.grow(n_long)
        self.long_frame[rows, :n_long] = frames[:n_long]
        self.long_latents[rows, :n_long] = latents[:, :n_long]
        self.long_levels[rows, :n_long] = levels[:, :n_long]
        self.long_count[rows] = n_long
        self.short_frame[rows, first_short:] = frames[n_long:]
        self.short_latents[rows, first_short:] = latents[:, n_long:]
        self.short_actions[rows, first_short:] = actions[:, n_long:]
        self.short_levels[rows, first_short:] = levels[:, n_long:]
        self.short_generated[rows] = False
        self.next_frame[rows] = n_frames
        long_actions = self.null_actions((n_rows, self.slots))
        long_actions[:, :n_long] = actions[:, :n_long]
        return long_actions

    def grow(self, slots: int) -> None:
        """Allocate long-term slots up to ``slots`` (at most ``max_long_frames``), empty for every row."""
        extra = min(slots, self.cfg.max_long_frames) - self.slots
        if extra <= 0:
            return
        tokens = self.cfg.long_tokens

        def pad(t: Tensor, dim: int, per_slot: int, value: float = 0) -> Tensor:
            shape = list(t.shape)
            shape[dim] = extra * per_slot
            return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim=dim)

        self.long_k = [pad(k, 2, tokens) for k in self.long_k]
        self.long_v = [pad(v, 2, tokens) for v in self.long_v]
        self.long_frame = pad(self.long_frame, 1, 1, EMPTY)
        self.long_latents = pad(self.long_latents, 1, 1)
        self.long_levels = pad(self.long_levels, 1, 1)

    def push_short(self, latent: Tensor, action: Tensor, level: Tensor, generated: bool = False) -> LeavingFrame:
        """Append a frame to every row's short window; return the frame that leaves it.

        latent (B,C,h,w), action (B,K), level (B,); ``generated``: the model made the frame.
        """
        frames = torch.cat([self.short_frame, self.next_frame[:, None]], dim=1)
        latents = torch.cat([self.short_latents, latent[:, None]], dim=1)
        actions = torch.cat([self.short_actions, action[:, None]], dim=1)
        levels = torch.cat([self.short_levels, level[:, None]], dim=1)
        leaving = LeavingFrame(latents[:, 0], actions[:, 0], levels[:, 0], frames[:, 0], frames[:, 0] >= 0)
        self.short_frame, self.short_latents = frames[:, 1:], latents[:, 1:]
        self.short_actions, self.short_levels = actions[:, 1:], levels[:, 1:]
        newest = self.short_generated.new_full((self.batch_size, 1), generated)
        self.short_generated = torch.cat([self.short_generated[:, 1:], newest], dim=1)
        self.next_frame = self.next_frame + 1
        return leaving

    def write_long(self, frame: LeavingFrame, kv: list[tuple[Tensor, Tensor]]) -> None:
        """Store a leaving frame's K/V (per layer, (branches*B,H,long_tokens,Dh)) in its row's ring."""
        rows = frame.valid.nonzero()[:, 0]
        if len(rows) == 0:
            return
        slot = self.long_count % self.cfg.max_long_frames
        self.grow(int(slot[rows].max()) + 1)
        slot = slot[rows]
        self.long_frame[rows, slot] = frame.frame[rows]
        self.long_latents[rows, slot] = frame.latent[rows]
        self.long_levels[rows, slot] = frame.level[rows]
        self.long_count[rows] += 1
        b, heads, tokens = self.batch_size, self.cfg.heads, self.cfg.long_tokens
        for layer, (k, v) in enumerate(kv):
            for branch in range(self.branches):
                r = rows + branch * b
                for store, new in ((self.long_k[layer], k), (self.long_v[layer], v)):
                    store.view(store.shape[0], heads, self.slots, tokens, self.cfg.head_dim)[r, :, slot] = new[r].to(store.dtype)

    def write_rows(
        self, rows: Tensor, branches: list[int], long_kv: list[tuple[Tensor, Tensor]], short_kv: list[tuple[Tensor, Tensor]]
    ) -> None:
        """Overwrite rows' K/V in the given branches; kv rows are stacked [branch ; ...] of len(rows) each."""
        n = len(rows)
        for layer in range(self.cfg.depth):
            for i, branch in enumerate(branches):
                r, part = rows + branch * self.batch_size, slice(i * n, (i + 1) * n)
                self.long_k[layer][r] = long_kv[layer][0][part].to(self.long_k[layer].dtype)
                self.long_v[layer][r] = long_kv[layer][1][part].to(self.long_v[layer].dtype)
                self.short_k[layer][r] = short_kv[layer][0][part].to(self.short_k[layer].dtype)
                self.short_v[layer][r] = short_kv[layer][1][part].to(self.short_v[layer].dtype)

    def add_unconditional(self, long_kv: list[tuple[Tensor, Tensor]], short_kv: list[tuple[Tensor, Tensor]]) -> None:
        """Stack the unconditional branch's K/V (B rows per layer) under the conditional one."""
        for layer in range(self.cfg.depth):
            self.long_k[layer] = torch.cat([self.long_k[layer], long_kv[layer][0].to(self.long_k[layer].dtype)])
            self.long_v[layer] = torch.cat([self.long_v[layer], long_kv[layer][1].to(self.long_v[layer].dtype)])
            self.short_k[layer] = torch.cat([self.short_k[layer], short_kv[layer][0].to(self.short_k[layer].dtype)])
            self.short_v[layer] = torch.cat([self.short_v[layer], short_kv[layer][1].to(self.short_v[layer].dtype)])
        self.branches = 2

    def drop_unconditional(self) -> None:
        """Keep the conditional branch only (guidance 1 needs no unconditional pass)."""
        b = self.batch_size
        for kvs in (self.long_k, self.long_v, self.short_k, self.short_v):
            kvs[:] = [t[:b].contiguous() for t in kvs]
        self.branches = 1

    def set_short_kv(self, kv: list[tuple[Tensor, Tensor]]) -> None:
        """Replace the short-term context's K/V after a re-encoding (per layer, all branches)."""
        # Contiguous copies: v is a view into the fused QKV output, which would stay alive otherwise.
        self.short_k = [k.contiguous() for k, _ in kv]
        self.short_v = [v.contiguous() for _, v in kv]
