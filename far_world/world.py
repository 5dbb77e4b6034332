"""WorldModel: a released checkpoint as a batched, KV-cached next-frame predictor over pixels."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from far_world.action_spaces import space_from_spec
from far_world.checkpoint import WorldCheckpoint, load_world_checkpoint
from far_world.model.autoencoder import FrameAutoencoder
from far_world.model.cache import KVCache
from far_world.model.far import FARModel
from far_world.model.heads import Carried
from far_world.model.inference import CachedSampler
from far_world.model.sampler import SamplingSettings
from far_world.openmp import torch_threads
from far_world.released import CHECKPOINT_ENV_VAR, default_checkpoint_path, resolve_checkpoint


@dataclass
class WorldStep:
    frames: np.ndarray  # (B, H, W, 3) uint8
    rewards: np.ndarray  # (B,) float32, predicted by the reward head
    terminated: np.ndarray  # (B,) bool, termination head's probability > 0.5
    latents: np.ndarray | None = None  # (B, C, h, w) float32: the model's latents that ``frames`` decode
    carried: np.ndarray | None = None  # (B, K) float32: the carried game variables after the step, if any


# How a CPU's cores step a batch of worlds (benchmarks/play_speed.py compares this with torch's
# own threading): a pass over a few dozen tokens is a chain of tiny operations, and waking a
# second thread for each costs more than it saves, so every pass runs on one thread. A batch of
# at least 2 * MIN_ROWS_PER_SHARD worlds is split into shards of rows, one per core, stepped
# side by side: each shard's operations are large enough to release the GIL for most of a step.
MIN_ROWS_PER_SHARD = 16


class WorldModel:
    """B learned worlds stepped together: pixels in, pixels out, context kept in a KV cache.

    The one stepping core: the Gymnasium envs, the SB3 adapter, play.py, evaluation rollouts and
    the benchmarks all advance frames through :meth:`step`. Context actions follow the episode
    convention (``actions[t]`` leads from ``frames[t]`` to ``frames[t+1]``, so T frames come with
    T-1 actions); the first context frame gets the null action. ``settings`` (a
    :class:`SamplingSettings` value, the checkpoint's defaults at load) may be replaced between
    steps. Without ``long_context`` the model sees only its short window, as if started afresh
    from it before each frame (evaluation's long-term context off). ``threads`` None steps on a
    CPU as :data:`MIN_ROWS_PER_SHARD` explains; an int n steps all rows together with torch on n
    intra-op threads. A change takes effect at the next :meth:`reset`. Noise is drawn for all rows
    at once, so frames do not depend on how the rows are split (with ``context_noise`` > 0 they do).
    A world whose checkpoint carries game variables (:attr:`carried_names`, e.g. doom's health)
    keeps their values per row: given at reset (at the context's frames, which also time their
    falls, or at its last; default the checkpoint's start values), predicted by its heads at every
    step.
    """

    def __init__(
        self,
        ckpt: WorldCheckpoint,
        device: str | torch.device = "cpu",
        batch_size: int = 1,
        long_context: bool = True,
        threads: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.checkpoint = ckpt
        self.autoencoder = FrameAutoencoder(ckpt.ae_config).to(self.device).eval()
        self.far = FARModel(ckpt.far_config).to(self.device).eval()
        try:
            self.autoencoder.load_state_dict(ckpt.ae_state)
            self.far.load_state_dict(ckpt.far_state)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint weights do not match its config: {exc}") from exc
        self.batch_size = int(batch_size)
        self.world_spec = ckpt.world
        self.world_kwargs = dict(ckpt.world_kwargs)  # the real world's settings, for make_real_world
        self.action_names = list(ckpt.action_names)
        self.action_space_spec = dict(ckpt.action_space)
        self.action_space = space_from_spec(self.action_space_spec)
        self.action_shape: tuple[int, ...] = tuple(self.action_space.shape)
        self.resolution: tuple[int, int] = tuple(int(s) for s in ckpt.prompt_frames.shape[2:4])
        self.prompt_frames = ckpt.prompt_frames.numpy()
        # Bundled prompts are stored in the model convention (action into each frame): drop the first.
        self.prompt_actions = ckpt.prompt_actions[:, 1:].numpy()
        self.sampler = CachedSampler(self.far)
        self.settings = SamplingSettings.from_dict(
            ckpt.summary.get("inference", {}), flex_rope_slope=ckpt.far_config.flex_rope_slope,
            start_time=ckpt.far_config.warm_start_time,
        )
        self.long_context = bool(long_context)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.threads = threads
        self._null = torch.tensor(ckpt.far_config.action_nvec, dtype=torch.long, device=self.device)
        self._nvec = np.asarray(ckpt.far_config.action_nvec, dtype=np.int64)  # classes per component
        self._caches: list[KVCache] | None = None  # one per shard of rows, made by reset()
        self._shards: list[slice] = []
        self._shard_generators: list[torch.Generator] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._generator = torch.Generator(self.device)
        self.frame_index = np.zeros(self.batch_size, np.int64)
        self.carried_names: list[str] = list(ckpt.far_config.carried)
        self._carried_start = torch.tensor(ckpt.far_config.carried_start, dtype=torch.float32, device=self.device)
        self._carried = self._carried_values(None, self.batch_size)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        device: str = "cpu",
        batch_size: int = 1,
        long_context: bool = True,
        threads: int | None = None,
    ) -> "WorldModel":
        """Load a checkpoint file (``None``: the released default world)."""
        if path is None:
            path = default_checkpoint_path()
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"the default checkpoint {path} is missing: pass a checkpoint path, set "
                    f"${CHECKPOINT_ENV_VAR}, or train one (docs/training.md)"
                )
        # A released world's name (`maze`, `checkpoints/maze.pt`) finds the bundled file from any folder.
        ckpt = load_world_checkpoint(resolve_checkpoint(path))
        return cls(ckpt, device=device, batch_size=batch_size, long_context=long_context, threads=threads)

    def with_batch(
        self, batch_size: int, long_context: bool | None = None, settings: SamplingSettings | None = None
    ) -> "WorldModel":
        """Another batch of worlds on the same weights (shared, not copied), with its own context,
        random generator and settings (default: this one's); ``reset`` it before stepping."""
        other = copy.copy(self)
        other.batch_size = int(batch_size)
        other.long_context = self.long_context if long_context is None else bool(long_context)
        other.settings = self.settings if settings is None else settings
        other._caches, other._shards, other._shard_generators, other._pool, other._pool_size = None, [], [], None, 0
        other._generator = torch.Generator(self.device)
        other.frame_index = np.zeros(other.batch_size, np.int64)
        other._carried = other._carried_values(None, other.batch_size)
        return other

    def configure(
        self,
        sampling_steps: int | None = None,
        guidance: float | None = None,
        guidance_scope: str | None = None,
        guided_steps: int | None = None,
        flex_rope_slope: float | None = None,
        context_noise: float | None = None,
        time_shift: float | None = None,
        start_time: float | None = None,
    ) -> SamplingSettings:
        """Change sampling settings (``None`` keeps a value); returns the new settings."""
        self.settings = self.settings.replace(
            steps=sampling_steps, guidance=guidance, guidance_scope=guidance_scope, guided_steps=guided_steps,
            flex_rope_slope=flex_rope_slope, context_noise=context_noise, time_shift=time_shift, start_time=start_time,
        )
        return self.settings

    @property
    def sampling_steps(self) -> int:
        """Euler steps a frame (``settings.steps``)."""
        return self.settings.steps

    @property
    def guidance(self) -> float:
        """Action guidance weight (``settings.guidance``)."""
        return self.settings.guidance

    def _plan_shards(self) -> list[slice]:
        """Rows of each shard: one shard, or one per core for a large enough batch on a CPU."""
        shards = 1
        if self.threads is None and self.device.type == "cpu":
            shards = max(1, min(torch.get_num_threads(), self.batch_size // MIN_ROWS_PER_SHARD))
        bounds = np.linspace(0, self.batch_size, shards + 1).round().astype(int)
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def context_length(self) -> np.ndarray:
        """Frames currently held in each row's context (long-term + short-term)."""
        if self._caches is None:
            return np.zeros(self.batch_size, np.int64)
        return torch.cat([c.context_length for c in self._caches]).cpu().numpy().astype(np.int64)

    @property
    def carried(self) -> np.ndarray:
        """(B,K) the carried game variables' current values, named by :attr:`carried_names` (K may be 0)."""
        return self._carried.values.cpu().numpy().copy()

    def _carried_values(self, carried: np.ndarray | Sequence | None, rows: int) -> Carried:
        """The carried state of restarted rows: from the values (rows,K) at the last context frame
        (fall clocks at 0) or (rows,T,K) at every context frame, or the start values."""
        k = len(self.carried_names)
        if carried is None:
            values = self._carried_start.expand(rows, -1).clone()
            return Carried(values, torch.zeros_like(values))
        history = np.asarray(carried, dtype=np.float32)
        if history.ndim == 2:
            history = history[:, None]
        if history.ndim != 3 or history.shape[0] != rows or history.shape[2] != k:
            raise ValueError(f"carried values must have shape ({rows}, {k}) or ({rows}, T, {k}) for {self.carried_names}, got {np.shape(carried)}")
        if not np.isfinite(history).all():
            raise ValueError("carried values must be finite")
        return Carried.from_history(torch.from_numpy(history).to(self.device), self.far.heads.carried_scale)

    def _encode_context(self, frames: np.ndarray, actions: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (R,T,H,W,3) uint8, actions (R,T-1[,K]) -> latents (R,T,C,h,w), actions into frames (R,T,K)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[2:] != (*self.resolution, 3):
            raise ValueError(f"context frames must be uint8 (B,T,{self.resolution[0]},{self.resolution[1]},3), got {frames.dtype} {frames.shape}")
        rows, steps = frames.shape[:2]
        k = len(self._null)
        into = self._null.expand(rows, steps, k).clone()
        if actions is not None:
            actions = torch.tensor(np.asarray(actions), dtype=torch.long, device=self.device).reshape(rows, steps - 1, -1)
            if actions.shape[-1] != k:
                raise ValueError(f"context actions must have {k} component(s), got shape {tuple(actions.shape)}")
            into[:, 1:] = actions
        # Episode frames are often read-only memory maps, which torch cannot wrap: copy those.
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames)
        pixels = torch.from_numpy(frames).reshape(rows * steps, *frames.shape[2:])
        with torch.no_grad():
            latents = self.autoencoder.encode(pixels.to(self.device))
        return latents.reshape(rows, steps, *latents.shape[1:]), into

    def reset(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        actions: np.ndarray | Sequence[np.ndarray] | None = None,
        seed: int | None = None,
        carried: np.ndarray | None = None,
    ) -> None:
        """Start all B worlds from context frames (B,T,H,W,3) uint8 and actions (B,T-1[,K]), or
        from B contexts of their own lengths: sequences of (T_i,H,W,3) frames and (T_i-1[,K]) actions.
        ``carried``: the carried variables (B,K) at each context's last frame, or (B,T,K) at each of
        its frames, which also times their falls (default: start values)."""
        if len(frames) != self.batch_size:
            raise ValueError(f"reset needs context for all {self.batch_size} worlds, got {len(frames)}")
        self._carried = self._carried_values(carried, self.batch_size)
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._shards = self._plan_shards()
        self._caches = [self.sampler.new_cache(s.stop - s.start, self.device, self.long_context) for s in self._shards]
        if len(self._shards) > 1:  # context noise is drawn inside each shard's thread
            first = self._generator.initial_seed() + 1  # not a draw: the batch's noise stays the same
            self._shard_generators = [torch.Generator(self.device).manual_seed(first + i) for i in range(len(self._shards))]
        self.frame_index[:] = 0
        every_row = np.ones(self.batch_size, dtype=bool)
        if isinstance(frames, np.ndarray) and frames.ndim == 5:
            self._restart(every_row, *self._encode_context(frames, actions))
            return
        # Contexts of different lengths: each encoded alone, rows of equal length restarted together.
        encoded = [
            self._encode_context(np.asarray(f)[None], None if actions is None else np.asarray(actions[i])[None])
            for i, f in enumerate(frames)
        ]
        lengths = np.array([len(f) for f in frames])
        for length in np.unique(lengths):
            rows = lengths == length
            latents = torch.cat([e[0] for e, r in zip(encoded, rows) if r])
            into = torch.cat([e[1] for e, r in zip(encoded, rows) if r])
            self._restart(rows, latents, into)

    def reset_rows(
        self, rows: np.ndarray, frames: np.ndarray, actions: np.ndarray | None = None, carried: np.ndarray | None = None
    ) -> None:
        """Restart the worlds flagged in ``rows`` (B,) bool from R new contexts (R,T,H,W,3), with
        carried values (R,K) at their last frames or (R,T,K) at all (default: start values)."""
        if self._caches is None:
            raise RuntimeError("call reset() before reset_rows()")
        rows = np.asarray(rows, dtype=bool)
        values = self._carried_values(carried, int(rows.sum()))
        self._restart(rows, *self._encode_context(frames, actions))
        flagged = torch.from_numpy(rows).to(self.device)
        for mine, new in zip(self._carried, values):
            mine[flagged] = new
        self.frame_index[rows] = 0

    def _restart(self, rows: np.ndarray, latents: torch.Tensor, into: torch.Tensor) -> None:
        """Restart the flagged rows (B,) bool from latents (R,T,...) and actions (R,T,K), R flagged, in order."""
        first = 0
        for cache, shard, generator in zip(self._caches, self._shards, self._generators()):
            flagged = rows[shard]
            count = int(flagged.sum())
            if count:
                self.sampler.reset_rows(
                    cache, torch.from_numpy(flagged).to(self.device), latents[first : first + count],
                    into[first : first + count], self.settings, generator,
                )
            first += count

    def _generators(self) -> list[torch.Generator]:
        return self._shard_generators if len(self._shards) > 1 else [self._generator]

    def step(self, actions: np.ndarray, allow_null: bool = False) -> WorldStep:
        """Advance every world by one frame; actions (B,) for Discrete, (B,K) for MultiDiscrete.

        ``allow_null``: also accept the null action (index = class count, per component), the
        model unconditioned on the action, which evaluation uses.
        """
        if self._caches is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        expected = (self.batch_size, *self.action_shape)
        if actions.shape != expected or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers of shape {expected}, got {actions.dtype} {actions.shape}")
        flat = actions.reshape(self.batch_size, -1)
        if (flat < 0).any() or (flat > self._nvec - (0 if allow_null else 1)).any():
            raise ValueError(f"actions {actions.tolist()} are outside the action space {self.action_space}")
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        cfg = self.far.cfg
        noise = self.far._draw(
            torch.randn, (self.batch_size, cfg.latent_channels, cfg.latent_size, cfg.latent_size), self.device, self._generator
        )
        generators = self._generators()

        carries = bool(self.carried_names)

        def step_shard(i: int) -> tuple[torch.Tensor, ...]:
            rows = self._shards[i]
            with torch.no_grad():  # grad mode is per thread
                before = Carried(*(part[rows] for part in self._carried)) if carries else None
                out = self.sampler.generate(self._caches[i], actions[rows], self.settings, noise[rows], generators[i], before)
                after = tuple(out.carried) if carries else ()
                return self.autoencoder.decode(out.latents), out.reward, out.terminated_prob, out.latents, *after

        shards = range(len(self._shards))
        threads = self.threads if self.threads is not None else (1 if self.device.type == "cpu" else None)
        with torch_threads(threads):
            results = [step_shard(0)] if len(shards) == 1 else list(self._shard_pool().map(step_shard, shards))
        frames, rewards, terminated_prob, latents, *carried = (torch.cat(parts) for parts in zip(*results))
        if carries:
            self._carried = Carried(*(part.float() for part in carried))
        self.frame_index += 1
        return WorldStep(
            frames=frames.cpu().numpy(),
            rewards=rewards.float().cpu().numpy(),
            terminated=(terminated_prob > 0.5).cpu().numpy(),
            latents=latents.float().cpu().numpy(),
            carried=self.carried if carries else None,
        )

    def _shard_pool(self) -> ThreadPoolExecutor:
        """Threads that step the shards, each with torch on one intra-op thread (an OpenMP
        setting of the thread that runs the operations)."""
        if self._pool is None or self._pool_size != len(self._shards):
            self._pool = ThreadPoolExecutor(len(self._shards), "far-world-shard", initializer=torch.set_num_threads, initargs=(1,))
            self._pool_size = len(self._shards)
        return self._pool
