"""What action guidance costs in play speed: the world without guidance against guidance w with
each unconditional branch (``guidance_scope`` "all": the null action everywhere, its own cache;
"frame": the null action into the new frame only, the context shared), "frame" on the first
Euler step only (``guided_steps=1``), and history guidance on the first step ("history": the
new frame without its context), in the same run.

    python benchmarks/guidance_cost.py [--ckpt PATH] [--guidance 1.5] [--rounds 5] [--vector 32]

The variants are timed in turn, round after round, and each is reported by its median round, so
that a machine whose speed wanders from minute to minute slows them all alike. Prints steps/s of
one world and of a vector of N worlds, and each guided variant's ratio to the unguided one.
"""

from __future__ import annotations

import argparse
import time

import far_world  # noqa: F401, I001  (registers FARWorld-v0; first, so its OpenMP setting precedes torch)
import gymnasium
import numpy as np

from far_world.hardware import describe_hardware


def timed_rounds(envs: dict[str, gymnasium.Env], steps: int, rounds: int, per_step: int) -> dict[str, float]:
    """Median steps/s of each env over ``rounds`` rounds of ``steps`` steps, the envs in turn."""
    speeds: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, env in envs.items():
            start = time.perf_counter()
            for _ in range(steps):
                env.step(env.action_space.sample())
            speeds[name].append(per_step * steps / (time.perf_counter() - start))
    return {name: float(np.median(v)) for name, v in speeds.items()}


def make_variants(ckpt: str | None, guidance: float, num_envs: int) -> dict[str, gymnasium.Env]:
    every = 10**6  # guided_steps past the last Euler step: every step (None would keep the checkpoint's)
    variants = {
        "off": (1.0, "all", every), "all": (guidance, "all", every), "frame": (guidance, "frame", every),
        "frame, first step": (guidance, "frame", 1), "history, first step": (guidance, "history", 1),
    }  # fmt: skip
    envs = {}
    for name, (w, scope, guided_steps) in variants.items():
        if num_envs == 1:
            env = gymnasium.make("FARWorld-v0", ckpt=ckpt, max_episode_steps=10**9)
        else:
            env = gymnasium.make_vec(
                "FARWorld-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", ckpt=ckpt
            )
        env.unwrapped.world.configure(guidance=w, guidance_scope=scope, guided_steps=guided_steps)
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(40):  # past the first frames' allocations, towards a filled long-term ring
            env.step(env.action_space.sample())
        envs[name] = env
    return envs


def report(label: str, speeds: dict[str, float]) -> None:
    base = speeds["off"]
    parts = [f"off {base:.1f}"] + [f"scope {k} {v:.1f} ({v / base:.2f}x)" for k, v in speeds.items() if k != "off"]
    print(f"{label} steps/s: " + ", ".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint (default: the released default world)")
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--steps", type=int, default=60, help="steps a round, single world")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--vector", type=int, default=32)
    args = p.parse_args()
    if args.guidance == 1.0:
        p.error("--guidance 1 is no guidance: give the weight to compare against none")
    print(describe_hardware())
    print(f"guidance {args.guidance:g}, {args.rounds} rounds, the variants in turn")
    report("single world", timed_rounds(make_variants(args.ckpt, args.guidance, 1), args.steps, args.rounds, 1))
    vector = make_variants(args.ckpt, args.guidance, args.vector)
    report(f"vector of {args.vector}", timed_rounds(vector, max(args.steps // 4, 10), args.rounds, args.vector))


if __name__ == "__main__":
    main()
