"""Collect trajectories from a real world into far-world episodes.

    python train/collect.py --world maze --episodes 200 --steps 1000 --workers 2 --out data/maze
    python train/collect.py --world doom:my_way_home --episodes 500 --steps 500 --out data/doom_home
    python train/collect.py --world gym:CartPole-v1 --episodes 50 --steps 200 --out data/cartpole
    python train/collect.py --world minecraft --episodes 120 --steps 500 --workers 2 --out data/minecraft

Writes ``OUT/{train,test}/ep_NNNNNN.npz`` and ``OUT/meta.json``. Interrupted? Run the same
command again: episodes on disk are kept, missing or corrupt ones are collected. More
``--episodes`` grows the dataset; other settings into the same ``--out`` are refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from far_world.collection import POLICIES, CollectConfig, DatasetMismatchError, WorkerDiedError, collect
from far_world.envs.real import MissingWorldPackageError, UnknownWorldError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True, help="maze, doom, doom:SCENARIO, crafter, minecraft or gym:ENV_ID")
    parser.add_argument("--episodes", required=True, type=int, help="episodes in the dataset (indices 0..N-1)")
    parser.add_argument("--steps", required=True, type=int,
                        help="steps an episode at most (it ends early when the world ends it)")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; episode i's seeds derive from (seed, i)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of episodes in test/ (default 0.1)")
    parser.add_argument("--policy", choices=sorted(POLICIES), default=None,
                        help="exploration policy (default: retrace for the maze, minecraft for minecraft, persistent elsewhere)")
    parser.add_argument("--frame-skip", type=int, default=None,
                        help="engine frames a step, for doom (default 4) and gym worlds (default 1)")
    parser.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="frame size, for minecraft (default 64 64)")
    parser.add_argument("--hud", action="store_true", help="doom: show the health in the frame (ViZDoom's minimal HUD)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = CollectConfig(
        world=args.world, episodes=args.episodes, steps=args.steps, out=args.out, workers=args.workers,
        seed=args.seed, test_fraction=args.test_fraction, policy=args.policy,
        world_kwargs={
            **({} if args.frame_skip is None else {"frame_skip": args.frame_skip}),
            **({} if args.resolution is None else {"resolution": list(args.resolution)}),
            **({"hud": True} if args.hud else {}),
        },
    )
    try:
        report = collect(cfg)
    except (UnknownWorldError, MissingWorldPackageError, DatasetMismatchError, WorkerDiedError, ValueError) as exc:
        print(f"collect: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"collect: interrupted; run the same command again to resume into {args.out}", file=sys.stderr)
        return 130
    startup = max(report.startup_s.values(), default=0.0)
    replaced = f" ({len(report.rewritten)} replacing bad files)" if report.rewritten else ""
    print(
        f"{args.out}: {len(report.written)} episodes written{replaced}, {len(report.kept)} already there; "
        f"{report.frames} frames in {report.wall_s:.1f} s (start-up {startup:.1f} s, then {report.steady_fps:.0f} frames/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
