"""Train an RL agent entirely inside a learned world, then score it in the real world it learned from.

    python train/train_agent.py --ckpt runs/far_doom/world.pt --steps 100000 --out runs/agent_doom
    python train/train_agent.py --ckpt world.pt --steps 50000 --num-envs 16 --horizon 200 \\
        --context data/doom/test --eval-episodes 30 --real-steps 50000

1. PPO (CnnPolicy) learns in FARWorld-v0's native vector env: imagined episodes start from real
   prompt frames (the checkpoint's, or a dataset folder's with --context), reward and ends come
   from the model's heads, and every episode is cut at --horizon imagined steps.
2. For reference, the same PPO learns on --real-steps steps of the real world (0 to skip).
3. The imagination agent, a uniform random policy and the reference play --eval-episodes real
   episodes each, on the same episode seeds.

Writes RUN_DIR/results.json (means, 95% CIs, returns, steps, wall times, command) and
RUN_DIR/learning_curve.png; each agent's run folder (imagination/, real/) holds TensorBoard logs
(tb/), checkpoints and agent.zip. Interrupted? Run the same command again: training resumes from
the last checkpoint, finished phases are not redone.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from far_world.envs.far_world_vector import FARWorldVectorEnv
from far_world.rl.callbacks import RealWorldEvaluation
from far_world.rl.curve import REAL_EVAL, TRAIN, CurveLog, read_curve
from far_world.rl.evaluation import (
    EvalResult,
    check_real_world_actions,
    evaluate_in_real_world,
    random_policy,
    sb3_policy,
)
from far_world.files import write_json
from far_world.rl.plotting import Series, plot_learning_curve
from far_world.rl.stats import MeanCI
from far_world.rl.training import PPOSettings, train_ppo
from far_world.rl.vec_env import ImaginationVecEnv, make_real_vec_env
from far_world.training.distributed import resolve_device

# Evaluation episodes use seeds far from the training worlds' (seed .. seed+num_envs-1).
EVAL_SEED_OFFSET = 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="world checkpoint (default: the released default world)")
    parser.add_argument("--algo", default="ppo", choices=["ppo"], help="RL algorithm (default ppo)")
    parser.add_argument("--steps", type=int, required=True, help="imagined environment steps to train on")
    parser.add_argument("--num-envs", type=int, default=16, help="worlds stepped together (default 16)")
    parser.add_argument("--horizon", type=int, default=200, help="imagined steps an episode at most (default 200)")
    parser.add_argument("--context", default="prompts", help="'prompts' (the checkpoint's) or a folder of episodes")
    parser.add_argument("--sampling-steps", type=int, help="Euler steps a frame (default: the checkpoint's)")
    parser.add_argument("--eval-episodes", type=int, default=30, help="real episodes per policy at the end (default 30)")
    parser.add_argument("--real-steps", type=int, help="real steps for the reference agent (default: --steps; 0 skips)")
    parser.add_argument("--eval-every", type=int,
                        help="real-world evaluation every N imagined steps (default: --steps/5; 0 turns it off)")
    parser.add_argument("--eval-every-episodes", type=int, default=5, help="real episodes a periodic evaluation (default 5)")
    parser.add_argument("--ckpt-every", type=int, default=10_000, help="checkpoint every N steps (default 10000)")
    parser.add_argument("--n-steps", type=int, default=128, help="PPO steps per world a rollout (default 128)")
    parser.add_argument("--batch-size", type=int, default=256, help="PPO minibatch (default 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="world model and agent device (default: cuda if available)")
    parser.add_argument("--out", type=Path, help="run folder (default runs/agent_<checkpoint name>)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.num_envs < 1 or args.horizon < 1 or args.eval_episodes < 1:
        parser.error("--steps, --num-envs, --horizon and --eval-episodes must be >= 1")
    if args.real_steps is None:
        args.real_steps = args.steps
    if args.eval_every is None:
        args.eval_every = max(1, args.steps // 5)
    if args.out is None:
        args.out = Path("runs") / f"agent_{Path(args.ckpt).stem if args.ckpt else 'default'}"
    return args


def imagination_env(args: argparse.Namespace, device: str) -> ImaginationVecEnv:
    venv = FARWorldVectorEnv(
        num_envs=args.num_envs, ckpt=args.ckpt, context=args.context, max_episode_steps=args.horizon,
        sampling_steps=args.sampling_steps, device=device,
    )  # fmt: skip
    return ImaginationVecEnv(venv)


def evaluate(
    policies: dict[str, Any], world_spec: str, episodes: int, seed: int, world_kwargs: dict[str, Any]
) -> dict[str, EvalResult]:
    results = {}
    for name, policy in policies.items():
        torch.manual_seed(seed)  # stochastic policies sample from torch's generator
        results[name] = evaluate_in_real_world(policy, world_spec, episodes, seed, world_kwargs=world_kwargs)
        s = results[name].summary
        print(f"  {name:12s} {s.mean:9.1f}  95% CI [{s.low:.1f}, {s.high:.1f}]  ({episodes} episodes)")
    return results


def real_eval_series(evals: list[dict[str, Any]], final_steps: int, final: MeanCI) -> Series:
    """Periodic real-world evaluations plus the final one (which replaces a periodic one at the same step)."""
    points = [(r["steps"], r["mean"], *(math.nan if b is None else b for b in r["ci95"])) for r in evals if r["steps"] != final_steps]
    points.append((final_steps, final.mean, final.low, final.high))
    steps, means, lows, highs = (list(column) for column in zip(*points))
    return Series("imagination agent, real-world return (95% CI)", steps, means, lows, highs)


def write_learning_curve(out: Path, world_spec: str, horizon: int, results: dict[str, EvalResult], final_steps: int) -> Path:
    imagination = read_curve(out / "imagination" / "curve.jsonl")
    real = read_curve(out / "real" / "curve.jsonl")
    series = [
        Series(f"imagination agent, imagined return (episodes <= {horizon} steps)",
               [r["steps"] for r in imagination.get(TRAIN, [])], [r["mean_return"] for r in imagination.get(TRAIN, [])]),
        real_eval_series(imagination.get(REAL_EVAL, []), final_steps, results["imagination"].summary),
    ]  # fmt: skip
    if real.get(TRAIN):
        series.append(Series("real-trained agent, real return", [r["steps"] for r in real[TRAIN]],
                             [r["mean_return"] for r in real[TRAIN]]))  # fmt: skip
    references = {"random policy": results["random"].summary}
    if "real" in results:
        references["real-trained agent, final"] = results["real"].summary
    return plot_learning_curve(series, references, out / "learning_curve.png", f"PPO in a learned {world_spec}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    device = str(resolve_device(args.device))
    settings = PPOSettings(n_steps=args.n_steps, batch_size=args.batch_size, seed=args.seed, device=device)
    eval_seed = args.seed + EVAL_SEED_OFFSET

    env = imagination_env(args, device)
    world = env.venv.world
    world_spec = world.world_spec
    world_kwargs = world.world_kwargs  # the real game is built as the training frames were (doom's hud)
    check_real_world_actions(world_spec, world.action_names, world_kwargs)
    action_space = env.action_space
    extra = []
    if args.eval_every > 0:
        curve = CurveLog(args.out / "imagination" / "curve.jsonl")
        extra.append(RealWorldEvaluation(world_spec, args.eval_every, args.eval_every_episodes, eval_seed, curve, world_kwargs))
    print(f"training in imagination: {args.steps} steps of a learned {world_spec}, {args.num_envs} worlds")
    agent, imagination = train_ppo(env, args.steps, args.out / "imagination", settings, args.ckpt_every, extra, "imagination")
    env.close()

    policies = {"imagination": sb3_policy(agent), "random": random_policy(action_space, eval_seed)}
    real_report = None
    if args.real_steps > 0:
        print(f"training in the real world for reference: {args.real_steps} steps of {world_spec}")
        real_env = make_real_vec_env(world_spec, args.num_envs, args.seed, world_kwargs)
        real_agent, real_report = train_ppo(real_env, args.real_steps, args.out / "real", settings, args.ckpt_every, desc="real")
        real_env.close()
        policies["real"] = sb3_policy(real_agent)

    print(f"evaluating in the real world ({world_spec}):")
    results = evaluate(policies, world_spec, args.eval_episodes, eval_seed, world_kwargs)
    curve_png = write_learning_curve(args.out, world_spec, args.horizon, results, imagination.steps)
    summary = {
        "command": shlex.join(["python", "train/train_agent.py", *argv]),
        "world": world_spec,
        "world_kwargs": world_kwargs,
        "checkpoint": args.ckpt,
        "algo": args.algo,
        "settings": {**settings.to_dict(), "num_envs": args.num_envs, "horizon": args.horizon, "context": args.context,
                     "sampling_steps": world.sampling_steps},
        "imagination": imagination.to_dict(),
        "real_reference": real_report.to_dict() if real_report else None,
        "evaluation": {"episodes": args.eval_episodes, "seed": eval_seed,
                       "policies": {name: r.to_dict() for name, r in results.items()}},
        "learning_curve": curve_png.name,
        "wall_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    write_json(args.out / "results.json", summary)
    print(f"wrote {args.out / 'results.json'} and {curve_png}")
    return summary


if __name__ == "__main__":
    main()
