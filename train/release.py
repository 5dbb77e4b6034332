"""Turn a training run's world.pt into a released checkpoint (float16 FAR weights, about half the size).

    python train/release.py runs/far_maze/world.pt checkpoints/maze.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from far_world.checkpoint import load_world_checkpoint, save_world_checkpoint, with_half_precision_weights


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a world checkpoint (train_far.py's RUN_DIR/world.pt)")
    parser.add_argument("target", help="where to write the released file")
    args = parser.parse_args(argv)
    path = save_world_checkpoint(args.target, with_half_precision_weights(load_world_checkpoint(args.source)))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return path


if __name__ == "__main__":
    main()
