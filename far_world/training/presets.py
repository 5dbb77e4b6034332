"""Typed training configs and their named presets (``tiny``, ``cpu``, ``gpu``).

A run starts from a preset, overrides fields from the command line (``lr=3e-4``,
``far.depth=4``), and writes the exact config it used next to its outputs.

``cpu``: the released worlds' recipe, 4 x 192 with patch 2 (16 tokens a frame; head dim 64
keeps RoPE's 16:24:24 split), sized so that the trained world plays at more than 20 steps/s on a
2-core CPU and 3,600 steps train in about 35 minutes there (docs/RESULTS.md); the baseline of
every ablation. ``cpu_rollout``: the same trained on its own rollouts from a third of the way on,
which keeps free play's colours but weakens action following (docs/decisions.md). ``gpu``: FAR-B.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from far_world.files import write_json
from far_world.model.autoencoder import AEConfig
from far_world.model.config import FARConfig

Config = TypeVar("Config")


@dataclass
class AETrainConfig:
    """How the frame autoencoder is trained."""

    ae: AEConfig = field(default_factory=AEConfig)
    batch_size: int = 64
    steps: int = 6000
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Weight of an L1 loss on Sobel image gradients beside the pixel L1 (0 = pixels only): it
    # penalizes the soft edges that pixel L1 accepts (far_world/model/edges.py).
    gradient_loss_weight: float = 0.0
    seed: int = 0
    # Frames used to fit the latent statistics, and held-out test frames scored at the end.
    stats_frames: int = 4096
    eval_frames: int = 1024
    log_every: int = 20
    ckpt_every: int = 500
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ae"] = self.ae.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AETrainConfig":
        d = dict(d)
        ae = AEConfig.from_dict(d.pop("ae"))
        return cls(ae=ae, **_known(cls, d))


@dataclass
class FARTrainConfig:
    """How the FAR transformer is trained; ``batch_size`` is the global batch over all ranks."""

    far: FARConfig = field(default_factory=FARConfig)
    batch_size: int = 16
    # Each rank splits its share into this many micro-batches (gradient accumulation). The
    # global batch is cut into world_size * micro_batches shards whatever the split, so one
    # process with 2 micro-batches computes exactly what 2 ranks with 1 each compute.
    micro_batches: int = 1
    # Clip lengths are drawn uniformly in [min, max] per step (the same for every rank):
    # long-term context is learnt only from clips longer than the short window.
    min_clip_frames: int = 8
    max_clip_frames: int = 32
    steps: int = 4000
    lr: float = 3e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # Drift control (far_world/training/self_context.py): a short-window context frame shows the
    # model's own one-step estimate of it, from flow time up to self_context_max_time, with this
    # probability (0 = plain teacher forcing, as FAR).
    self_context_prob: float = 0.0
    self_context_max_time: float = 0.6
    # Drift control by rollouts (the same module): from step rollout_start_step on (a model
    # that draws noise has no drift worth learning from), a clip is, with probability
    # rollout_prob, shown as at play time, its last frame denoised after 1..rollout_frames
    # frames of the model's own free play (rollout_steps Euler steps a frame) from the true
    # frames before them.
    rollout_prob: float = 0.0
    rollout_frames: int = 6
    rollout_steps: int = 3
    rollout_start_step: int = 0
    # Against blur (far_world/training/adversarial.py): a critic of latent next frames, trained
    # from the first step, and its hinge loss on the model's clean estimates added to the flow
    # loss with this weight from adversarial_start_step on (0 = off). For fine-tuning a world.
    adversarial_weight: float = 0.0
    adversarial_start_step: int = 0
    critic_width: int = 64
    # The critic also sees the action into each frame (judging whether the frame follows from it).
    critic_actions: bool = False
    critic_lr: float = 1e-3
    # Only estimates from flow times s <= adversarial_max_time are judged (1 = all): the detail
    # the last Euler steps draw, not the layout still open at high noise. On Minecraft a limit
    # did no better than a smaller weight (docs/RESULTS.md), so the default judges all.
    adversarial_max_time: float = 1.0
    # Few-step distillation (far_world/training/distillation.py), for fine-tuning a world: a step
    # is, with probability distill_prob, a distillation step, its clips laid out as at play time
    # and the model's velocity at a point of the distill_steps-step grid taught to land where the
    # starting weights land in distill_substeps smaller steps. Other steps keep the flow loss.
    distill_prob: float = 0.0
    distill_steps: int = 3
    distill_substeps: int = 3
    # The teacher guided on the new frame's action with this weight over the grid's first
    # distill_guided_steps steps (1 = unguided): the student, played unguided, learns to move
    # as the guided teacher does (guidance baked in, at the unguided frame rate).
    distill_guidance: float = 1.0
    distill_guided_steps: int = 1
    # Grid steps before distill_from_step are left to the flow loss: only the later, low-noise
    # steps that draw the detail learn from the teacher (0 = every step).
    distill_from_step: int = 0
    # Revisit clips (far_world/data/revisits.py): a clip is, with probability revisit_prob, one whose
    # last frame is closer to a long-term frame of the clip than revisit_margin times the closest
    # short-window frame, so that the loss asks for what only the compressed long-term context shows.
    revisit_prob: float = 0.0
    revisit_margin: float = 0.5
    seed: int = 0
    # Prompt clips bundled with the released checkpoint for reset (from the test split).
    num_prompts: int = 4
    prompt_frames: int = 16
    log_every: int = 10
    ckpt_every: int = 200
    device: str = "auto"

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if not 1 <= self.min_clip_frames <= self.max_clip_frames:
            got = f"{self.min_clip_frames}, {self.max_clip_frames}"
            raise ValueError(f"need 1 <= min_clip_frames <= max_clip_frames, got {got}")
        if self.batch_size < 1 or self.micro_batches < 1:
            raise ValueError("batch_size and micro_batches must be >= 1")
        if not 0.0 <= self.rollout_prob <= 1.0 or self.rollout_frames < 1 or self.rollout_steps < 1:
            got = f"{self.rollout_prob}, {self.rollout_frames}, {self.rollout_steps}"
            raise ValueError(f"need rollout_prob in [0, 1] and rollout_frames, rollout_steps >= 1, got {got}")
        if self.adversarial_weight < 0 or self.critic_width < 1 or self.critic_lr <= 0:
            got = f"{self.adversarial_weight}, {self.critic_width}, {self.critic_lr}"
            raise ValueError(f"need adversarial_weight >= 0, critic_width >= 1 and critic_lr > 0, got {got}")
        if not 0.0 < self.adversarial_max_time <= 1.0:
            raise ValueError(f"need adversarial_max_time in (0, 1], got {self.adversarial_max_time}")
        if not 0.0 <= self.distill_prob <= 1.0 or self.distill_steps < 1 or self.distill_substeps < 1:
            got = f"{self.distill_prob}, {self.distill_steps}, {self.distill_substeps}"
            raise ValueError(f"need distill_prob in [0, 1] and distill_steps, distill_substeps >= 1, got {got}")
        if self.distill_guidance <= 0 or self.distill_guided_steps < 1:
            got = f"{self.distill_guidance}, {self.distill_guided_steps}"
            raise ValueError(f"need distill_guidance > 0 and distill_guided_steps >= 1, got {got}")
        if not 0 <= self.distill_from_step < self.distill_steps:
            got = f"distill_from_step={self.distill_from_step}, distill_steps={self.distill_steps}"
            raise ValueError(f"need 0 <= distill_from_step < distill_steps, got {got}")
        if self.distill_prob > 0 and (self.far.warm_start_time < 1.0 or self.far.change_scale > 0):
            raise ValueError(
                "distillation teaches the path from noise to the frame: it cannot train warm-start paths "
                "(far.warm_start_time) or change prediction (far.change_scale)"
            )
        if not 0.0 <= self.revisit_prob <= 1.0 or not 0.0 < self.revisit_margin <= 1.0:
            got = f"{self.revisit_prob}, {self.revisit_margin}"
            raise ValueError(f"need revisit_prob in [0, 1] and revisit_margin in (0, 1], got {got}")
        if self.self_context_prob > 0 and self.far.change_scale > 0:
            raise ValueError("self_context_prob estimates whole frames: it cannot train change prediction (far.change_scale)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["far"] = self.far.to_dict()
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FARTrainConfig":
        d = dict(d)
        far = FARConfig.from_dict(d.pop("far"))
        return cls(far=far, **_known(cls, d))


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return d


AE_PRESETS: dict[str, AETrainConfig] = {
    # Tests: a few seconds.
    "tiny": AETrainConfig(
        ae=AEConfig(channels=(8, 16), latent_channels=4), batch_size=8, steps=20, warmup_steps=2,
        stats_frames=64, eval_frames=32, log_every=5, ckpt_every=10,
    ),
    # The CPU design measured best for a ~15 minute budget on 2 cores (docs/results).
    "cpu": AETrainConfig(ae=AEConfig(channels=(32, 64)), batch_size=64, steps=6000),
    # More capacity where compute is cheap; the decoder stays conv-only and fast.
    "gpu": AETrainConfig(
        ae=AEConfig(channels=(64, 128), blocks_per_stage=2), batch_size=128, steps=30000, lr=1e-3
    ),
}

# 4 x 192, patch 2, short window 4: a step of 32 clips of 4-32 frames takes ~0.5 s on the 2-core
# CPU. Token conditioning and high-noise flow times are what made the maze world follow its
# actions (docs/decisions.md); max_long_frames = max_clip_frames - short_window.
_CPU_TEACHER_FORCED = FARTrainConfig(
    far=FARConfig(
        depth=4, width=192, heads=3, patch_size=2, short_window=4, max_long_frames=28,
        clean_context_prob=0.3, token_conditioning=True, flow_time_mean=1.0,
    ),
    batch_size=32, min_clip_frames=4, max_clip_frames=32, steps=3600, lr=1e-3, warmup_steps=150,
    ckpt_every=300,
)

FAR_PRESETS: dict[str, FARTrainConfig] = {
    # Tests and smoke runs: seconds. Latent channels match the tiny autoencoder.
    "tiny": FARTrainConfig(
        far=FARConfig(latent_channels=4, depth=2, width=64, heads=2, patch_size=2, short_window=4, max_long_frames=16),
        batch_size=4, min_clip_frames=3, max_clip_frames=8, steps=20, warmup_steps=2,
        num_prompts=2, prompt_frames=4, log_every=1, ckpt_every=5,
    ),
    "cpu": _CPU_TEACHER_FORCED,
    # cpu plus rollouts on half the clips from step 1,200 of 3,600: from scratch, the 1,200-step
    # ablation with rollouts from its step 400 beat teacher forcing on every free-play figure, and
    # as a fine-tune they kept the scene's colours, but the fine-tuned maze world followed its
    # actions by 0.87 dB instead of 2.37 (docs/RESULTS.md): not the default until a world keeps both.
    "cpu_rollout": dataclasses.replace(_CPU_TEACHER_FORCED, rollout_prob=0.5, rollout_start_step=1200),
    # FAR-B (12 x 768, patch 1, 16-frame short window), bf16 autocast on CUDA.
    "gpu": FARTrainConfig(
        far=FARConfig(depth=12, width=768, heads=12, patch_size=1, short_window=16, max_long_frames=256),
        batch_size=64, min_clip_frames=16, max_clip_frames=96, steps=200000, lr=1e-4, warmup_steps=2000,
        ema_decay=0.9999, ckpt_every=2000, log_every=50,
    ),
}


def preset(presets: dict[str, Config], name: str) -> Config:
    """A fresh copy of a named preset (mutating it never changes the table)."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
    return type(presets[name]).from_dict(presets[name].to_dict())  # type: ignore[attr-defined]


