"""Convert a public dataset (TECO DMLab/Minecraft, MineRL, VPT) into far-world episodes.

    python train/import_dataset.py --format teco-dmlab --src ~/teco/dmlab --out data/dmlab
    python train/import_dataset.py --format vpt --src ~/vpt --out data/vpt --test-fraction 0.05

Writes ``OUT/{train,test}/*.npz`` and ``OUT/meta.json``. Run it again to resume: converted
items are skipped. See docs/datasets.md for the formats and action mappings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from far_world.data.loaders import FORMATS, LoaderError, import_dataset, make_loader
from far_world.data.loaders.minecraft_actions import DEFAULT_CAMERA_THRESHOLD


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="source dataset format")
    parser.add_argument("--src", required=True, type=Path, help="folder (or single file) of the source dataset")
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--test-fraction", type=float, default=0.1,
                        help="share of items put in test/ when the source has no split of its own (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test draw")
    parser.add_argument("--resolution", type=int, default=None,
                        help="square frame side; default: native for TECO, 64 for MineRL and VPT")
    parser.add_argument("--actions", choices=("discrete", "multi-discrete"), default="discrete",
                        help="action space for MineRL and VPT (default discrete)")
    parser.add_argument("--camera-threshold", type=float, default=DEFAULT_CAMERA_THRESHOLD,
                        help="degrees a tick below which a camera move counts as none (MineRL, VPT)")
    parser.add_argument("--limit", type=int, default=None, help="convert at most this many items")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loader = make_loader(args.format, args.resolution, args.actions, args.camera_threshold)
    try:
        summary = import_dataset(loader, args.src, args.out, args.test_fraction, args.seed, args.limit)
    except (LoaderError, FileNotFoundError, ValueError) as exc:
        print(f"import_dataset: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.out}: {summary.train} train + {summary.test} test episodes written, "
        f"{summary.already_done} already there, {len(summary.skipped)} broken source items skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
