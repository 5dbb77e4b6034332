"""Play speed of a checkpoint: single-world and vector steps/s, latency drift and memory over a long episode.

    python benchmarks/play_speed.py [--ckpt PATH] [--long-steps 2000] [--vector 32]

Prints the hardware, then
  single   steps/s of one world (FARWorld-v0), random actions, as the env steps by default
           (one intra-op thread a pass; rows split across cores, far_world.world.MIN_ROWS_PER_SHARD)
           and with all rows on torch's own intra-op threads, the baseline
  vector   total steps/s of the native vector env with N worlds (one batched forward pass),
           the same two ways
  drift    mean step latency of a world past --long-steps steps against one at steps 20-120,
           stepped in turn (the long/short-term context cache keeps it bounded), and the
           resident memory growth over the long episode.
"""

from __future__ import annotations

import argparse
import resource
import time

import far_world  # noqa: F401, I001  (registers FARWorld-v0; first, so its OpenMP setting precedes torch)
import gymnasium
import numpy as np
import torch

from far_world.hardware import describe_hardware


def resident_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def single_world_speed(ckpt: str | None, steps: int, torch_threads: bool = False) -> float:
    """Steps/s of one world; ``torch_threads``: step with torch's thread count, not the env's choice."""
    env = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    if torch_threads:
        env.unwrapped.world.threads = torch.get_num_threads()
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(5):  # warm-up: first calls allocate caches
        env.step(env.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    return steps / (time.perf_counter() - start)


def vector_speed(ckpt: str | None, num_envs: int, steps: int, torch_threads: bool = False) -> float:
    envs = gymnasium.make_vec("FARWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", ckpt=ckpt)
    if torch_threads:
        envs.unwrapped.world.threads = torch.get_num_threads()
    envs.reset(seed=0)
    envs.action_space.seed(0)
    for _ in range(3):
        envs.step(envs.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    return num_envs * steps / (time.perf_counter() - start)


def latency_drift(ckpt: str | None, long_steps: int, pairs: int = 200) -> tuple[float, float, float]:
    """(mean latency of a young world at steps 20-120, mean latency of an old world past
    ``long_steps`` steps, RSS growth MB over the old world's episode from step 20).

    The two worlds are stepped in turn, so that both latencies are timed under the same load:
    on a shared machine the speed wanders by a third from one minute to the next.
    """
    old = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    old.reset(seed=1)
    old.action_space.seed(1)
    rss_start = 0.0
    for i in range(long_steps):
        if i == 20:
            rss_start = resident_mb()
        old.step(old.action_space.sample())
    growth = resident_mb() - rss_start
    young = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    young.action_space.seed(2)
    early, late = [], []
    while len(early) < pairs:
        young.reset(seed=len(early))
        for i in range(120):
            start = time.perf_counter()
            young.step(young.action_space.sample())
            if i >= 20:
                early.append(time.perf_counter() - start)
                start = time.perf_counter()
                old.step(old.action_space.sample())
                late.append(time.perf_counter() - start)
    return float(np.mean(early)), float(np.mean(late)), growth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint (default: the released default world)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--vector", type=int, default=32)
    p.add_argument("--long-steps", type=int, default=2000)
    args = p.parse_args()
    print(describe_hardware())
    threads = torch.get_num_threads()
    single = single_world_speed(args.ckpt, args.steps)
    single_base = single_world_speed(args.ckpt, args.steps, torch_threads=True)
    print(f"single world: {single:.1f} steps/s (floor 20); with torch's {threads} threads {single_base:.1f}, "
          f"ratio {single / single_base:.2f}")
    vector_steps = max(args.steps // 4, 20)
    vector = vector_speed(args.ckpt, args.vector, vector_steps)
    vector_base = vector_speed(args.ckpt, args.vector, vector_steps, torch_threads=True)
    print(f"vector of {args.vector}: {vector:.1f} steps/s in total, {vector / single:.2f}x single (floor 100); "
          f"with torch's {threads} threads {vector_base:.1f}, ratio {vector / vector_base:.2f}")
    early, late, growth = latency_drift(args.ckpt, args.long_steps)
    print(f"latency steps 20-120: {early * 1e3:.2f} ms, after {args.long_steps} steps: {late * 1e3:.2f} ms, "
          f"ratio {late / early:.3f} (floor <= 1.25)")
    print(f"resident memory growth over {args.long_steps} steps: {growth:.1f} MB (floor <= 100)")


if __name__ == "__main__":
    main()
