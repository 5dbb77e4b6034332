"""Cached inference: a FAR model's frames one at a time from a :class:`KVCache`.

:class:`CachedSampler` gives the numbers of :meth:`FARModel.forward` (the uncached reference)
one frame at a time, as long as no row holds more than ``max_long_frames`` long-term frames.
Every call takes a :class:`SamplingSettings` value; nothing about sampling is stored on the model.
The cache's keys depend on the settings they were computed under (FlexRoPE's slope shapes the
attention that produced them): a frame's keys keep the slope in force when it was encoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from far_world.model.cache import KVCache, LeavingFrame
from far_world.model.far import CONTEXT, GENERATED, LONG, FARModel, as_generated, from_generated
from far_world.model.heads import Carried
from far_world.model.rope import apply_rope, flex_rope_slopes
from far_world.model.sampler import SamplingSettings, sample_euler


@dataclass
class Generation:
    """One generated frame per row."""

    latents: Tensor  # (B,C,h,w)
    reward: Tensor  # (B,) of the transition into the frame
    terminated_prob: Tensor  # (B,)
    features: Tensor  # (B,D) the frame's mean-pooled final features, which the heads read
    carried: Carried | None = None  # the carried variables after the transition, if the world has any

    @classmethod
    def read(cls, model: FARModel, latents: Tensor, features: Tensor, carried: Carried | None) -> "Generation":
        """The heads' readings of new frames' ``features``, given the carried values before them."""
        heads = model.heads(features, carried)
        return cls(latents, heads.reward, torch.sigmoid(heads.termination_logit), features, heads.carried)


class CachedSampler:
    """Prefill, generate and observe frames of B worlds with one model (held, not copied)."""

    def __init__(self, model: FARModel) -> None:
        self.model = model
        self.cfg = model.cfg
        self.layout = model.layout

    def new_cache(self, batch_size: int, device: torch.device | str | None = None, long_context: bool = True) -> KVCache:
        """An empty cache for ``batch_size`` worlds (``long_context`` False: short window only)."""
        return KVCache(self.cfg, batch_size, device or self.model.null_action.device, long_context)

    @torch.no_grad()
    def prefill(
        self,
        cache: KVCache,
        latents: Tensor,
        actions: Tensor,
        settings: SamplingSettings,
        generator: torch.Generator | None = None,
    ) -> None:
        """Start every row from context frames: latents (B,T,C,h,w), actions (B,T[,K]) into each."""
        rows = torch.ones(cache.batch_size, dtype=torch.bool)
        self.reset_rows(cache, rows, latents, actions, settings, generator)

    @torch.no_grad()
    def reset_rows(
        self,
        cache: KVCache,
        rows: Tensor,
        latents: Tensor,
        actions: Tensor,
        settings: SamplingSettings,
        generator: torch.Generator | None = None,
    ) -> None:
        """Restart the rows flagged in ``rows`` (B,) bool from new context frames.

        latents (R,T,C,h,w) and actions (R,T[,K]) for the R flagged rows, or (B,...) of which
        the flagged rows are taken. Only the frames the cache can hold are encoded. The context
        is noised to ``settings.context_noise``.
        """
        device = cache.device
        idx = torch.as_tensor(rows, dtype=torch.bool, device=device).nonzero()[:, 0]
        if len(idx) == 0:
            return
        latents = latents.to(device, torch.float32)
        actions = self.model._action_components(actions.to(device), 2)
        if latents.shape[0] not in (len(idx), cache.batch_size):
            raise ValueError(f"reset_rows flags {len(idx)} rows: give latents for those or for all {cache.batch_size}")
        if latents.shape[0] != len(idx):
            latents, actions = latents[idx], actions[idx]
        latents, actions = latents[:, -cache.max_frames :], actions[:, -cache.max_frames :]
        latents, levels = self._noised_context(latents, settings.context_noise, generator)
        long_actions = cache.load_rows(idx, latents, actions, levels)
        branches = list(range(cache.branches))
        long_kv, short_kv = self._encode_history(cache, idx, long_actions, branches, settings)
        cache.write_rows(idx, branches, long_kv, short_kv)

    @torch.no_grad()
    def generate(
        self,
        cache: KVCache,
        actions: Tensor,
        settings: SamplingSettings,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        carried: Carried | None = None,
    ) -> Generation:
        """The next frame of every row, which then joins the row's context (noised to
        ``settings.context_noise`` if set).

        actions (B,) or (B,K): the action into the new frame; ``settings.steps`` Euler steps from
        s = 1 to 0; guidance w: v_u + w (v_c - v_u), the unconditional branch with the null action
        into the new frame, and with ``guidance_scope`` "all" everywhere (that branch's context then
        kept in the cache while w != 1, rebuilt from the held frames when w leaves 1); with
        "history" it keeps the action and sees no context.
        noise (B,C,h,w): the noise, drawn from ``generator`` if None; with ``settings.start_time``
        s0 < 1 the integration starts from (1 - s0) * the row's last context frame + s0 * noise
        (a change model, ``change_scale`` > 0, from s0 * noise: no change). A change model's
        result is added to the last context frame. carried: the carried variables (B,K) before the
        new frame, for a world that has them (:class:`~far_world.model.heads.FrameHeads`).
        """
        model, cfg, device, b = self.model, self.cfg, cache.device, cache.batch_size
        actions = model._action_components(actions.to(device), 1)
        guided = settings.guidance != 1.0
        self._set_branches(cache, 2 if guided and settings.guidance_scope == "all" else 1, settings)
        if noise is None:
            noise = model._draw(torch.randn, (b, cfg.latent_channels, cfg.latent_size, cfg.latent_size), device, generator)
        branches = 2 if guided else 1
        rows = branches * b
        history = settings.guidance_scope == "history"  # the unconditional branch: the action, no context
        slopes = flex_rope_slopes(settings.flex_rope_slope, cfg.heads, device)

        base = cache.base()
        past, key_pos, key_valid = self._context_keys(cache, base, with_short=True)
        if branches > cache.branches:  # scopes "frame" and "history": both branches read one context
            past = [(k.repeat(branches, 1, 1, 1), v.repeat(branches, 1, 1, 1)) for k, v in past]
            key_pos, key_valid = key_pos.repeat(branches, 1), key_valid.repeat(branches, 1)
            if history:
                key_valid[b:] = False
        new_pos = (cache.next_frame - base)[:, None].repeat(branches, 1)
        present = torch.ones_like(new_pos, dtype=torch.bool)
        rope, mask = self.layout.attention(new_pos[:, :0], new_pos, slopes, present[:, :0], present, key_pos, key_valid)
        if history:
            step_actions = actions[:, None].repeat(branches, 1, 1)
        else:
            step_actions = self._branch_actions(cache, actions[:, None], branches)
        no_long = noise.new_zeros(rows, 0, *noise.shape[1:])

        def velocity(x: Tensor, s: float) -> Tensor:
            # B rows on an unguided step (``guided_steps``): the conditional branch, stacked first.
            n = x.shape[0]
            t = torch.full((n, 1), s, device=device)
            layers = past if n == rows else [(k[:n], v[:n]) for k, v in past]
            with model._autocast(device):
                cond = F.silu(model.conditioner(t, t, step_actions[:n]))
                x_short, _ = model._trunk(no_long[:n], x[:, None], cond, (rope[0][:n], rope[1][:n]), mask[:n], layers)
                return model._velocity(x_short, cond, x[:, None], t)[:, 0].float()

        last = cache.short_latents[:, -1]
        start = noise.to(device, torch.float32)
        if settings.start_time < 1.0:  # from the last frame noised (for a change model: no change)
            anchor = as_generated(last, last, cfg.change_scale)
            start = (1 - settings.start_time) * anchor + settings.start_time * start
        generated = sample_euler(
            velocity, start, settings.steps, settings.guidance, settings.time_shift, settings.start_time,
            settings.guided_steps,
        )
        latent = from_generated(generated, last, cfg.change_scale)
        context_latent, level = self._noised_context(latent[:, None], settings.context_noise, generator)
        features = self._append(cache, context_latent[:, 0], actions, level[:, 0], slopes, generated=True)
        return Generation.read(model, latent, features, carried)

    @torch.no_grad()
    def observe(
        self, cache: KVCache, latents: Tensor, actions: Tensor, settings: SamplingSettings, carried: Carried | None = None
    ) -> Generation:
        """Append given frames (B,C,h,w), with the actions (B,) or (B,K) into them, to the context
        as clean frames, as :meth:`generate` appends its own: teacher forcing. Returns the heads'
        readings of those frames (given the carried values before them, if the world has any),
        what they would have said had the model generated them."""
        actions = self.model._action_components(actions.to(cache.device), 1)
        level = torch.zeros(cache.batch_size, device=cache.device)
        slopes = flex_rope_slopes(settings.flex_rope_slope, self.cfg.heads, cache.device)
        features = self._append(cache, latents.to(cache.device, torch.float32), actions, level, slopes, generated=False)
        return Generation.read(self.model, latents, features, carried)

    def _branch_actions(self, cache: KVCache, actions: Tensor, branches: int | None = None) -> Tensor:
        """Actions (B,F,K) for ``branches`` rows of B (default: the cache's): [actions ; null] for two."""
        if (branches or cache.branches) == 1:
            return actions
        return torch.cat([actions, cache.null_actions(tuple(actions.shape[:-1]))])

    def _context_timesteps(self, levels: Tensor, generated: Tensor) -> Tensor:
        """The markers (R,T) of short-window context frames noised to ``levels`` (R,T), of which
        the model made those flagged in ``generated`` (R,T) bool.

        A model trained with context-noise augmentation reads a noised context frame as context
        told its level. One trained without it met noisy earlier frames only as frames being
        denoised (diffusion forcing), so a noised frame is shown to it as one, at its flow time.
        A model trained with ``mark_generated`` is told which frames are its own.
        """
        context = torch.full_like(levels, CONTEXT)
        if self.cfg.mark_generated:
            context = torch.where(generated, GENERATED, context)
        if self.cfg.context_noise > 0:
            return context
        return torch.where(levels > 0, levels, context)

    def _noised_context(
        self, latents: Tensor, level: float, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Context frames (R,T,C,h,w) noised to flow time ``level``, and the levels (R,T) to tell."""
        levels = torch.full(latents.shape[:2], level, device=latents.device)
        if level == 0.0:
            return latents, levels
        eps = self.model._draw(torch.randn, tuple(latents.shape), latents.device, generator)
        return (1 - level) * latents + level * eps, levels

    def _context_keys(
        self, cache: KVCache, base: Tensor, with_short: bool
    ) -> tuple[list[tuple[Tensor, Tensor]], Tensor, Tensor]:
        """Cached keys rotated to positions relative to ``base`` (B,), values, key positions and validity.

        Keys are rotated here, once per call, rather than stored rotated: positions are re-based
        as old frames leave, and FlexRoPE reads the same positions. Returns per layer k, v
        (branches*B,H,Nk,Dh) over [long ; short context] (long only unless ``with_short``),
        key positions and validity (branches*B,Nk).
        """
        long_pos, long_valid = cache.long_frame - base[:, None], cache.long_frame >= 0
        short_pos, short_valid = cache.short_frame - base[:, None], cache.short_frame >= 0
        if not with_short:
            short_pos, short_valid = short_pos[:, :0], short_valid[:, :0]
        pos, valid = self.layout.tokens(long_pos, short_pos), self.layout.tokens(long_valid, short_valid)
        n = cache.branches
        cos, sin = (t.repeat(n, 1, 1, 1) for t in self.layout.rope(long_pos, short_pos))
        past = []
        for layer in range(self.cfg.depth):
            k, v = cache.long_k[layer], cache.long_v[layer]
            if with_short:
                k = torch.cat([k, cache.short_k[layer]], dim=2)
                v = torch.cat([v, cache.short_v[layer]], dim=2)
            past.append((apply_rope(k, cos, sin), v))
        return past, pos.repeat(n, 1), valid.repeat(n, 1)

    def _append(
        self, cache: KVCache, latent: Tensor, actions: Tensor, level: Tensor, slopes: Tensor | None, generated: bool
    ) -> Tensor:
        """Add a finished frame (B,C,h,w) with its action (B,K) and noise level (B,), ``generated``
        by the model or given, to the context: the oldest short-term frame moves to the long-term
        ring (or is dropped without long-term context) and the short window is re-encoded. Returns
        the new frame's pooled features (B,D) from that re-encoding, for the heads."""
        leaving = cache.push_short(latent, actions, level, generated)
        if cache.long_context and bool(leaving.valid.any()):
            return self._migrate_and_reencode(cache, leaving, slopes)
        return self._reencode_short(cache, slopes)

    def _migrate_and_reencode(self, cache: KVCache, leaving: LeavingFrame, slopes: Tensor | None) -> Tensor:
        """Encode the frame leaving the short window as a long-term frame and re-encode the short
        window, in one pass: the same numbers as the one after the other, at one pass's overhead.

        The leaving frame attends to the long-term ring as it is (its oldest slot included, which
        that frame then overwrites when the ring is full); the short window attends to the ring
        as it will be: without the overwritten slot, with the leaving frame. The frame's K/V go to
        the ring once, the window's replace the short-term K/V. Returns the newest frame's pooled
        features (B,D), as :meth:`_reencode_short`.
        """
        model, cfg, n = self.model, self.cfg, cache.branches
        base = torch.minimum(cache.base(), torch.where(leaving.valid, leaving.frame, cache.next_frame))
        past, key_pos, key_valid = self._context_keys(cache, base, with_short=False)
        long_pos = (leaving.frame - base)[:, None].repeat(n, 1)
        long_valid = leaving.valid[:, None].repeat(n, 1)
        short_pos = (cache.short_frame - base[:, None]).repeat(n, 1)
        short_valid = (cache.short_frame >= 0).repeat(n, 1)
        rope, mask = self.layout.attention(long_pos, short_pos, slopes, long_valid, short_valid, key_pos, key_valid)
        # The window's queries (after the leaving frame's tokens) must not see the slot it overwrites.
        window_queries = torch.arange(mask.shape[2], device=cache.device) >= cfg.long_tokens  # (Nq,)
        overwritten = F.pad(self._overwritten_slot_keys(cache, leaving), (0, mask.shape[3] - key_pos.shape[1]))
        hidden = window_queries[None, None, :, None] & overwritten.repeat(n, 1)[:, None, None, :]
        mask = mask & ~hidden if mask.dtype == torch.bool else mask.masked_fill(hidden, float("-inf"))
        actions = self._branch_actions(cache, torch.cat([leaving.action[:, None], cache.short_actions], dim=1))
        short_timesteps = self._context_timesteps(cache.short_levels, cache.short_generated).repeat(n, 1)
        timesteps = torch.cat([torch.full(long_pos.shape, LONG, device=cache.device), short_timesteps], dim=1)
        levels = torch.cat([leaving.level[:, None], cache.short_levels], dim=1).repeat(n, 1)
        long_latent = leaving.latent[:, None].repeat(n, 1, 1, 1, 1)
        with model._autocast(cache.device):
            cond = F.silu(model.conditioner(timesteps, levels, actions))
            x_short, kvs = model._trunk(long_latent, cache.short_latents.repeat(n, 1, 1, 1, 1), cond, rope, mask, past)
        split = cfg.long_tokens
        cache.write_long(leaving, [(k[:, :, :split], v[:, :, :split]) for k, v in kvs])
        cache.set_short_kv([(k[:, :, split:], v[:, :, split:]) for k, v in kvs])
        return x_short[: cache.batch_size, -1].mean(dim=1).float()

    @staticmethod
    def _overwritten_slot_keys(cache: KVCache, leaving: LeavingFrame) -> Tensor:
        """(B, slots*long_tokens) bool: the ring keys the leaving frame replaces (a full ring's oldest)."""
        slot = cache.long_count % cache.cfg.max_long_frames
        held = torch.zeros(cache.long_frame.shape, dtype=torch.bool, device=cache.device)
        rows = (leaving.valid & (slot < cache.slots)).nonzero()[:, 0]
        held[rows, slot[rows]] = cache.long_frame[rows, slot[rows]] >= 0
        return held.repeat_interleave(cache.cfg.long_tokens, dim=1)

    def _reencode_short(self, cache: KVCache, slopes: Tensor | None) -> Tensor:
        """Recompute the short-term context's K/V against the current long-term frames.

        The newest frame is the last of the window, read as clean context just as the heads
        learn it in training, so its pooled features (B,D) come back for the heads: no extra pass.
        """
        model, n = self.model, cache.branches
        base = cache.base()
        past, key_pos, key_valid = self._context_keys(cache, base, with_short=False)
        pos = (cache.short_frame - base[:, None]).repeat(n, 1)
        valid = (cache.short_frame >= 0).repeat(n, 1)
        rope, mask = self.layout.attention(pos[:, :0], pos, slopes, valid[:, :0], valid, key_pos, key_valid)
        actions = self._branch_actions(cache, cache.short_actions)
        timesteps = self._context_timesteps(cache.short_levels, cache.short_generated).repeat(n, 1)
        latents = cache.short_latents.repeat(n, 1, 1, 1, 1)
        with model._autocast(cache.device):
            cond = F.silu(model.conditioner(timesteps, cache.short_levels.repeat(n, 1), actions))
            x_short, kvs = model._trunk(latents[:, :0], latents, cond, rope, mask, past)
        cache.set_short_kv(kvs)
        return x_short[: cache.batch_size, -1].mean(dim=1).float()

    def _encode_history(
        self, cache: KVCache, idx: Tensor, long_actions: Tensor, branches: list[int], settings: SamplingSettings
    ) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[Tensor, Tensor]]]:
        """K/V of everything rows ``idx`` hold, from their stored latents, in one pass.

        long_actions (R,slots,K) are the conditional branch's long-term actions (the cache does not
        keep them); branch 1 uses the null action everywhere. The frame-causal mask reads
        positions, so ring slots need no sorting. Returns per layer (long k, v) and (short k, v),
        rows stacked [branch ; ...] of R each.
        """
        model, n = self.model, len(branches)
        long_frame, short_frame = cache.long_frame[idx], cache.short_frame[idx]
        base = cache.base()[idx][:, None]
        long_pos, short_pos = (long_frame - base).repeat(n, 1), (short_frame - base).repeat(n, 1)
        slopes = flex_rope_slopes(settings.flex_rope_slope, self.cfg.heads, cache.device)
        rope, mask = self.layout.attention(
            long_pos, short_pos, slopes, (long_frame >= 0).repeat(n, 1), (short_frame >= 0).repeat(n, 1)
        )
        short_actions = cache.short_actions[idx]
        actions = torch.cat(
            [
                torch.cat([long_actions, short_actions], dim=1)
                if branch == 0
                else cache.null_actions((len(idx), long_frame.shape[1] + short_frame.shape[1]))
                for branch in branches
            ]
        )
        short_timesteps = self._context_timesteps(cache.short_levels[idx], cache.short_generated[idx]).repeat(n, 1)
        timesteps = torch.cat([torch.full(long_pos.shape, LONG, device=cache.device), short_timesteps], dim=1)
        levels = torch.cat([cache.long_levels[idx], cache.short_levels[idx]], dim=1).repeat(n, 1)
        with model._autocast(cache.device):
            cond = F.silu(model.conditioner(timesteps, levels, actions))
            _, kvs = model._trunk(
                cache.long_latents[idx].repeat(n, 1, 1, 1, 1), cache.short_latents[idx].repeat(n, 1, 1, 1, 1), cond, rope, mask
            )
        split = long_frame.shape[1] * self.cfg.long_tokens
        return [(k[:, :, :split], v[:, :, :split]) for k, v in kvs], [(k[:, :, split:], v[:, :, split:]) for k, v in kvs]

    def _set_branches(self, cache: KVCache, branches: int, settings: SamplingSettings) -> None:
        """Add or drop the unconditional branch of the cache."""
        if branches == cache.branches:
            return
        if branches == 1:
            cache.drop_unconditional()
            return
        idx = torch.arange(cache.batch_size, device=cache.device)
        null_long = cache.null_actions((cache.batch_size, cache.slots))
        long_kv, short_kv = self._encode_history(cache, idx, null_long, [1], settings)
        cache.add_unconditional(long_kv, short_kv)
