"""Play speed of larger FAR shapes: how big a world can be and still play at the speed floors.

    python benchmarks/shape_speed.py [--ckpt PATH] [--shapes "depth=6 width=256 heads=4" "patch_size=1"]
                                     [--sampling-steps 3] [--steps 100] [--vector 32]

Each shape is the checkpoint's FAR config with the given fields changed, with random weights
(speed does not depend on the weights) and the checkpoint's autoencoder and prompts. Prints the
hardware, then one row per shape: its parameter count, single-world and vector steps/s as
benchmarks/play_speed.py measures them, and both as a ratio of the checkpoint's own shape,
measured first in the same run. The floors are 20 steps/s single and 100 for a vector of 32.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import far_world  # noqa: F401, I001  (registers FARWorld-v0; first, so its OpenMP setting precedes torch)
from play_speed import single_world_speed, vector_speed

from far_world.checkpoint import load_world_checkpoint, save_world_checkpoint
from far_world.hardware import describe_hardware
from far_world.model.far import FARModel
from far_world.training.presets import apply_overrides
from far_world.world import default_checkpoint_path

DEFAULT_SHAPES = ("depth=6 width=256 heads=4", "width=384 heads=6", "patch_size=1", "patch_size=1 width=128 heads=2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="checkpoint whose shape is the baseline (default: the released default world)")
    p.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), help="FAR config changes, one quoted string a shape")
    p.add_argument("--sampling-steps", type=int, help="Euler steps a frame (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--vector", type=int, default=32)
    args = p.parse_args()
    base = load_world_checkpoint(args.ckpt or default_checkpoint_path())
    if args.sampling_steps is not None:
        inference = {**base.summary.get("inference", {}), "sampling_steps": args.sampling_steps}
        base = dataclasses.replace(base, summary={**base.summary, "inference": inference})
    print(describe_hardware())
    print(f"Euler steps a frame: {base.summary.get('inference', {}).get('sampling_steps', 'the default')}")
    shapes = {"checkpoint's shape": base.far_config}
    for name in args.shapes:  # every shape checked before any is timed
        try:
            shapes[name] = apply_overrides(base.far_config, name.split())
        except ValueError as exc:
            raise SystemExit(f"shape {name!r}: {exc}") from exc
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cfg) in enumerate(shapes.items()):
            model = FARModel(cfg)
            path = Path(tmp) / f"shape{i}.pt"
            save_world_checkpoint(path, dataclasses.replace(base, far_config=cfg, far_state=model.state_dict()))
            params = sum(t.numel() for t in model.parameters())
            single = single_world_speed(str(path), args.steps)
            vector = vector_speed(str(path), args.vector, max(args.steps // 10, 5))
            baseline = baseline or (single, vector)
            print(f"{name}: {params / 1e6:.2f} M parameters, single {single:.1f} steps/s ({single / baseline[0]:.2f}x), "
                  f"vector of {args.vector} {vector:.1f} steps/s ({vector / baseline[1]:.2f}x) (floors 20 and 100)")


if __name__ == "__main__":
    main()
