"""FARModel: the frame-autoregressive flow transformer, its training loss and its cached inference.

Training and the uncached reference (:meth:`FARModel.forward`) see whole clips: the last
``short_window`` frames at full tokens, older ones as long-term frames. Inference
(:meth:`new_state`, :meth:`prefill`, :meth:`generate`, :meth:`reset_rows`) produces the same
numbers one frame at a time from a :class:`KVCache`, as long as no row holds more than
``max_long_frames`` long-term frames.

A frame's timestep says what it is: a flow time s in [0, 1] for a frame being denoised,
CONTEXT (-1) for a clean short-term context frame, LONG (-2) for a long-term frame. The
markers get their own learned embeddings: clean context is distinct from "almost denoised"
(s = 0), and FAR trains it with probability ``clean_context_prob`` so that inference, whose
context is always clean, stays in distribution. With context-noise augmentation a context
frame's noise level is told through the flow-time embedding added to its marker.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from far_world.model.cache import KVCache, LeavingFrame
from far_world.model.config import FARConfig
from far_world.model.heads import FrameHeads, head_losses
from far_world.model.rope import apply_rope, flex_rope_bias, patch_centres, rope_angles
from far_world.model.sampler import sample_euler
from far_world.model.transformer import FARBlock, FinalLayer, frame_attention_mask, patchify, unpatchify

CONTEXT = -1.0
LONG = -2.0
# Training-clip layouts (RoPE tables and masks) kept per shape; clips of random length would
# otherwise keep one (N, N) mask per length.
_LAYOUT_CACHE_SIZE = 8


def timestep_embedding(levels: Tensor, dim: int = 256) -> Tensor:
    """Sinusoidal features of flow times (...) in [0, 1], scaled by 1000 as in DiT -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=levels.device) / half)
    args = levels.float()[..., None] * 1000.0 * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class FrameConditioner(nn.Module):
    """A frame's conditioning vector: flow-time MLP + frame-kind embedding + summed action embeddings."""

    def __init__(self, width: int, action_nvec: Sequence[int], freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        # Kinds: 0 a frame being denoised, 1 clean context (CONTEXT), 2 long-term (LONG).
        self.kind = nn.Embedding(3, width)
        # One table per action component, each with a null row (index nvec[k]), stored as one.
        sizes = [n + 1 for n in action_nvec]
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.action = nn.Embedding(sum(sizes), width)

    def forward(self, timesteps: Tensor, levels: Tensor, actions: Tensor) -> Tensor:
        """timesteps (B,F) flow time or marker; levels (B,F) noise level told to the model
        (the flow time, or a context frame's augmentation noise); actions (B,F,K) -> (B,F,D)."""
        kind = (-timesteps).clamp(min=0).round().long()
        emb = self.time_mlp(timestep_embedding(levels, self.freq_dim)) + self.kind(kind)
        return emb + self.action(actions + self.offsets).sum(dim=-2)


@dataclass
class Generation:
    """One generated frame per row."""

    latents: Tensor  # (B,C,h,w)
    reward: Tensor  # (B,) of the transition into the frame
    terminated_prob: Tensor  # (B,)


class FARModel(nn.Module):
    """Action-conditioned FAR: DiT blocks over [long ; short] frame tokens, flow-matching velocity out."""

    def __init__(self, cfg: FARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, p, lp, d = cfg.latent_channels, cfg.patch_size, cfg.long_patch_size, cfg.width
        self.embed_short = nn.Linear(c * p * p, d)
        self.embed_long = nn.Linear(c * lp * lp, d)
        self.conditioner = FrameConditioner(d, cfg.action_nvec)
        self.cond_to_tokens = nn.Linear(d, d) if cfg.token_conditioning else None
        self.blocks = nn.ModuleList(FARBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, c * p * p)
        self.heads = FrameHeads(d)
        self.register_buffer("null_action", torch.tensor(cfg.action_nvec), persistent=False)
        self.register_buffer("short_centres", patch_centres(cfg.latent_size, p), persistent=False)
        self.register_buffer("long_centres", patch_centres(cfg.latent_size, lp), persistent=False)
        # FlexRoPE slope(s), settable at inference: a float, or one per head.
        self.flex_rope_slope: float | Sequence[float] = cfg.flex_rope_slope
        self._layouts: OrderedDict[tuple, tuple[tuple[Tensor, Tensor], Tensor]] = OrderedDict()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in [self.embed_short, self.embed_long, *self.blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.conditioner.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        # adaLN-zero: every block starts as the identity, and the velocity output at zero.
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        for layer in (self.final.modulation, self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ----- shared machinery -----

    def _action_components(self, actions: Tensor, lead: int) -> Tensor:
        """Actions with ``lead`` leading dims, as int64 (..., K)."""
        actions = actions.long()
        if actions.dim() == lead:
            if len(self.cfg.action_nvec) != 1:
                raise ValueError(f"multi-discrete actions need a last dim of {len(self.cfg.action_nvec)}")
            actions = actions[..., None]
        return actions

    def _slopes(self, device: torch.device) -> Tensor | None:
        """FlexRoPE slopes (H,), or None when all are 0: then no bias is added at all (plain RoPE)."""
        slopes = torch.as_tensor(self.flex_rope_slope, dtype=torch.float32).flatten()
        if not bool(slopes.any()):
            return None
        return slopes.expand(self.cfg.heads).to(device)

    def _rope(self, long_pos: Tensor, short_pos: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (R,1,N,Dh/2) of the tokens of long frames then short frames at positions (R,Fl), (R,Fs)."""
        cfg = self.cfg
        angles = torch.cat(
            [
                rope_angles(long_pos, self.long_centres, cfg.head_dim, cfg.rope_theta),
                rope_angles(short_pos, self.short_centres, cfg.head_dim, cfg.rope_theta),
            ],
            dim=1,
        )
        return angles.cos()[:, None], angles.sin()[:, None]

    def _tokens(self, long_per_frame: Tensor, short_per_frame: Tensor) -> Tensor:
        """Per-frame values (R,Fl), (R,Fs) repeated onto each frame's tokens: (R, Fl*Tl + Fs*Ts)."""
        return torch.cat(
            [
                long_per_frame.repeat_interleave(self.cfg.long_tokens, dim=1),
                short_per_frame.repeat_interleave(self.cfg.short_tokens, dim=1),
            ],
            dim=1,
        )

    def _layout(
        self,
        long_pos: Tensor,
        short_pos: Tensor,
        long_valid: Tensor | None = None,
        short_valid: Tensor | None = None,
        past_pos: Tensor | None = None,
        past_valid: Tensor | None = None,
    ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """RoPE tables of the new tokens and their attention mask over [past ; new] keys.

        Frame positions long_pos (R,Fl), short_pos (R,Fs) with optional validity; past keys'
        token positions and validity (R,Np). The mask is bool, or float with FlexRoPE's bias.
        """
        q_pos = self._tokens(long_pos, short_pos)
        q_valid = None if long_valid is None else self._tokens(long_valid, short_valid)
        k_pos = q_pos if past_pos is None else torch.cat([past_pos, q_pos], dim=1)
        k_valid = q_valid if past_valid is None else torch.cat([past_valid, q_valid], dim=1)
        mask = frame_attention_mask(q_pos, k_pos, q_valid, k_valid)
        slopes = self._slopes(q_pos.device)
        if slopes is not None:
            mask = flex_rope_bias(q_pos, k_pos, slopes).masked_fill(~mask, float("-inf"))
        return self._rope(long_pos, short_pos), mask

    def _clip_layout(self, n_long: int, n_short: int, device: torch.device) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """The layout of a training clip (frames 0..F-1, the same for every row), built once per shape."""
        slopes = self._slopes(device)
        key = (n_long, n_short, str(device), None if slopes is None else tuple(slopes.tolist()))
        if key not in self._layouts:
            pos = torch.arange(n_long + n_short, device=device)[None]
            self._layouts[key] = self._layout(pos[:, :n_long], pos[:, n_long:])
            if len(self._layouts) > _LAYOUT_CACHE_SIZE:
                self._layouts.popitem(last=False)
        self._layouts.move_to_end(key)
        return self._layouts[key]

    def _trunk(
        self,
        long_latents: Tensor,
        short_latents: Tensor,
        cond: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor,
        past: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Latents (R,Fl,C,h,w), (R,Fs,C,h,w) and SiLU'd cond (R,Fl+Fs,D) through every block.

        Returns the short tokens' final features (R,Fs,Ts,D) and per layer the new tokens' k, v.
        """
        x_long = self.embed_long(patchify(long_latents, self.cfg.long_patch_size))
        x_short = self.embed_short(patchify(short_latents, self.cfg.patch_size))
        if self.cond_to_tokens is not None:
            per_frame = self.cond_to_tokens(cond)[:, :, None]
            n_long = x_long.shape[1]
            x_long, x_short = x_long + per_frame[:, :n_long], x_short + per_frame[:, n_long:]
        kvs = []
        for i, block in enumerate(self.blocks):
            x_long, x_short, kv = block(x_long, x_short, cond, rope, mask, None if past is None else past[i])
            kvs.append(kv)
        return x_short, kvs

    def _velocity(self, x_short: Tensor, cond_short: Tensor) -> Tensor:
        """Final features (R,Fs,Ts,D) -> velocity (R,Fs,C,h,w)."""
        return unpatchify(self.final(x_short, cond_short), self.cfg.patch_size, self.cfg.latent_size)

    @staticmethod
    def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA; CPU stays float32."""
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _draw(
        fn: Callable[..., Tensor], shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
    ) -> Tensor:
        """torch.rand/randn from ``generator`` on its own device, moved to ``device``: a CPU
        generator reproduces the same draws whatever device the model runs on."""
        source = generator.device if generator is not None else device
        return fn(shape, generator=generator, device=source).to(device)

    # ----- training and the uncached reference -----

    def forward(
        self, latents: Tensor, actions: Tensor, timesteps: Tensor, context_levels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Velocities and features of a clip's short-term frames, all frames at once.

        latents (B,F,C,h,w); actions (B,F) or (B,F,K), the action into each frame (null if none);
        timesteps (B,F): flow time s in [0,1] of a frame to denoise, or CONTEXT (-1); the first
        F - short_window frames are long-term whatever their timestep. context_levels (B,F): the
        noise level of context frames (context-noise augmentation), zero if None.
        Returns velocity (B,Fs,C,h,w) and mean-pooled features (B,Fs,D) of the last
        Fs = min(F, short_window) frames, both float32.
        """
        n_frames = latents.shape[1]
        n_short = min(n_frames, self.cfg.short_window)
        n_long = n_frames - n_short
        actions = self._action_components(actions, 2)
        timesteps = torch.cat([torch.full_like(timesteps[:, :n_long], LONG), timesteps[:, n_long:]], dim=1)
        if context_levels is None:
            context_levels = torch.zeros_like(timesteps)
        levels = torch.where(timesteps >= 0, timesteps, context_levels)
        rope, mask = self._clip_layout(n_long, n_short, latents.device)
        with self._autocast(latents.device):
            cond = F.silu(self.conditioner(timesteps, levels, actions))
            x_short, _ = self._trunk(latents[:, :n_long], latents[:, n_long:], cond, rope, mask)
            velocity = self._velocity(x_short, cond[:, n_long:])
        return velocity.float(), x_short.mean(dim=2).float()

    def velocity(self, latents: Tensor, actions: Tensor, timesteps: Tensor, context_levels: Tensor | None = None) -> Tensor:
        """The velocity half of :meth:`forward`: (B,Fs,C,h,w)."""
        return self.forward(latents, actions, timesteps, context_levels)[0]

    def training_loss(
        self,
        latents: Tensor,
        actions: Tensor,
        rewards: Tensor,
        terminated: Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Rectified-flow loss of a batch of clips, plus the reward and termination heads' losses.

        latents (B,F,C,h,w); actions (B,F) or (B,F,K) int64, the action into frame t (null for
        none); rewards (B,F) float and terminated (B,F) bool of the transition into frame t.
        Every random draw comes from ``generator`` when given.
        Returns {"loss": weighted sum to backward, "flow", "reward", "termination": detached}.
        """
        cfg = self.cfg
        b, n_frames = latents.shape[:2]
        n_long = n_frames - min(n_frames, cfg.short_window)
        device = latents.device
        x0 = latents.float()
        actions = self._action_components(actions, 2)
        drop = self._draw(torch.rand, (b, n_frames), device, generator) < cfg.action_dropout
        actions = torch.where(drop[..., None], self.null_action, actions)
        s = torch.sigmoid(cfg.flow_time_mean + self._draw(torch.randn, (b, n_frames), device, generator))
        clean = self._draw(torch.rand, (b, n_frames), device, generator) < cfg.clean_context_prob
        clean[:, :n_long] = True
        eps = self._draw(torch.randn, tuple(x0.shape), device, generator)
        # Context-noise augmentation: a context frame is noised to a level sigma ~ U(0, context_noise),
        # told to the model through the flow-time embedding added to its CONTEXT/LONG marker.
        sigma = self._draw(torch.rand, (b, n_frames), device, generator) * cfg.context_noise
        level = torch.where(clean, sigma, s)[..., None, None, None]
        x = (1 - level) * x0 + level * eps
        timesteps = torch.where(clean, torch.full_like(s, CONTEXT), s)
        velocity, features = self.forward(x, actions, timesteps, context_levels=sigma)

        target = (eps - x0)[:, n_long:]
        per_frame = (velocity - target).pow(2).mean(dim=(2, 3, 4))
        denoised = (~clean[:, n_long:]).float()
        flow = (per_frame * denoised).sum() / denoised.sum().clamp_min(1.0)
        # The heads learn from every short-term frame, noisy ones weighted by how much of the
        # frame is left (1 - s): at inference they read the finished frame as clean context.
        reward, termination_logit = self.heads(features)
        weight = torch.where(clean[:, n_long:], torch.ones_like(s[:, n_long:]), 1 - s[:, n_long:])
        reward_loss, termination_loss = head_losses(
            reward, termination_logit, rewards[:, n_long:].to(device), terminated[:, n_long:].to(device), weight
        )
        loss = flow + cfg.reward_loss_weight * reward_loss + cfg.termination_loss_weight * termination_loss
        return {"loss": loss, "flow": flow.detach(), "reward": reward_loss.detach(), "termination": termination_loss.detach()}

    # ----- cached inference -----

    def new_state(self, batch_size: int, device: torch.device | str | None = None, context_noise: float = 0.0) -> KVCache:
        """An empty cache for ``batch_size`` worlds. ``context_noise``: flow time to which each frame
        joining the context is noised once (0 = clean context, as FAR)."""
        return KVCache(self.cfg, batch_size, device or self.null_action.device, context_noise)

    @torch.no_grad()
    def prefill(
        self, state: KVCache, latents: Tensor, actions: Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Start every row from clean context frames: latents (B,T,C,h,w), actions (B,T[,K]) into each."""
        self.reset_rows(state, torch.ones(state.batch_size, dtype=torch.bool), latents, actions, generator)

    @torch.no_grad()
    def reset_rows(
        self,
        state: KVCache,
        rows: Tensor,
        latents: Tensor,
        actions: Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        """Restart the rows flagged in ``rows`` (B,) bool from new context frames.

        latents (R,T,C,h,w) and actions (R,T[,K]) for the R flagged rows, or (B,...) of which
        the flagged rows are taken. Only the last max_long_frames + short_window - 1 frames are
        encoded: older ones would not fit in the cache.
        """
        cfg, device = self.cfg, state.device
        idx = torch.as_tensor(rows, dtype=torch.bool, device=device).nonzero()[:, 0]
        if len(idx) == 0:
            return
        latents = latents.to(device, torch.float32)
        actions = self._action_components(actions.to(device), 2)
        if latents.shape[0] not in (len(idx), state.batch_size):
            raise ValueError(f"reset_rows flags {len(idx)} rows: give latents for those or for all {state.batch_size}")
        if latents.shape[0] != len(idx):
            latents, actions = latents[idx], actions[idx]
        keep = cfg.max_long_frames + cfg.short_window - 1
        latents, actions = latents[:, -keep:], actions[:, -keep:]
        n_rows, n_frames = latents.shape[:2]
        latents, levels = self._noised_context(latents, state.context_noise, generator)
        ctx = cfg.short_window - 1
        n_long = max(0, n_frames - ctx)
        first_short = ctx - (n_frames - n_long)
        frames = torch.arange(n_frames, device=device)

        state.reset(idx)
        state.grow(n_long)
        state.long_frame[idx, :n_long] = frames[:n_long]
        state.long_latents[idx, :n_long] = latents[:, :n_long]
        state.long_levels[idx, :n_long] = levels[:, :n_long]
        state.long_count[idx] = n_long
        state.short_frame[idx, first_short:] = frames[n_long:]
        state.short_latents[idx, first_short:] = latents[:, n_long:]
        state.short_actions[idx, first_short:] = actions[:, n_long:]
        state.short_levels[idx, first_short:] = levels[:, n_long:]
        state.next_frame[idx] = n_frames

        long_actions = state.null_actions((n_rows, state.slots))
        long_actions[:, :n_long] = actions[:, :n_long]
        branches = list(range(state.branches))
        long_kv, short_kv = self._encode_history(state, idx, long_actions, branches)
        state.write_rows(idx, branches, long_kv, short_kv)

    @torch.no_grad()
    def generate(
        self,
        state: KVCache,
        actions: Tensor,
        steps: int = 4,
        guidance: float = 1.0,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Generation:
        """The next frame of every row, which then joins the row's context (noised to the state's
        ``context_noise`` if set).

        actions (B,) or (B,K): the action into the new frame; ``steps`` Euler steps from s = 1 to 0;
        guidance w: v_u + w (v_c - v_u), the unconditional branch with the null action everywhere
        (kept in the cache while w != 1, rebuilt from the held frames when w leaves 1).
        noise (B,C,h,w): the starting point, drawn from ``generator`` if None.
        """
        cfg, device, b = self.cfg, state.device, state.batch_size
        actions = self._action_components(actions.to(device), 1)
        self._set_branches(state, 1 if guidance == 1.0 else 2)
        if noise is None:
            noise = self._draw(torch.randn, (b, cfg.latent_channels, cfg.latent_size, cfg.latent_size), device, generator)
        rows = state.branches * b

        base = state.base()
        past, key_pos, key_valid = self._context_keys(state, base, with_short=True)
        new_pos = (state.next_frame - base)[:, None].repeat(state.branches, 1)
        present = torch.ones_like(new_pos, dtype=torch.bool)
        rope, mask = self._layout(new_pos[:, :0], new_pos, present[:, :0], present, key_pos, key_valid)
        step_actions = self._branch_actions(state, actions[:, None])
        no_long = noise.new_zeros(rows, 0, *noise.shape[1:])

        def velocity(x: Tensor, s: float) -> Tensor:
            t = torch.full((rows, 1), s, device=device)
            with self._autocast(device):
                cond = F.silu(self.conditioner(t, t, step_actions))
                x_short, _ = self._trunk(no_long, x[:, None], cond, rope, mask, past)
                return self._velocity(x_short, cond)[:, 0].float()

        latent = sample_euler(velocity, noise.to(device, torch.float32), steps, guidance)
        context_latent, level = self._noised_context(latent[:, None], state.context_noise, generator)
        features = self._append(state, context_latent[:, 0], actions, level[:, 0])
        reward, termination_logit = self.heads(features)
        return Generation(latent, reward, torch.sigmoid(termination_logit))

    @torch.no_grad()
    def observe(self, state: KVCache, latents: Tensor, actions: Tensor) -> Generation:
        """Append given frames (B,C,h,w), with the actions (B,) or (B,K) into them, to the context
        as clean frames, as :meth:`generate` appends its own: teacher forcing. Returns the heads'
        readings of those frames, what they would have said had the model generated them."""
        actions = self._action_components(actions.to(state.device), 1)
        level = torch.zeros(state.batch_size, device=state.device)
        features = self._append(state, latents.to(state.device, torch.float32), actions, level)
        reward, termination_logit = self.heads(features)
        return Generation(latents, reward, torch.sigmoid(termination_logit))

    def _branch_actions(self, state: KVCache, actions: Tensor) -> Tensor:
        """Actions (B,F,K) for the cache's rows: [actions ; null] when it holds both branches."""
        if state.branches == 1:
            return actions
        return torch.cat([actions, state.null_actions(tuple(actions.shape[:-1]))])

    def _noised_context(
        self, latents: Tensor, level: float, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Context frames (R,T,C,h,w) noised to flow time ``level``, and the levels (R,T) to tell."""
        levels = torch.full(latents.shape[:2], level, device=latents.device)
        if level == 0.0:
            return latents, levels
        eps = self._draw(torch.randn, tuple(latents.shape), latents.device, generator)
        return (1 - level) * latents + level * eps, levels

    def _context_keys(
        self, state: KVCache, base: Tensor, with_short: bool
    ) -> tuple[list[tuple[Tensor, Tensor]], Tensor, Tensor]:
        """Cached keys rotated to positions relative to ``base`` (B,), values, key positions and validity.

        Keys are rotated here, once per call, rather than stored rotated: positions are re-based
        as old frames leave, and FlexRoPE reads the same positions. Returns per layer k, v
        (branches*B,H,Nk,Dh) over [long ; short context] (long only unless ``with_short``),
        key positions and validity (branches*B,Nk).
        """
        long_pos, long_valid = state.long_frame - base[:, None], state.long_frame >= 0
        short_pos, short_valid = state.short_frame - base[:, None], state.short_frame >= 0
        if not with_short:
            short_pos, short_valid = short_pos[:, :0], short_valid[:, :0]
        pos, valid = self._tokens(long_pos, short_pos), self._tokens(long_valid, short_valid)
        n = state.branches
        cos, sin = (t.repeat(n, 1, 1, 1) for t in self._rope(long_pos, short_pos))
        past = []
        for layer in range(self.cfg.depth):
            k, v = state.long_k[layer], state.long_v[layer]
            if with_short:
                k = torch.cat([k, state.short_k[layer]], dim=2)
                v = torch.cat([v, state.short_v[layer]], dim=2)
            past.append((apply_rope(k, cos, sin), v))
        return past, pos.repeat(n, 1), valid.repeat(n, 1)

    def _append(self, state: KVCache, latent: Tensor, actions: Tensor, level: Tensor) -> Tensor:
        """Add a finished frame (B,C,h,w) with its action (B,K) and noise level (B,) to the context:
        the oldest short-term frame moves to the long-term ring and the short window is re-encoded.
        Returns the new frame's pooled features (B,D) from that re-encoding, for the heads."""
        leaving = state.push_short(latent, actions, level)
        if bool(leaving.valid.any()):
            self._migrate(state, leaving)
        return self._reencode_short(state)

    def _migrate(self, state: KVCache, leaving: LeavingFrame) -> None:
        """Encode the frame leaving the short window as a long-term frame, once, attending to the
        long-term frames before it, and store its K/V in the ring."""
        n = state.branches
        base = torch.minimum(state.base(), torch.where(leaving.valid, leaving.frame, state.next_frame))
        past, key_pos, key_valid = self._context_keys(state, base, with_short=False)
        pos = (leaving.frame - base)[:, None].repeat(n, 1)
        valid = leaving.valid[:, None].repeat(n, 1)
        rope, mask = self._layout(pos, pos[:, :0], valid, valid[:, :0], key_pos, key_valid)
        actions = self._branch_actions(state, leaving.action[:, None])
        timesteps = torch.full(pos.shape, LONG, device=state.device)
        latents = leaving.latent[:, None].repeat(n, 1, 1, 1, 1)
        with self._autocast(state.device):
            cond = F.silu(self.conditioner(timesteps, leaving.level[:, None].repeat(n, 1), actions))
            _, kvs = self._trunk(latents, latents[:, :0], cond, rope, mask, past)
        state.write_long(leaving, kvs)

    def _reencode_short(self, state: KVCache) -> Tensor:
        """Recompute the short-term context's K/V against the current long-term frames.

        The newest frame is the last of the window, read as clean context just as the heads
        learn it in training, so its pooled features (B,D) come back for the heads: no extra pass.
        """
        n = state.branches
        base = state.base()
        past, key_pos, key_valid = self._context_keys(state, base, with_short=False)
        pos = (state.short_frame - base[:, None]).repeat(n, 1)
        valid = (state.short_frame >= 0).repeat(n, 1)
        rope, mask = self._layout(pos[:, :0], pos, valid[:, :0], valid, key_pos, key_valid)
        actions = self._branch_actions(state, state.short_actions)
        timesteps = torch.full(pos.shape, CONTEXT, device=state.device)
        latents = state.short_latents.repeat(n, 1, 1, 1, 1)
        with self._autocast(state.device):
            cond = F.silu(self.conditioner(timesteps, state.short_levels.repeat(n, 1), actions))
            x_short, kvs = self._trunk(latents[:, :0], latents, cond, rope, mask, past)
        state.set_short_kv(kvs)
        return x_short[: state.batch_size, -1].mean(dim=1).float()

    def _encode_history(
        self, state: KVCache, idx: Tensor, long_actions: Tensor, branches: list[int]
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
        """K/V of everything rows ``idx`` hold, from their stored latents, in one pass.

        long_actions (R,slots,K) are the conditional branch's long-term actions (the cache does not
        keep them); branch 1 uses the null action everywhere. The frame-causal mask reads
        positions, so ring slots need no sorting. Returns per layer (long k, v) and (short k, v),
        rows stacked [branch ; ...] of R each.
        """
        n = len(branches)
        long_frame, short_frame = state.long_frame[idx], state.short_frame[idx]
        base = state.base()[idx][:, None]
        long_pos, short_pos = (long_frame - base).repeat(n, 1), (short_frame - base).repeat(n, 1)
        rope, mask = self._layout(
            long_pos, short_pos, (long_frame >= 0).repeat(n, 1), (short_frame >= 0).repeat(n, 1)
        )
        short_actions = state.short_actions[idx]
        actions = torch.cat(
            [
                torch.cat([long_actions, short_actions], dim=1)
                if branch == 0
                else state.null_actions((len(idx), long_frame.shape[1] + short_frame.shape[1]))
                for branch in branches
            ]
        )
        timesteps = torch.cat(
            [torch.full(long_pos.shape, LONG, device=state.device), torch.full(short_pos.shape, CONTEXT, device=state.device)],
            dim=1,
        )
        levels = torch.cat([state.long_levels[idx], state.short_levels[idx]], dim=1).repeat(n, 1)
        with self._autocast(state.device):
            cond = F.silu(self.conditioner(timesteps, levels, actions))
            _, kvs = self._trunk(
                state.long_latents[idx].repeat(n, 1, 1, 1, 1), state.short_latents[idx].repeat(n, 1, 1, 1, 1), cond, rope, mask
            )
        split = long_frame.shape[1] * self.cfg.long_tokens
        return [(k[:, :, :split], v[:, :, :split]) for k, v in kvs], [(k[:, :, split:], v[:, :, split:]) for k, v in kvs]

    def _set_branches(self, state: KVCache, branches: int) -> None:
        """Add or drop the unconditional branch of the cache."""
        if branches == state.branches:
            return
        if branches == 1:
            state.drop_unconditional()
            return
        idx = torch.arange(state.batch_size, device=state.device)
        long_kv, short_kv = self._encode_history(state, idx, state.null_actions((state.batch_size, state.slots)), [1])
        state.add_unconditional(long_kv, short_kv)
