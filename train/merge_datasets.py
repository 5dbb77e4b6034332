"""Merge episode folders of one world into one training set (a mixture of policies or seeds).

    python train/merge_datasets.py data/maze_j data/maze_uniform --out data/maze_j_uniform

Episodes are hard-linked, not copied, under names that keep their source
(``s1_ep_000004.npz``), and each keeps its train/test split. ``OUT/meta.json`` joins the
policies with '+' and records every source's meta.json. Run it again to add nothing twice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from far_world.data.merge import merge_datasets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path, help="dataset folders (each with meta.json)")
    parser.add_argument("--out", required=True, type=Path, help="merged dataset folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if len(args.sources) < 2:
        print("merge_datasets: name at least two source folders", file=sys.stderr)
        return 1
    if args.out.resolve() in {s.resolve() for s in args.sources}:
        print("merge_datasets: --out must be a new folder, not one of the sources", file=sys.stderr)
        return 1
    try:
        counts = merge_datasets(args.sources, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"merge_datasets: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: {counts['train']} train + {counts['test']} test episodes from {len(args.sources)} datasets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
