"""Replay held-out episodes that ended in a world that carries game variables, and plot them.

    python train/carried_replay.py --ckpt runs/doom_carried/world.pt --data data/doom_hg_health --out runs/eval/doom_carried_replay

Each test episode that ended is replayed in the world from its first --context frames under its
true actions, the world carrying its own values (doom's health) from the recorded ones there
(far_world/evaluation/carried.py). Prints and writes OUT/replay.json (when the imagined episodes
end against the real ones, the carried values' error after 8, 32 and 64 steps) and
OUT/replay.png (recorded against imagined values, per episode).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
from tqdm import tqdm

from far_world.data.episodes import iter_episodes
from far_world.evaluation.carried import replay_ended_episodes, save_replay_plot
from far_world.world import WorldModel


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a world with carried variables (train/tune_carried.py)")
    p.add_argument("--data", required=True, help="a dataset folder whose test/ records the variables")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--context", type=int, default=16, help="real frames before the replay")
    p.add_argument("--episodes", type=int, default=64, help="test episodes read (those that ended are replayed)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    world = WorldModel.load(args.ckpt)
    episodes = [e for _, e in iter_episodes(f"{args.data}/test")][: args.episodes]
    try:
        with tqdm(unit="step", desc="replay") as bar:
            replay = replay_ended_episodes(world, episodes, args.context, args.seed, bar)
    except ValueError as exc:
        raise SystemExit(f"{args.ckpt} on {args.data}/test: {exc}") from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(replay.summary, indent=1))
    save_replay_plot(replay, out / "replay.png")
    print(json.dumps(replay.summary, indent=1))
    print(f"wrote {out / 'replay.json'} and {out / 'replay.png'}")
    return replay.summary


if __name__ == "__main__":
    main()
