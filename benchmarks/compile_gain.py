"""What `torch.compile` buys a world's step: one world stepped eager and one with compiled blocks.

    python benchmarks/compile_gain.py [--ckpt PATH] [--steps 60] [--rounds 3]

Prints the hardware, the one-off compile time (the first steps of the compiled world), then per
round the steps/s of the eager and the compiled world, stepped one after the other so that both
meet the same load, and the median ratio. Compilation stays out of the released stepping core
unless this ratio pays for its start-up (docs/RESULTS.md, "Play speed").
"""

from __future__ import annotations

import argparse
import time

import far_world  # noqa: F401, I001  (registers FARWorld-v0; first, so its OpenMP setting precedes torch)
import gymnasium
import numpy as np
import torch

from far_world.hardware import describe_hardware


def make_world(ckpt: str | None) -> gymnasium.Env:
    env = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
    env.reset(seed=0)
    env.action_space.seed(0)
    return env


def steps_per_second(env: gymnasium.Env, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    return steps / (time.perf_counter() - start)


def compile_blocks(env: gymnasium.Env) -> None:
    """Compile each transformer block in place (dynamic shapes: the cache's token counts vary)."""
    far = env.unwrapped.world.far
    for i, block in enumerate(far.blocks):
        far.blocks[i] = torch.compile(block, dynamic=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint (default: the released default world)")
    p.add_argument("--steps", type=int, default=60, help="steps a world a round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(describe_hardware())
    eager, compiled = make_world(args.ckpt), make_world(args.ckpt)
    compile_blocks(compiled)
    start = time.perf_counter()
    steps_per_second(compiled, 20)  # compiles, and recompiles as the cache fills
    print(f"compile time (first 20 steps of the compiled world): {time.perf_counter() - start:.1f} s")
    steps_per_second(eager, 20)
    ratios = []
    for r in range(args.rounds):
        e, c = steps_per_second(eager, args.steps), steps_per_second(compiled, args.steps)
        ratios.append(c / e)
        print(f"round {r + 1}: eager {e:.1f} steps/s, compiled {c:.1f} steps/s, ratio {c / e:.2f}")
    print(f"median ratio compiled / eager: {float(np.median(ratios)):.2f}")


if __name__ == "__main__":
    main()
