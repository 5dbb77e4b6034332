"""Turn a training run's world.pt into a released checkpoint: float16 FAR weights (about half the
size) and the inference defaults that FARWorld-v0 and play.py start from.

    python train/release.py runs/far_maze/world.pt checkpoints/maze.pt --sampling-steps 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

from far_world.checkpoint import load_world_checkpoint, save_world_checkpoint, with_half_precision_weights
from far_world.model.sampler import GUIDANCE_SCOPES, SamplingSettings


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a world checkpoint (train_far.py's RUN_DIR/world.pt)")
    parser.add_argument("target", help="where to write the released file")
    parser.add_argument("--sampling-steps", type=int, default=None, help="default Euler steps a frame")
    parser.add_argument("--guidance", type=float, default=None, help="default action guidance weight")
    parser.add_argument("--guidance-scope", choices=GUIDANCE_SCOPES, default=None,
                        help="default of what the unconditional branch drops: every action ('all'), the new frame's ('frame') or the context ('history')")
    parser.add_argument("--guided-steps", type=int, default=None, help="default: guide the first N Euler steps only")
    parser.add_argument("--flex-rope-slope", type=float, default=None, help="default FlexRoPE slope")
    parser.add_argument("--context-noise", type=float, default=None, help="default inference context noise (flow time)")
    parser.add_argument("--time-shift", type=float, default=None, help="default warp of the Euler grid (< 1: finer near the clean end)")
    parser.add_argument("--start-time", type=float, default=None, help="default flow time sampling starts from (< 1: warm start)")
    args = parser.parse_args(argv)
    chosen = {
        "sampling_steps": args.sampling_steps, "guidance": args.guidance, "guidance_scope": args.guidance_scope,
        "guided_steps": args.guided_steps,
        "flex_rope_slope": args.flex_rope_slope, "context_noise": args.context_noise, "time_shift": args.time_shift,
        "start_time": args.start_time,
    }  # fmt: skip
    ckpt = load_world_checkpoint(args.source)
    inference = dict(ckpt.summary.get("inference", {}))
    inference.update({key: value for key, value in chosen.items() if value is not None})
    try:
        SamplingSettings.from_dict(inference)
    except ValueError as exc:
        parser.error(str(exc))
    ckpt = with_half_precision_weights(ckpt)
    ckpt.summary = {**ckpt.summary, "inference": inference}
    path = save_world_checkpoint(args.target, ckpt)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB), inference defaults {inference}")
    return path


if __name__ == "__main__":
    main()
