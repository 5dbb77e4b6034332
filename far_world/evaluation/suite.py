"""The offline evaluation as a list of jobs: sized up front, timed, run under one progress bar.

``Evaluation.plan()`` loads the windows and revisits every requested protocol needs (cheap)
and counts the frames each will generate; with a measured generation rate this gives the time
estimates printed before anything long starts. ``run`` executes the jobs and returns one
JSON-ready dict, the content of ``metrics.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from far_world.data.episodes import episode_paths, iter_episodes
from far_world.evaluation.action_following import evaluate_action_following
from far_world.evaluation.extrapolation import MAX_FACTOR, evaluate_extrapolation, training_clip_length, tune_flex_rope_slope
from far_world.evaluation.fidelity import evaluate_fidelity
from far_world.evaluation.free_play import evaluate_free_play
from far_world.evaluation.fvd import video_features
from far_world.evaluation.i3d import MIN_FRAMES
from far_world.evaluation.heads import evaluate_heads
from far_world.evaluation.inverse_dynamics import InverseDynamics, TransitionSampler, accuracy, train_idm
from far_world.evaluation.memory import collect_revisits, evaluate_memory, rollout_lengths
from far_world.evaluation.one_step import evaluate_one_step
from far_world.evaluation.perceptual import lpips_distance
from far_world.evaluation.rollouts import EvalWindows, batch_steps, load_windows, rollout, rollout_contexts
from far_world.evaluation.teco_protocol import TecoProtocol, count_videos, evaluate_teco
from far_world.evaluation.video_metrics import MetricNets, fvd_skip_reason
from far_world.world import WorldModel

PROTOCOLS = ("fidelity", "actions", "memory", "extrapolation", "teco", "heads", "freeplay", "onestep")


@dataclass
class EvalConfig:
    """Sizes of every protocol. The defaults fit a ~6-layer, 384-wide model in about 30 minutes
    on a 2-core CPU (estimates are printed before a run); ``QUICK`` is for tests."""

    protocols: tuple[str, ...] = PROTOCOLS
    seed: int = 0
    # Rollouts generated together. A one-frame step has small matmuls (16 tokens a row on the
    # cpu preset); more rows make them larger, which a CPU runs closer to its peak.
    batch_size: int = 16
    # Fidelity and action following share their windows and the true-action rollout.
    windows: int = 32
    context: int = 16
    horizon: int = 32
    # FVD clips: the first this-many predicted frames of each fidelity window (FVD16). I3D costs
    # about 0.15 s a frame on 2 CPU cores: 4 sets of 32 clips of 16 frames take about 5 minutes.
    fvd_frames: int = 16
    idm_steps: int = 400
    idm_batch: int = 64
    idm_test_pairs: int = 1024
    # Memory: revisits per variant; context frames of the open loop (None: the model's short
    # window); how far back an earlier visit may lie (None: as far as the cache reaches).
    memory_revisits: int = 16
    memory_context: int | None = None
    memory_span: int | None = None
    memory_lead: int = 4
    pos_tol: float = 0.5
    angle_tol_deg: float = 30.0
    # Extrapolation: rollouts to ``extrapolation_factor`` x the training clip length (or the end
    # of the episodes), and the FlexRoPE sweep on validation windows.
    extrapolation_windows: int = 6
    extrapolation_context: int = 8
    extrapolation_factor: int = MAX_FACTOR
    train_clip: int | None = None
    # Bias -slope x frame distance: 0.1 already takes 7 logits off a frame 70 back.
    slope_candidates: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1)
    sweep_windows: int = 4
    sweep_factor: int = 4
    # TECO protocol: videos, and a length factor (1 = the paper's 144/156 and 36/264).
    teco_videos: int = 8
    teco_scale: float = 1.0
    # Reward and termination heads: held-out episodes read with teacher forcing.
    heads_episodes: int = 64
    # Free play: real context frames, then this many steps with the real game's actions.
    freeplay_windows: int = 48
    freeplay_context: int = 16
    freeplay_horizon: int = 64
    # One step from real context, grouped by the action taken: enough windows that a game's
    # common actions get dozens each (Minecraft: 125 walking forward, 56 turning left).
    onestep_windows: int = 256
    onestep_context: int = 16


QUICK = EvalConfig(
    batch_size=4, windows=4, context=4, horizon=6, idm_steps=20, idm_batch=16, idm_test_pairs=64,
    memory_revisits=2, memory_span=16, memory_lead=2, extrapolation_windows=2, extrapolation_context=2,
    extrapolation_factor=2, slope_candidates=(0.0, 0.1), sweep_windows=2, sweep_factor=2,
    teco_videos=2, teco_scale=0.04, heads_episodes=4,
    freeplay_windows=4, freeplay_context=4, freeplay_horizon=8, onestep_windows=6, onestep_context=4,
)  # fmt: skip


@dataclass
class DataSplits:
    """Where each kind of episode comes from, for ``--data DIR``: DIR/test (or DIR itself) is
    scored, DIR/train trains the inverse-dynamics model, DIR/val (else DIR/train) tunes FlexRoPE."""

    test: Path
    train: Path | None
    val: Path | None

    @classmethod
    def of(cls, data: str | Path) -> "DataSplits":
        data = Path(data)
        test = data / "test" if (data / "test").is_dir() else data
        train = data / "train" if (data / "train").is_dir() else None
        val = data / "val" if (data / "val").is_dir() else train
        return cls(test, train, val)


@dataclass
class Job:
    name: str
    frames: int  # frames it generates (the progress bar's unit)
    seconds: float  # estimated
    run: Callable[[tqdm], dict[str, Any]]


@dataclass
class Rates:
    """Measured seconds of one batched generation step in each context mode, of an IDM step, of
    I3D on one frame and of the perceptual distances on one pair of frames (0 when not measured)."""

    long_step_s: float
    short_step_s: float
    idm_step_s: float
    i3d_frame_s: float = 0.0
    perceptual_pair_s: float = 0.0

    def rollouts(self, lengths: np.ndarray | list[int], batch_size: int, long_context: bool = True) -> float:
        """Estimated seconds to generate rows of these lengths."""
        return batch_steps(lengths, batch_size) * (self.long_step_s if long_context else self.short_step_s)


class Evaluation:
    """Every requested protocol on one checkpoint and one dataset."""

    def __init__(
        self,
        world: WorldModel,
        data: DataSplits,
        cfg: EvalConfig,
        nets: MetricNets | None = None,
    ) -> None:
        self.world, self.data, self.cfg = world, data, cfg
        # The perceptual metrics' networks (FVD, ST-LPIPS, LPIPS); none: PSNR and SSIM only.
        self.nets = nets or MetricNets()
        self.far_cfg = world.far.cfg
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self._windows: EvalWindows | None = None
        self._true_rollout: np.ndarray | None = None
        # The free-play windows' real, reconstructed and generated futures, (N, Hz, H, W, 3) each, for the strip.
        self.free_play_frames: dict[str, np.ndarray] | None = None
        # The one-step protocol's frames by predictor, each window's action, and the commonest action.
        self.one_step_frames: tuple[dict[str, np.ndarray], list[str], str] | None = None

    # ----- sizing -----

    def _per_episode(self, windows: int) -> int:
        """Windows to cut from each test episode so that ``windows`` spread over all of them."""
        return -(-windows // max(1, len(episode_paths(self.data.test))))

    def windows(self) -> EvalWindows:
        """Fidelity's and action following's windows, spread over the test episodes (loaded once)."""
        if self._windows is None:
            c = self.cfg
            per_episode = self._per_episode(c.windows)
            self._windows = load_windows(self.data.test, c.context, c.horizon, c.windows, per_episode, seed=c.seed)
        return self._windows

    def measure_rates(self) -> Rates:
        """Time a few batched steps in each context mode on real contexts, and IDM steps."""
        try:
            w = self.windows()
        except ValueError:  # episodes too short for fidelity's windows: any short window will do
            w = load_windows(self.data.test, 2, 1, self.cfg.batch_size, per_episode=4, seed=self.cfg.seed)
        b = min(self.cfg.batch_size, len(w))
        contexts, actions = w.contexts[:b], w.future_actions[:b]
        per_step = []
        for long_context in (True, False):
            rollout_contexts(self.world, contexts, actions[:, :1], None, self.cfg.seed, long_context, b)  # warm-up
            start = time.perf_counter()
            steps = min(3, actions.shape[1])
            rollout_contexts(self.world, contexts, actions[:, :steps], None, self.cfg.seed, long_context, b)
            per_step.append((time.perf_counter() - start) / steps)
        idm_step = 0.0
        if self.data.train is not None and "actions" in self.cfg.protocols:
            # Two runs differing by two steps: opening the episodes is paid once, not per step.
            seconds = []
            for steps in (1, 3):
                start = time.perf_counter()
                train_idm(self.data.train, self.far_cfg.action_nvec, steps=steps, batch_size=self.cfg.idm_batch)
                seconds.append(time.perf_counter() - start)
            idm_step = max(0.0, seconds[1] - seconds[0]) / 2
        return Rates(per_step[0], per_step[1], idm_step, *self._measure_metric_rates(w))

    def _measure_metric_rates(self, w: EvalWindows) -> tuple[float, float]:
        """Seconds of I3D a frame (one shortest clip) and of the perceptual distances a frame pair."""
        if not {"fidelity", "teco", "freeplay"} & set(self.cfg.protocols):
            return 0.0, 0.0
        frames = np.ascontiguousarray(np.resize(w.context_frames[:1], (1, MIN_FRAMES, *w.context_frames.shape[2:])))
        i3d_frame = 0.0
        if self.nets.i3d is not None:
            start = time.perf_counter()
            video_features(self.nets.i3d, frames)
            i3d_frame = (time.perf_counter() - start) / MIN_FRAMES
        start = time.perf_counter()
        for net in (self.nets.stlpips, self.nets.lpips):
            if net is not None:
                lpips_distance(net, frames[0, :4], frames[0, 4:8])
        return i3d_frame, (time.perf_counter() - start) / 4

    def plan(self, rates: Rates) -> list[Job]:
        """The jobs of the requested protocols, sized; protocols that cannot run are in ``skipped``."""
        builders = {
            "fidelity": self._fidelity_job,
            "actions": self._actions_job,
            "memory": self._memory_job,
            "extrapolation": self._extrapolation_job,
            "teco": self._teco_job,
            "heads": self._heads_job,
            "freeplay": self._free_play_job,
            "onestep": self._one_step_job,
        }
        jobs = []
        for name in self.cfg.protocols:
            job = builders[name](rates)
            if job is not None:
                jobs.append(job)
        return jobs

    def _fidelity_job(self, rates: Rates) -> Job | None:
        try:
            w = self.windows()
        except ValueError as exc:
            self.skipped["fidelity"] = str(exc)
            return None
        lengths = [w.future_frames.shape[1]] * len(w)
        # Three predictors scored per frame; FVD on four sets of clips (the truth and three predictors).
        seconds = rates.rollouts(lengths, self.cfg.batch_size) + 3 * sum(lengths) * rates.perceptual_pair_s
        clip = min(self.cfg.fvd_frames, w.future_frames.shape[1])
        if self.nets.i3d is not None and fvd_skip_reason(len(w), clip) is None:
            seconds += 4 * len(w) * clip * rates.i3d_frame_s

        def run(bar: tqdm) -> dict:
            report = evaluate_fidelity(
                self.world, w, self._true(bar), self.cfg.seed, self.nets, self.cfg.batch_size, bar, self.cfg.fvd_frames
            )
            return report.to_dict()

        return Job("fidelity", sum(lengths), seconds, run)

    def _true(self, bar: tqdm) -> np.ndarray:
        """The true-action rollout of the shared windows, made once for fidelity and actions."""
        if self._true_rollout is None:
            self._true_rollout = rollout(self.world, self.windows(), seed=self.cfg.seed, batch_size=self.cfg.batch_size, bar=bar)
        return self._true_rollout

    def _actions_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        try:
            w = self.windows()
        except ValueError as exc:
            self.skipped["actions"] = str(exc)
            return None
        if len(w) < 2:
            self.skipped["actions"] = "action following needs at least two windows"
            return None
        lengths = [w.future_frames.shape[1]] * len(w)
        rollouts = 2 if "fidelity" in c.protocols else 3  # the true-action rollout is fidelity's
        idm_steps = c.idm_steps if self.data.train is not None else 0
        seconds = rollouts * rates.rollouts(lengths, c.batch_size) + idm_steps * rates.idm_step_s

        def run(bar: tqdm) -> dict:
            idm, extra = self._idm()
            report = evaluate_action_following(self.world, w, self._true(bar), idm, c.seed, c.batch_size, bar)
            return {**report.to_dict(), **extra}

        return Job("actions", rollouts * sum(lengths), seconds, run)

    def _idm(self) -> tuple[InverseDynamics | None, dict]:
        c = self.cfg
        if self.data.train is None:
            return None, {"idm_skipped": f"no training episodes (no train/ folder beside {self.data.test})"}
        idm, training = train_idm(
            self.data.train, self.far_cfg.action_nvec, c.idm_steps, c.idm_batch,
            seed=c.seed, device=self.world.device, progress=True,
        )  # fmt: skip
        before, after, actions = TransitionSampler(self.data.test, seed=c.seed + 1).sample(c.idm_test_pairs)
        return idm, {"idm_training": training.to_dict(), "idm_real_test_accuracy": accuracy(idm, before, after, actions)}

    def _memory_job(self, rates: Rates) -> Job | None:
        c, f = self.cfg, self.far_cfg
        reach = f.max_long_frames + f.short_window - 1
        span = min(reach, c.memory_span or reach)
        # Clamped so that the earlier visit lies in the context (teacher-forced) and frames remain
        # to generate (open loop) whatever the sizes asked for.
        context = min(c.memory_context or f.short_window, span - 1)
        forced_lead = min(c.memory_lead, f.short_window - 1)
        # (context frames, lead): the teacher-forced context is every real frame through r - lead.
        variants = {"open_loop": (context, None), "teacher_forced": (0, forced_lead)}
        cases = {}
        for name, (ctx, lead) in variants.items():
            revisits = collect_revisits(
                self.data.test, f.short_window, span, c.memory_revisits, c.pos_tol, c.angle_tol_deg,
                min_frame=ctx if lead is None else lead,
            )  # fmt: skip
            if revisits:
                cases[name] = (revisits, ctx, lead)
        if not cases:
            self.skipped["memory"] = (
                f"no revisits in {self.data.test}: episodes need agent_pos/agent_dir extras and a return to a pose "
                f"{f.short_window + 1}..{span} frames later"
            )
            return None
        lengths = [rollout_lengths(r, span, ctx, lead) for r, ctx, lead in cases.values()]
        frames = 2 * int(sum(n.sum() for n in lengths))
        seconds = sum(rates.rollouts(n, c.batch_size) + rates.rollouts(n, c.batch_size, long_context=False) for n in lengths)

        def run(bar: tqdm) -> dict:
            out: dict[str, Any] = {
                "short_window": f.short_window,
                "cache_reach": reach,
                "span": span,
                "pos_tol": c.pos_tol,
                "angle_tol_deg": c.angle_tol_deg,
                "long_context_off": "the short window re-prefilled before each frame (FARConfig refuses max_long_frames=0)",
            }
            for name, (revisits, ctx, lead) in cases.items():
                scores = evaluate_memory(self.world, revisits, ctx, lead, span, c.seed, c.batch_size, bar)
                setup = {"context": ctx} if lead is None else {"lead": lead}
                out[name] = {**scores.to_dict(), **setup, "cases": [r.to_dict() for r in revisits]}
            return out

        return Job("memory", frames, seconds, run)

    def _extrapolation_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        train_len = c.train_clip or training_clip_length(self.world)
        if train_len is None:
            train_len = 2 * self.far_cfg.short_window
            self.notes.append(
                f"extrapolation: the checkpoint's summary has no training clip length (max_clip_frames); "
                f"assumed {train_len} (2 x short_window); pass --train-clip to set it"
            )
        longest = max((len(ep.frames) for _, ep in iter_episodes(self.data.test, mmap=True)), default=0)
        positions = min(c.extrapolation_factor * train_len, longest)
        horizon = positions - c.extrapolation_context
        if horizon < 1 or positions <= train_len:
            self.skipped["extrapolation"] = (
                f"rollouts would end at position {positions} (test episodes of up to {longest} frames, "
                f"factor {c.extrapolation_factor}), not beyond the training clips ({train_len} frames)"
            )
            return None
        test = load_windows(self.data.test, c.extrapolation_context, horizon, c.extrapolation_windows, seed=c.seed)
        sweep_positions = min(c.sweep_factor * train_len, positions)
        sweep_source = self.data.val or self.data.test
        try:
            sweep_horizon = sweep_positions - c.extrapolation_context
            val = load_windows(sweep_source, c.extrapolation_context, sweep_horizon, c.sweep_windows, seed=c.seed + 1)
        except ValueError:
            val = None
        frames = 2 * len(test) * horizon
        seconds = 2 * rates.rollouts([horizon] * len(test), c.batch_size)
        if val is not None:
            sweep = [val.future_frames.shape[1]] * len(val)
            frames += len(c.slope_candidates) * sum(sweep)
            seconds += len(c.slope_candidates) * rates.rollouts(sweep, c.batch_size)

        def run(bar: tqdm) -> dict:
            notes = []
            if positions < MAX_FACTOR * train_len:
                notes.append(f"rollouts end at position {positions}, short of {MAX_FACTOR} x {train_len} (episodes end, or --quick)")
            if val is None or sweep_positions <= train_len:
                best, sweep = 0.0, {}
                notes.append("no validation windows long enough to tune the FlexRoPE slope: slope 0 only")
            else:
                best, sweep = tune_flex_rope_slope(self.world, val, c.slope_candidates, train_len, c.seed, c.batch_size, bar)
            slopes = {"slope_0": 0.0} if best == 0.0 else {"slope_0": 0.0, "slope_tuned": best}
            report = evaluate_extrapolation(self.world, test, train_len, slopes, c.seed, c.batch_size, bar)
            report.sweep, report.notes = sweep, notes
            return {**report.to_dict(), "tuned_slope": best, "tuned_on": str(sweep_source)}

        return Job("extrapolation", frames, seconds, run)

    def _teco_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        protocol = TecoProtocol() if c.teco_scale == 1.0 else TecoProtocol().scaled(c.teco_scale)
        videos = count_videos(self.data.test, protocol, c.teco_videos)
        if videos == 0:
            self.skipped["teco"] = f"no test episode has the {protocol.frames} frames the TECO protocol needs"
            return None
        fvd_on = self.nets.i3d is not None and fvd_skip_reason(videos, protocol.fvd_context + protocol.fvd_generated) is None
        lengths = [protocol.predicted] * videos + ([protocol.fvd_generated] * videos if fvd_on else [])
        seconds = rates.rollouts(lengths, c.batch_size) + videos * protocol.predicted * rates.perceptual_pair_s
        if fvd_on:
            seconds += 2 * videos * (protocol.fvd_context + protocol.fvd_generated) * rates.i3d_frame_s

        def run(bar: tqdm) -> dict:
            report = evaluate_teco(self.world, self.data.test, protocol, c.teco_videos, self.nets, c.seed, c.batch_size, bar)
            return report.to_dict()

        return Job("teco", sum(lengths), seconds, run)

    def _heads_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        lengths = [e.num_steps for _, e in iter_episodes(self.data.test, mmap=True) if e.num_steps > 0][: c.heads_episodes]
        if not lengths:
            self.skipped["heads"] = f"no episodes in {self.data.test}"
            return None
        # Reading a real frame costs about one generation step less its Euler steps: the
        # estimate, a full step, is an upper bound.
        seconds = rates.rollouts(lengths, c.batch_size)

        def run(bar: tqdm) -> dict:
            return evaluate_heads(self.world, self.data.test, c.heads_episodes, c.batch_size, bar).to_dict()

        return Job("heads", sum(lengths), seconds, run)

    def _free_play_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        per_episode = self._per_episode(c.freeplay_windows)
        try:
            w = load_windows(self.data.test, c.freeplay_context, c.freeplay_horizon, c.freeplay_windows, per_episode, c.seed)
        except ValueError as exc:
            self.skipped["freeplay"] = str(exc)
            return None
        lengths = [c.freeplay_horizon] * len(w)
        # Three predictors: ST-LPIPS on every 4th step, FVD on the truth's and their last 16 steps.
        seconds = rates.rollouts(lengths, c.batch_size) + 3 * sum(lengths) // 4 * rates.perceptual_pair_s
        if self.nets.i3d is not None:
            seconds += 4 * len(w) * min(16, c.freeplay_horizon) * rates.i3d_frame_s

        def run(bar: tqdm) -> dict:
            report, frames = evaluate_free_play(
                self.world, w, seed=c.seed, batch_size=c.batch_size, bar=bar, nets=self.nets
            )
            self.free_play_frames = {
                "real": w.future_frames, "autoencoder": frames["autoencoder_ceiling"], "model": frames["model"],
            }  # fmt: skip
            return report.to_dict()

        return Job("freeplay", sum(lengths), seconds, run)

    def _one_step_job(self, rates: Rates) -> Job | None:
        c = self.cfg
        per_episode = self._per_episode(c.onestep_windows)
        try:
            w = load_windows(self.data.test, c.onestep_context, 1, c.onestep_windows, per_episode, c.seed)
        except ValueError as exc:
            self.skipped["onestep"] = str(exc)
            return None

        def run(bar: tqdm) -> dict:
            report, frames = evaluate_one_step(self.world, w, seed=c.seed, batch_size=c.batch_size, bar=bar)
            self.one_step_frames = (frames, report.labels, report.most_common_action)
            return report.to_dict()

        return Job("onestep", len(w), rates.rollouts([1] * len(w), c.batch_size), run)

    # ----- running -----

    def run(self, jobs: list[Job], progress: bool = True) -> dict[str, Any]:
        """Run the jobs under one progress bar (unit: generated frames); returns the metrics dict."""
        metrics: dict[str, Any] = {name: {"skipped": why} for name, why in self.skipped.items()}
        timing = {}
        total = sum(j.frames for j in jobs)
        with tqdm(total=total, desc="evaluate", unit="frame", disable=not progress, dynamic_ncols=True) as bar:
            planned = 0
            for job in jobs:
                bar.set_postfix_str(job.name)
                start = time.perf_counter()
                metrics[job.name] = job.run(bar)
                # A job may generate fewer frames than planned (no tuned slope to compare with).
                planned += job.frames
                bar.update(max(0, planned - bar.n))
                timing[job.name] = {"seconds": round(time.perf_counter() - start, 1), "estimated_seconds": round(job.seconds, 1)}
        metrics["timing"] = timing
        metrics["notes"] = self.notes
        return metrics

    def settings(self) -> dict[str, Any]:
        """The evaluation config and sampling settings, recorded beside the numbers."""
        return {
            "config": asdict(self.cfg),
            "sampling": self.world.settings.to_dict(),
            "data": {k: (None if v is None else str(v)) for k, v in asdict(self.data).items()},
            "lpips": self.nets.lpips is not None,
            "st_lpips": self.nets.stlpips is not None,
            "fvd": self.nets.i3d is not None,
            "fvd_network": self.nets.i3d_name,
        }

