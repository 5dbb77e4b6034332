"""Play speed of a checkpoint: single-world and vector steps/s, latency drift and memory over a long episode.

    python benchmarks/play_speed.py [--ckpt PATH] [--long-steps 2000] [--vector 32]

Prints the hardware, then
  single   steps/s of one world (FARWorld-v0), random actions
  vector   total steps/s of the native vector env with N worlds (one batched forward pass)
  drift    mean step latency over steps 1000-1100 against steps 20-120 of one long episode
           (the long/short-term context cache keeps it bounded), and resident memory growth.
"""

from __future__ import annotations

import argparse
import resource
import time

import far_world  # noqa: F401, I001  (registers FARWorld-v0; first, so its OpenMP setting precedes torch)
import gymnasium
import numpy as np

from far_world.hardware import describe_hardware


def resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def single_world_speed(ckpt: str | None, steps: int) -> float:
    env = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(5):  # warm-up: first calls allocate caches
        env.step(env.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    return steps / (time.perf_counter() - start)


def vector_speed(ckpt: str | None, num_envs: int, steps: int) -> float:
    envs = gymnasium.make_vec("FARWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", ckpt=ckpt)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    for _ in range(3):
        envs.step(envs.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    return num_envs * steps / (time.perf_counter() - start)


def latency_drift(ckpt: str | None, long_steps: int) -> tuple[float, float, float]:
    """(mean latency steps 20-120, mean latency steps 1000-1100, RSS growth MB from step 20 to the end)."""
    env = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    env.reset(seed=1)
    env.action_space.seed(1)
    latencies = np.zeros(long_steps)
    rss_start = 0.0
    for i in range(long_steps):
        if i == 20:
            rss_start = resident_mb()
        start = time.perf_counter()
        env.step(env.action_space.sample())
        latencies[i] = time.perf_counter() - start
    return float(latencies[20:120].mean()), float(latencies[1000:1100].mean()), resident_mb() - rss_start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint (default: the released default world)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--vector", type=int, default=32)
    p.add_argument("--long-steps", type=int, default=2000)
    args = p.parse_args()
    print(describe_hardware())
    single = single_world_speed(args.ckpt, args.steps)
    print(f"single world: {single:.1f} steps/s (floor 20)")
    vector = vector_speed(args.ckpt, args.vector, max(args.steps // 4, 20))
    print(f"vector of {args.vector}: {vector:.1f} steps/s in total, {vector / single:.2f}x single (floor 100)")
    early, late, growth = latency_drift(args.ckpt, args.long_steps)
    print(f"latency steps 20-120: {early * 1e3:.2f} ms, steps 1000-1100: {late * 1e3:.2f} ms, ratio {late / early:.3f} (floor <= 1.25)")
    print(f"resident memory growth over {args.long_steps} steps: {growth:.1f} MB (floor <= 100)")


if __name__ == "__main__":
    main()
