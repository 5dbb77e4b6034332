"""Collect a dataset of episodes from a real world: plan, resume, run workers, show progress.

    report = collect(CollectConfig(world="doom", episodes=100, steps=500, out="data/doom", workers=2))

writes ``out/train/ep_NNNNNN.npz``, ``out/test/ep_NNNNNN.npz`` and ``out/meta.json``. A rerun
with the same settings resumes: valid episodes on disk are kept, missing or corrupt ones are
collected (again); a rerun with more episodes grows the dataset.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from far_world.collection.dataset_meta import build_meta, check_compatible, check_settings, existing_meta, settings_info
from far_world.collection.plan import EpisodeTask, plan_collection, remove_stale_temporaries, split_of
from far_world.collection.policies import POLICIES, default_policy
from far_world.collection.worker_pool import WorkerDiedError, WorkerPool
from far_world.data.episodes import DatasetMeta, write_meta
from far_world.envs.real import RESOLUTION, canonical_world_spec, parse_world_spec


@dataclass
class CollectConfig:
    world: str  # maze, doom, doom:SCENARIO, crafter, gym:ENV_ID
    episodes: int
    steps: int  # at most this many steps an episode (frames: steps + 1)
    out: str | Path
    workers: int = 1
    seed: int = 0
    test_fraction: float = 0.1
    policy: str | None = None  # None: the world's default (retrace for the maze, else persistent)
    world_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class CollectReport:
    written: list[int] = field(default_factory=list)  # episode indices collected by this run
    kept: list[int] = field(default_factory=list)  # valid episodes found on disk
    rewritten: list[str] = field(default_factory=list)  # what was wrong with each file collected again
    frames: int = 0
    wall_s: float = 0.0
    startup_s: dict[int, float] = field(default_factory=dict)  # per worker: spawn, imports, first world
    worker_frames: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    worker_busy_s: dict[int, float] = field(default_factory=lambda: defaultdict(float))  # resets, steps, saves

    @property
    def steady_fps(self) -> float:
        """Frames/s of all workers together once started (the sum of each worker's own rate)."""
        return sum(self.worker_frames[w] / s for w, s in self.worker_busy_s.items() if s > 0)


def _validate(cfg: CollectConfig) -> tuple[str, str]:
    world = canonical_world_spec(cfg.world)
    policy = cfg.policy or default_policy(parse_world_spec(world)[0])
    if policy not in POLICIES:
        raise ValueError(f"unknown policy '{policy}'; policies: {', '.join(POLICIES)}")
    if cfg.episodes < 0 or cfg.steps < 1 or cfg.workers < 1:
        raise ValueError(f"need episodes >= 0, steps >= 1, workers >= 1; got {cfg.episodes}, {cfg.steps}, {cfg.workers}")
    split_of(0, cfg.test_fraction)  # validates the fraction
    return world, policy


def collect(cfg: CollectConfig, progress: bool = True) -> CollectReport:
    """Collect the episodes of ``cfg`` that ``cfg.out`` lacks, with a progress bar of frames."""
    start = time.perf_counter()
    world, policy = _validate(cfg)
    out = Path(cfg.out)
    on_disk = existing_meta(out)
    info = settings_info(cfg.steps, cfg.test_fraction, cfg.world_kwargs)
    check_settings(on_disk, world, policy, cfg.seed, info, out)
    remove_stale_temporaries(out)
    # Episodes already on disk are checked at the resolution the dataset was collected at.
    resolution = tuple(on_disk.resolution) if on_disk is not None else RESOLUTION
    plan = plan_collection(out, cfg.episodes, cfg.steps, cfg.seed, cfg.test_fraction, resolution)
    report = CollectReport(kept=plan.done, rewritten=plan.invalid)
    for problem in plan.invalid:
        warnings.warn(f"collecting again: {problem}", stacklevel=2)
    if plan.todo or on_disk is None:  # without meta.json, a worker must describe the world even for 0 episodes
        pool = WorkerPool(max(1, min(cfg.workers, len(plan.todo))), world, cfg.world_kwargs, policy, cfg.steps)
        try:
            _run(pool, plan.todo, cfg, lambda description: build_meta(description, policy, cfg.seed, info),
                 on_disk, report, progress)
            leftover = pool.close()
        except BaseException:
            pool.terminate()
            raise
        for kind, worker, payload in leftover:
            if kind == "ready":  # a worker that started after the others had done all the work
                report.startup_s[worker] = time.perf_counter() - pool.started_at
            elif kind == "error":  # every episode is written, but a failure must not pass in silence
                warnings.warn(f"collect-worker-{worker} failed after the last episode:\n{payload}", stacklevel=2)
    report.wall_s = time.perf_counter() - start
    return report


def _run(pool: WorkerPool, todo: list[EpisodeTask], cfg: CollectConfig, make_meta: Callable[[dict], DatasetMeta],
         on_disk: DatasetMeta | None, report: CollectReport, progress: bool) -> None:
    """Write meta.json once the first worker describes the world, then collect every task."""
    remaining = {task.index for task in todo}
    submitted = False
    bar = tqdm(total=len(todo) * (cfg.steps + 1), unit="frame", unit_scale=True, desc=cfg.world, disable=not progress)
    with bar:
        while remaining or not submitted:
            event = pool.next_event()
            if event is None:
                continue
            kind, worker, payload = event
            if kind == "ready":
                report.startup_s[worker] = time.perf_counter() - pool.started_at
                if not submitted:
                    meta = make_meta(payload)
                    check_compatible(on_disk, meta, cfg.out)
                    write_meta(cfg.out, meta)
                    pool.submit(todo)
                    submitted = True
            elif kind == "frames":
                bar.update(payload)
                report.frames += payload
                report.worker_frames[worker] += payload
            elif kind == "episode":
                index, steps, seconds = payload
                remaining.discard(index)
                report.written.append(index)
                report.worker_busy_s[worker] += seconds
                if steps < cfg.steps:  # ended early: those frames will never come
                    bar.total -= cfg.steps - steps
                    bar.refresh()
            else:
                raise WorkerDiedError(f"unexpected event from collect-worker-{worker}: {event}")
