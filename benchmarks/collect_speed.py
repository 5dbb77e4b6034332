"""Collection speed of the real worlds: frames/s per world and worker count, through train/collect.py's code path.

    python benchmarks/collect_speed.py [--worlds maze doom crafter minecraft] [--workers 1 2] [--scale 1.0]

Prints the hardware and the load average (other processes share the CPU), then per world and
worker count:
  start-up   seconds from starting the workers to the slowest one being ready (spawn, imports,
             first world), paid once per run
  steady     frames/s once started, all workers together: episode resets, steps, policy and the
             atomic save of each episode included
  /worker    steady divided by the workers, checked against this project's floor for a 2-core
             machine (doom 1000, crafter 100, maze 20, minecraft 20 frames/s)
  cpu f/s    frames per CPU-second of the whole run (this process, its workers and their game
             processes, start-ups included) times the workers: the steady rate the run would
             reach with a core per worker to itself, on a machine that other jobs share
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from dataclasses import dataclass

from far_world.collection import CollectConfig, collect
from far_world.hardware import describe_hardware


@dataclass(frozen=True)
class WorldRun:
    episodes_per_worker: int
    steps: int  # long enough that per-episode resets weigh as in real collection
    floor_fps_per_worker: float


RUNS = {
    "doom": WorldRun(episodes_per_worker=4, steps=500, floor_fps_per_worker=1000.0),
    "crafter": WorldRun(episodes_per_worker=2, steps=500, floor_fps_per_worker=100.0),
    "maze": WorldRun(episodes_per_worker=1, steps=250, floor_fps_per_worker=20.0),
    # A fresh game process an episode (start-up and level generation, ~4 CPU-seconds, overlap the
    # previous episode): 500 steps an episode, as data/minecraft is collected (docs/training.md).
    "minecraft": WorldRun(episodes_per_worker=2, steps=500, floor_fps_per_worker=20.0),
}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished descendants (workers, and the game processes
    the workers waited for)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(world: str, workers: int, run: WorldRun, scale: float) -> dict:
    steps = max(8, round(run.steps * scale))
    cpu_before = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix=f"collect_speed_{world}_") as out:
        report = collect(
            CollectConfig(world, episodes=run.episodes_per_worker * workers, steps=steps, out=out, workers=workers),
            progress=False,
        )
    cpu = cpu_seconds() - cpu_before
    return {
        "frames": report.frames,
        "startup_s": max(report.startup_s.values(), default=0.0),
        "steady_fps": report.steady_fps,
        "cpu_fps": report.frames / cpu * workers if cpu > 0 else 0.0,
        "wall_s": report.wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every run's steps (quick look: 0.2)")
    args = parser.parse_args()

    hw = describe_hardware()
    print(f"cpu: {hw['cpu']}, {hw['cpu_count']} cores; load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'world':9} {'workers':>7} {'frames':>7} {'start-up s':>10} {'steady f/s':>10} {'/worker':>8} "
          f"{'floor':>6} {'cpu f/s':>8} {'wall s':>7}")
    for world in args.worlds:
        run = RUNS[world]
        for workers in args.workers:
            r = measure(world, workers, run, args.scale)
            per_worker = r["steady_fps"] / workers
            verdict = "ok" if per_worker >= run.floor_fps_per_worker else "BELOW"
            print(f"{world:9} {workers:7d} {r['frames']:7d} {r['startup_s']:10.1f} {r['steady_fps']:10.0f} "
                  f"{per_worker:8.0f} {verdict:>6} {r['cpu_fps']:8.0f} {r['wall_s']:7.1f}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
