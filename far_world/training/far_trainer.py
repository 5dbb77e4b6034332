"""One FAR training run's state and its step: data, model, DDP, AdamW, EMA, schedule, resume.

Everything random in a step is a pure function of (seed, step, shard): the clip length, the
clips (``ClipDataset.sample_batch``) and the model's noise (a generator seeded per shard).
A run resumed from a checkpoint at step k therefore computes step k+1 bit for bit as the
uninterrupted run did, and the global batch is cut into the same shards whether one process
accumulates them or several ranks share them.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from far_world.checkpoint import TrainingState, capture_rng_state, restore_rng_state
from far_world.data.clips import ClipBatch, ClipDataset
from far_world.data.revisits import RevisitWindows
from far_world.model.far import FARModel
from far_world.model.sampler import SamplingSettings
from far_world.training.adversarial import AdversarialTerm, NextFramePairs, next_frame_pairs
from far_world.training.distillation import distillation_loss, frozen_teacher
from far_world.training.distributed import DistInfo, mean_over_ranks
from far_world.training.ema import EMA
from far_world.training.presets import FARTrainConfig
from far_world.training.schedule import lr_at
from far_world.training.self_context import own_estimates, own_rollouts


class _TrainingLoss(nn.Module):
    """Routes a step's loss through ``forward``: DDP only synchronizes what its forward runs.

    ``objective`` "flow" is ``FARModel.training_loss``; "distill" is ``distillation_loss``.
    """

    def __init__(self, model: FARModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, objective: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if objective == "distill":
            loss = distillation_loss(self.model, *args, **kwargs)
            return {"loss": loss, "distill": loss.detach()}
        return self.model.training_loss(*args, **kwargs)


def shard_generator(seed: int, step: int, shard: int) -> torch.Generator:
    """The CPU generator of one shard of one step (CPU: the same draws on any device)."""
    state = np.random.SeedSequence([seed, step, shard]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def clip_length(cfg: FARTrainConfig, step: int, longest: int) -> int:
    """The clip length of ``step``: uniform in [min_clip_frames, max_clip_frames], capped by the data."""
    high = min(cfg.max_clip_frames, longest)
    low = min(cfg.min_clip_frames, high)
    return int(np.random.default_rng([cfg.seed, step, 1]).integers(low, high + 1))


def distills(cfg: FARTrainConfig, step: int) -> bool:
    """Whether ``step`` is a distillation step (drawn with ``distill_prob``, the same on every rank)."""
    return cfg.distill_prob > 0 and np.random.default_rng([cfg.seed, step, 2]).random() < cfg.distill_prob


def clip_tokens(cfg: FARTrainConfig, frames: int) -> int:
    """Tokens one clip of ``frames`` frames puts through the transformer (long frames compressed)."""
    short = min(frames, cfg.far.short_window)
    return short * cfg.far.short_tokens + (frames - short) * cfg.far.long_tokens


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: biases, norm gains and embedding tables are not shrunk toward 0."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.ndim >= 2 and not isinstance(_owner(model, name), nn.Embedding)
        (decay if is_matrix else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    return model.get_submodule(param_name.rpartition(".")[0])


class FARTrainer:
    """Model, optimizer and EMA of a run, stepped on a :class:`ClipDataset` of latents."""

    def __init__(self, cfg: FARTrainConfig, dataset: ClipDataset, dist: DistInfo) -> None:
        if cfg.batch_size % (dist.world_size * cfg.micro_batches):
            raise ValueError(
                f"batch_size {cfg.batch_size} must split into {dist.world_size} ranks "
                f"x {cfg.micro_batches} micro-batches"
            )
        self.cfg, self.dataset, self.dist = cfg, dataset, dist
        self.longest = int(dataset.store.lengths.max())
        # Seeded: a run is reproducible, and every rank starts from the same weights (as DDP requires).
        torch.manual_seed(cfg.seed)
        self.model = FARModel(cfg.far).to(dist.device)
        self.loss_module: nn.Module = _TrainingLoss(self.model)
        if dist.distributed:
            # Some parameters get no gradient in a step: the last block's long-term query and output
            # weights feed nothing, and clips within the short window leave the whole long-term
            # stream unused. Without find_unused_parameters their gradient bucket would never be
            # reduced: ranks would silently keep their own gradients.
            self.loss_module = DistributedDataParallel(
                self.loss_module,
                device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                forward_sync_buffers=False,  # the model's buffers are constants
                find_unused_parameters=True,
            )
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
            fused=dist.device.type == "cuda",
        )  # fmt: skip
        self.ema = EMA(self.model, cfg.ema_decay)
        # The distillation teacher: the weights the run starts from (start_from).
        self.teacher: FARModel | None = None
        self.adversarial = None
        if cfg.adversarial_weight > 0:
            self.adversarial = AdversarialTerm(
                cfg.far.latent_channels, cfg.critic_width, cfg.critic_lr, dist.device,
                action_nvec=cfg.far.action_nvec if cfg.critic_actions else None,
            )  # fmt: skip
        # Revisit windows are found once, from the data's own frames (latents in a latent cache).
        self.revisits = None
        if cfg.revisit_prob > 0:
            self.revisits = RevisitWindows(dataset.store, cfg.far.short_window, cfg.max_clip_frames, cfg.revisit_margin)
        self.step = 0

    def start_from(self, far_state: dict[str, torch.Tensor]) -> None:
        """Start from trained weights (fine-tuning): the model and its average both take them."""
        try:
            self.model.load_state_dict(far_state)
        except RuntimeError as exc:
            raise ValueError(f"the initial weights do not fit this run's FAR config: {exc}") from exc
        self.ema = EMA(self.model, self.cfg.ema_decay)
        if self.cfg.distill_prob > 0:
            self.teacher = frozen_teacher(self.model)

    @property
    def shards(self) -> int:
        """The global batch is cut into this many equal shards."""
        return self.dist.world_size * self.cfg.micro_batches

    def accumulate_gradients(self) -> dict[str, float]:
        """Forward and backward this rank's shards of the current step; gradients are then the
        mean over the global batch (averaged over ranks by DDP). Returns this rank's losses."""
        cfg, dist = self.cfg, self.dist
        frames = clip_length(cfg, self.step, self.longest)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        distill = distills(cfg, self.step)
        if distill and self.teacher is None:
            raise ValueError("distillation needs a teacher: start the run from trained weights (--init)")
        for i in range(cfg.micro_batches):
            shard = dist.rank * cfg.micro_batches + i
            batch = self.dataset.sample_batch(
                cfg.batch_size, self.step, shard, self.shards, clip_len=frames,
                revisits=self.revisits, revisit_prob=cfg.revisit_prob,
            )  # fmt: skip
            batch = batch.to_torch(dist.device)
            last = i == cfg.micro_batches - 1
            sync = contextlib.nullcontext() if last or not dist.distributed else self.loss_module.no_sync()
            generator = shard_generator(cfg.seed, self.step, shard)
            if distill:
                out = self._distillation_backward(batch, generator, sync)
            else:
                out = self._flow_backward(batch, frames, generator, sync)
            for key, value in out.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / cfg.micro_batches
        totals["clip_frames"] = float(frames)
        return totals

    def _distillation_backward(
        self, batch: ClipBatch, generator: torch.Generator, sync: contextlib.AbstractContextManager
    ) -> dict[str, torch.Tensor]:
        """Backward one micro-batch's distillation loss; returns its losses."""
        cfg = self.cfg
        with sync:
            out = self.loss_module(
                "distill", self.teacher, batch.frames, batch.actions, cfg.distill_steps, cfg.distill_substeps,
                generator=generator, guidance=cfg.distill_guidance, guided_steps=cfg.distill_guided_steps,
                from_step=cfg.distill_from_step,
            )  # fmt: skip
            (out["loss"] / cfg.micro_batches).backward()
        return out

    def _flow_backward(
        self, batch: ClipBatch, frames: int, generator: torch.Generator, sync: contextlib.AbstractContextManager
    ) -> dict[str, torch.Tensor]:
        """Backward one micro-batch's flow loss (with its drift controls and adversarial term),
        then take the critic's step; returns the losses."""
        cfg = self.cfg
        shown = None
        if cfg.self_context_prob > 0:
            shown = own_estimates(
                self.model, batch.frames, batch.actions, cfg.self_context_prob, cfg.self_context_max_time, generator
            )
        rows = None
        if cfg.rollout_prob > 0 and frames >= 3 and self.step >= cfg.rollout_start_step:
            shown, rows = self._with_rollouts(batch.frames, batch.actions, shown, frames, generator)
        adversarial = self.adversarial is not None
        with sync:
            out = self.loss_module(
                "flow", batch.frames, batch.actions, batch.rewards, batch.terminated,
                generator=generator, context_latents=shown, last_frame_rows=rows, keep_estimates=adversarial,
            )  # fmt: skip
            loss = out["loss"]
            if adversarial:
                judged = out.pop("denoised") & (out.pop("times") <= cfg.adversarial_max_time)
                pairs = next_frame_pairs(batch.frames, out.pop("estimates"), judged, out.pop("actions"))
                loss = loss + self._adversarial_loss(pairs, out)
            (loss / cfg.micro_batches).backward()
        if adversarial:
            # After the model's backward: the model is scored by the critic it was trained against.
            out.update({k: torch.tensor(v) for k, v in self.adversarial.update(pairs).items()})
        return out

    def _adversarial_loss(self, pairs: NextFramePairs, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's adversarial loss, weighted (zero before ``adversarial_start_step``); the
        unweighted loss is added to ``out`` for the log."""
        assert self.adversarial is not None
        model_loss = self.adversarial.model_loss(pairs)
        out["adversarial"] = model_loss.detach()
        weight = self.cfg.adversarial_weight if self.step >= self.cfg.adversarial_start_step else 0.0
        return weight * model_loss

    def _with_rollouts(
        self, latents: torch.Tensor, actions: torch.Tensor, shown: torch.Tensor | None, frames: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context latents in which the rows drawn with ``rollout_prob`` show the model's own free
        play of 1..rollout_frames frames before their last, and those rows (B,) bool."""
        cfg = self.cfg
        rows = torch.rand(latents.shape[0], generator=generator) < cfg.rollout_prob
        length = int(torch.randint(1, min(cfg.rollout_frames, frames - 2) + 1, (1,), generator=generator))
        shown = latents.float().clone() if shown is None else shown.clone()
        if rows.any():
            idx = rows.nonzero()[:, 0].to(latents.device)
            settings = SamplingSettings(steps=cfg.rollout_steps, start_time=self.model.cfg.warm_start_time)
            shown[idx] = own_rollouts(self.model, latents[idx], actions[idx], length, settings, generator)
        return shown, rows

    def apply_gradients(self) -> dict[str, float]:
        """Clip, set this step's learning rate, take the optimizer step, update the EMA."""
        cfg = self.cfg
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        return {"lr": lr, "grad_norm": float(grad_norm)}

    def train_step(self) -> dict[str, float]:
        """One optimizer step; metrics averaged over ranks, with tokens/s of the whole step."""
        start = time.perf_counter()
        metrics = self.accumulate_gradients()
        metrics.update(self.apply_gradients())
        tokens = self.cfg.batch_size * clip_tokens(self.cfg, int(metrics["clip_frames"]))
        metrics = mean_over_ranks(metrics, self.dist)
        metrics["tokens"] = float(tokens)
        metrics["tokens_per_s"] = tokens / (time.perf_counter() - start)
        return metrics

    # -- resume ------------------------------------------------------------------------------
    def training_state(self) -> TrainingState:
        return TrainingState(
            step=self.step,
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=_to_cpu(self.optimizer.state_dict()),
            rng=capture_rng_state(),
            config=self.cfg.to_dict(),
            ema=_to_cpu(self.ema.training_state()),
            extra={"world_size": self.dist.world_size}
            | ({} if self.adversarial is None else {"adversarial": _to_cpu(self.adversarial.state_dict())})
            | ({} if self.teacher is None else {"teacher": _to_cpu(self.teacher.state_dict())}),
        )

    def load_training_state(self, state: TrainingState) -> None:
        """Continue from ``state`` (this trainer must have been built with the same config)."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.ema.load_training_state(state.ema)
        if self.adversarial is not None:
            self.adversarial.load_state_dict(state.extra["adversarial"])
        if "teacher" in state.extra:
            self.teacher = frozen_teacher(self.model)
            self.teacher.load_state_dict(state.extra["teacher"])
        restore_rng_state(state.rng)
        self.step = int(state.step)


def _to_cpu(obj: Any) -> Any:
    """Tensors of a nested dict/list moved to CPU (checkpoints hold no device tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