def _parse_value(text: str, current: Any) -> Any:
    """Parse ``text`` to the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        kind = type(current[0]) if current else int
        return tuple(kind(v) for v in text.split(",") if v)
    if isinstance(current, dict):
        return json.loads(text)
    return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of ``cfg`` with ``key=value`` overrides applied; dotted keys reach nested configs.

    All overrides are applied before the configs validate themselves, so fields that must
    change together (``far.width=512 far.heads=8``) can.

    >>> apply_overrides(FAR_PRESETS["tiny"], ["lr=1e-3", "far.depth=3"]).far.depth
    3
    """
    d = cfg.to_dict()  # type: ignore[attr-defined]
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, text = (part.strip() for part in item.split("=", 1))
        *parents, name = key.split(".")
        owner, target = cfg, d
        for parent in parents:
            owner = _field(owner, parent, key)
            if not dataclasses.is_dataclass(owner):
                raise ValueError(f"{key!r}: {parent} has no fields")
            target = target[parent]
        current = _field(owner, name, key)
        if dataclasses.is_dataclass(current):
            raise ValueError(f"{key!r} is a nested config: set its fields ({key}.FIELD=...)")
        target[name] = _parse_value(text, current)
    return type(cfg).from_dict(d)  # type: ignore[attr-defined]


def _field(obj: Any, name: str, full_key: str) -> Any:
    names = {f.name for f in fields(obj)}
    if name not in names:
        raise ValueError(f"unknown config field {full_key!r}; {type(obj).__name__} has {sorted(names)}")
    return getattr(obj, name)


def write_config(cfg: Any, path: str | Path) -> Path:
    """Write a config's ``to_dict()`` as JSON (the exact config of a run, beside its outputs)."""
    return write_json(path, cfg.to_dict())
