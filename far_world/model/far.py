"""FARModel: the frame-autoregressive flow transformer, its training loss and the uncached reference.

Training and the uncached reference (:meth:`FARModel.forward`) see whole clips: the last
``short_window`` frames at full tokens, older ones as long-term frames. Cached inference
(far_world.model.inference) produces the same numbers one frame at a time from a KV cache.

A frame's timestep says what it is: a flow time s in [0, 1] for a frame being denoised,
CONTEXT (-1) for a clean short-term context frame, LONG (-2) for a long-term frame, and with
``mark_generated`` GENERATED (-3) for a clean short-term frame the model generated itself. The
markers get their own learned embeddings: clean context is distinct from "almost denoised"
(s = 0), and FAR trains it with probability ``clean_context_prob`` so that inference, whose
context is always clean, stays in distribution. With context-noise augmentation a context
frame's noise level is told through the flow-time embedding added to its marker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from far_world.model.config import FARConfig
from far_world.model.edges import detail_weights
from far_world.model.heads import FrameHeads, head_losses
from far_world.model.layout import Rope, TokenLayout
from far_world.model.rope import flex_rope_slopes
from far_world.model.transformer import FARBlock, FinalLayer, patchify, unpatchify

CONTEXT = -1.0
LONG = -2.0
GENERATED = -3.0
# The least flow time a clean-frame prediction is divided by: far below any flow time a denoised
# frame meets in training or sampling; it only keeps context frames (no flow time) finite.
MIN_FLOW_TIME = 1e-4


def timestep_embedding(levels: Tensor, dim: int = 256) -> Tensor:
    """Sinusoidal features of flow times (...) in [0, 1], scaled by 1000 as in DiT -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=levels.device) / half)
    args = levels.float()[..., None] * 1000.0 * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def warm_start_source(eps: Tensor, x0: Tensor, prev: Tensor, start: Tensor) -> Tensor:
    """The flow's source for a frame x0 (B,F,C,h,w) on the warm-start path of flow time S =
    ``start`` (B,F): the point at s = 1 of the straight line from x0 through the warm start
    x_S = S eps + (1 - S) prev, where sampling with start_time S begins from the frame before.
    Training on (1 - s) x0 + s source then teaches that line; S = 1 gives the noise itself."""
    pull = ((1 - start) / start)[..., None, None, None]
    return eps + pull * (prev - x0)


def as_generated(frames: Tensor, prev: Tensor, change_scale: float) -> Tensor:
    """What the flow generates for ``frames`` after ``prev`` (both (...,C,h,w)): the frames
    themselves, or with ``change_scale`` > 0 their change from ``prev``, divided by it."""
    return frames if change_scale == 0 else (frames - prev) / change_scale


def from_generated(generated: Tensor, prev: Tensor, change_scale: float) -> Tensor:
    """The frames that flow output ``generated`` stands for: the inverse of :func:`as_generated`."""
    return generated if change_scale == 0 else prev + change_scale * generated


class FrameConditioner(nn.Module):
    """A frame's conditioning vector: flow-time MLP + frame-kind embedding + summed action embeddings."""

    def __init__(
        self, width: int, action_nvec: Sequence[int], freq_dim: int = 256, mark_generated: bool = False
    ) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        # Kinds: 0 a frame being denoised, 1 clean context (CONTEXT), 2 long-term (LONG), and
        # with ``mark_generated`` 3 the model's own frame as context (GENERATED).
        self.kind = nn.Embedding(4 if mark_generated else 3, width)
        # One table per action component, each with a null row (index nvec[k]), stored as one.
        sizes = [n + 1 for n in action_nvec]
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.action = nn.Embedding(sum(sizes), width)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # Weights from a model without the GENERATED kind start it as CONTEXT: fine-tuning
        # begins from exactly the model it was given.
        key = prefix + "kind.weight"
        stored = state_dict.get(key)
        if stored is not None and stored.shape[0] == 3 and self.kind.num_embeddings == 4:
            state_dict[key] = torch.cat([stored, stored[1:2]])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, timesteps: Tensor, levels: Tensor, actions: Tensor) -> Tensor:
        """timesteps (B,F) flow time or marker; levels (B,F) noise level told to the model
        (the flow time, or a context frame's augmentation noise); actions (B,F,K) -> (B,F,D)."""
        kind = (-timesteps).clamp(min=0).round().long()
        emb = self.time_mlp(timestep_embedding(levels, self.freq_dim)) + self.kind(kind)
        return emb + self.action(actions + self.offsets).sum(dim=-2)


class FARModel(nn.Module):
    """Action-conditioned FAR: DiT blocks over [long ; short] frame tokens, flow-matching velocity out."""

    def __init__(self, cfg: FARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, p, lp, d = cfg.latent_channels, cfg.patch_size, cfg.long_patch_size, cfg.width
        self.embed_short = nn.Linear(c * p * p, d)
        self.embed_long = nn.Linear(c * lp * lp, d)
        self.conditioner = FrameConditioner(d, cfg.action_nvec, mark_generated=cfg.mark_generated)
        self.cond_to_tokens = nn.Linear(d, d) if cfg.token_conditioning else None
        self.blocks = nn.ModuleList(FARBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, c * p * p)
        self.heads = FrameHeads(d, carried_scale=cfg.carried_scale)
        self.register_buffer("null_action", torch.tensor(cfg.action_nvec), persistent=False)
        # Token positions, RoPE tables and masks: no weights, shared with the cached sampler.
        self.layout = TokenLayout(cfg)
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

    # ----- machinery shared by training, the uncached reference and far_world.model.inference -----

    def _action_components(self, actions: Tensor, lead: int) -> Tensor:
        """Actions with ``lead`` leading dims, as int64 (..., K)."""
        actions = actions.long()
        if actions.dim() == lead:
            if len(self.cfg.action_nvec) != 1:
                raise ValueError(f"multi-discrete actions need a last dim of {len(self.cfg.action_nvec)}")
            actions = actions[..., None]
        return actions

    def _trunk(
        self,
        long_latents: Tensor,
        short_latents: Tensor,
        cond: Tensor,
        rope: Rope,
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

    def _velocity(self, x_short: Tensor, cond_short: Tensor, noisy: Tensor, times: Tensor) -> Tensor:
        """Final features (R,Fs,Ts,D) -> velocity (R,Fs,C,h,w) at the frames' noisy latents
        (R,Fs,C,h,w) and flow times (R,Fs); a clean-frame output x0 becomes (x_s - x0) / s."""
        out = unpatchify(self.final(x_short, cond_short), self.cfg.patch_size, self.cfg.latent_size)
        if self.cfg.prediction == "velocity":
            return out
        s = times.to(out.dtype).clamp_min(MIN_FLOW_TIME)[..., None, None, None]
        return (noisy.to(out.dtype) - out) / s

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

    def dropped_actions(self, actions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions (B,F) or (B,F,K) as int64 (B,F,K), each frame's replaced by the null action with
        probability ``action_dropout``: training meets the unconditional branch guidance reads."""
        actions = self._action_components(actions, 2)
        drop = self._draw(torch.rand, tuple(actions.shape[:2]), actions.device, generator) < self.cfg.action_dropout
        return torch.where(drop[..., None], self.null_action, actions)

    def forward(
        self,
        latents: Tensor,
        actions: Tensor,
        timesteps: Tensor,
        context_levels: Tensor | None = None,
        flex_rope_slope: float | Sequence[float] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Velocities and features of a clip's short-term frames, all frames at once.

        latents (B,F,C,h,w); actions (B,F) or (B,F,K), the action into each frame (null if none);
        timesteps (B,F): flow time s in [0,1] of a frame to denoise, or CONTEXT (-1) (GENERATED, -3,
        for the model's own frames with ``mark_generated``); the first
        F - short_window frames are long-term whatever their timestep. context_levels (B,F): the
        noise level of context frames (context-noise augmentation), zero if None.
        flex_rope_slope: FlexRoPE's slope(s), the config's (0 unless set) if None.
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
        slope = self.cfg.flex_rope_slope if flex_rope_slope is None else flex_rope_slope
        slopes = flex_rope_slopes(slope, self.cfg.heads, latents.device)
        rope, mask = self.layout.clip(n_long, n_short, slopes, latents.device)
        with self._autocast(latents.device):
            cond = F.silu(self.conditioner(timesteps, levels, actions))
            x_short, _ = self._trunk(latents[:, :n_long], latents[:, n_long:], cond, rope, mask)
            velocity = self._velocity(x_short, cond[:, n_long:], latents[:, n_long:], timesteps[:, n_long:])
        return velocity.float(), x_short.mean(dim=2).float()

    def velocity(
        self,
        latents: Tensor,
        actions: Tensor,
        timesteps: Tensor,
        context_levels: Tensor | None = None,
        flex_rope_slope: float | Sequence[float] | None = None,
    ) -> Tensor:
        """The velocity half of :meth:`forward`: (B,Fs,C,h,w)."""
        return self.forward(latents, actions, timesteps, context_levels, flex_rope_slope)[0]

    def training_loss(
        self,
        latents: Tensor,
        actions: Tensor,
        rewards: Tensor,
        terminated: Tensor,
        generator: torch.Generator | None = None,
        context_latents: Tensor | None = None,
        last_frame_rows: Tensor | None = None,
        keep_estimates: bool = False,
    ) -> dict[str, Tensor]:
        """Rectified-flow loss of a batch of clips, plus the reward and termination heads' losses.
        With ``warm_start_time`` S < 1 a frame after another is denoised from flow times below S,
        on the path from its warm start (:func:`warm_start_source`); with ``change_scale`` > 0
        what is denoised is its change from the frame before (:func:`as_generated`).

        latents (B,F,C,h,w); actions (B,F) or (B,F,K) int64, the action into frame t (null for
        none); rewards (B,F) float and terminated (B,F) bool of the transition into frame t.
        Every random draw comes from ``generator`` when given. ``context_latents`` (B,F,C,h,w):
        what frames given as clean context show instead of the truth (the model's own estimates,
        for drift control); denoised frames and their targets always use ``latents``, and the
        heads learn only from frames shown as they truly are.
        ``last_frame_rows`` (B,) bool: rows laid out as at play time, every frame but the last
        given as clean context and only the last denoised (with ``own_rollouts``' context).
        Returns {"loss": weighted sum to backward, "flow", "reward", "termination": detached};
        with ``keep_estimates`` also "estimates" (B,Fs,C,h,w), the clean frames the model
        estimates for the short window (x_s - s v as a frame, with gradient), and "denoised" (B,Fs) bool,
        which of them were denoised (an adversarial term scores those), "times" (B,Fs), the flow
        times they were denoised from, and "actions" (B,F,K), the actions as the model was given
        them (action dropout applied).
        """
        cfg = self.cfg
        if cfg.carried:
            raise ValueError(
                f"this world carries {list(cfg.carried)}, whose heads are fitted on the frozen world by "
                "train/tune_carried.py: train or fine-tune the world without them, then fit them again"
            )
        b, n_frames = latents.shape[:2]
        n_long = n_frames - min(n_frames, cfg.short_window)
        device = latents.device
        x0 = latents.float()
        actions = self.dropped_actions(actions, generator)
        # A frame after another walks the warm-start path from flow time S = warm_start_time down.
        start = torch.full((b, n_frames), cfg.warm_start_time, device=device)
        start[:, 0] = 1.0
        s = start * torch.sigmoid(cfg.flow_time_mean + self._draw(torch.randn, (b, n_frames), device, generator))
        clean = self._draw(torch.rand, (b, n_frames), device, generator) < cfg.clean_context_prob
        clean[:, :n_long] = True
        if cfg.change_scale > 0:
            clean[:, 0] = True  # a change needs a frame before it
        if last_frame_rows is not None:
            rows = last_frame_rows.to(device)
            clean[rows] = True
            clean[rows, -1] = False
        eps = self._draw(torch.randn, tuple(x0.shape), device, generator)
        # Context-noise augmentation: a context frame is noised to a level sigma ~ U(0, context_noise),
        # told to the model through the flow-time embedding added to its CONTEXT/LONG marker.
        sigma = self._draw(torch.rand, (b, n_frames), device, generator) * cfg.context_noise
        level = torch.where(clean, sigma, s)[..., None, None, None]
        shown = x0 if context_latents is None else torch.where(clean[..., None, None, None], context_latents.float(), x0)
        # A denoised frame's path runs from its source at s = 1 to its target, the frame or its
        # change; the frame before it is taken as the context shows it, as sampling takes its
        # last context frame.
        prev = torch.cat([x0[:, :1], shown[:, :-1]], dim=1)
        target = as_generated(x0, prev, cfg.change_scale)
        is_clean = clean[..., None, None, None]
        source = torch.where(is_clean, eps, warm_start_source(eps, x0, prev, start))
        x = (1 - level) * torch.where(is_clean, shown, target) + level * source
        # Clean frames shown as the model's own (a rollout, an estimate) rather than as they are.
        if context_latents is None:
            untrue = torch.zeros_like(clean)
        else:
            untrue = (shown != x0).flatten(2).any(dim=2) & clean
        timesteps = torch.where(clean, torch.full_like(s, CONTEXT), s)
        if cfg.mark_generated:
            timesteps = torch.where(untrue, torch.full_like(s, GENERATED), timesteps)
        velocity, features = self.forward(x, actions, timesteps, context_levels=sigma)

        s_short = s[:, n_long:]
        estimate = x[:, n_long:] - s_short[..., None, None, None] * velocity
        if cfg.prediction == "velocity":
            error = (velocity - (source - target)[:, n_long:]).pow(2)
        else:
            error = (estimate - target[:, n_long:]).pow(2)
        if cfg.detail_loss_weight > 0:
            error = error * detail_weights(x0[:, n_long:], cfg.detail_loss_weight)
        per_frame = error.mean(dim=(2, 3, 4))
        if cfg.prediction == "clean":
            per_frame = per_frame * (0.9 * (1 - s_short) + 0.1)
        clean_estimate = from_generated(estimate, prev[:, n_long:], cfg.change_scale)
        denoised = (~clean[:, n_long:]).float()
        flow = (per_frame * denoised).sum() / denoised.sum().clamp_min(1.0)
        # The heads learn from every short-term frame, noisy ones weighted by how much of the
        # frame is left (1 - s): at inference they read the finished frame as clean context.
        # A clean frame shown as the model's own (a rollout, an estimate) is left out: its label
        # belongs to the true frame, and a generated frame need not show it (doom's health digits
        # do not count down in free play), so learning from it teaches the heads to guess.
        reward, termination_logit, _ = self.heads(features)
        weight = torch.where(clean[:, n_long:], torch.ones_like(s[:, n_long:]), 1 - s[:, n_long:])
        weight = weight * (~untrue[:, n_long:]).float()
        reward_loss, termination_loss = head_losses(
            reward, termination_logit, rewards[:, n_long:].to(device), terminated[:, n_long:].to(device), weight,
            cfg.termination_pos_weight,
        )
        loss = flow + cfg.reward_loss_weight * reward_loss + cfg.termination_loss_weight * termination_loss
        out = {"loss": loss, "flow": flow.detach(), "reward": reward_loss.detach(), "termination": termination_loss.detach()}
        if keep_estimates:
            out.update(estimates=clean_estimate, denoised=~clean[:, n_long:], times=s_short, actions=actions)
        return out
