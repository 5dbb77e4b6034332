"""Train the FAR world model on the latents of a folder of episodes.

    python train/train_far.py --data data/doom --ae runs/ae_doom --out runs/far_doom [--preset cpu] [key=value ...]
    torchrun --nproc_per_node 2 train/train_far.py ...      # DDP: gloo on CPU, NCCL on GPU

The autoencoder (a train_ae run folder or its ae.pt) encodes the train split once into a
latent cache (reused while the autoencoder is the same). Resumes from RUN_DIR/state.pt when it
exists, exactly: a run killed at any point and restarted continues as if never stopped.
Writes RUN_DIR/config.json, TensorBoard logs (RUN_DIR/tb), metrics.jsonl, state.pt, and at
the end the released one-file checkpoint RUN_DIR/world.pt and RUN_DIR/summary.json.
``--init WORLD.pt`` fine-tunes: a new run starts from that world's weights (same shape, same
autoencoder) with this run's config and schedule; a resumed run ignores it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import far_world  # noqa: F401  (first: torch's OpenMP settings precede its import; far_world/openmp.py)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from far_world.action_spaces import nvec_from_spec  # noqa: E402
from far_world.checkpoint import (  # noqa: E402
    load_autoencoder, load_training_state, load_world_checkpoint, save_training_state,
)
from far_world.training.stop import graceful_stop  # noqa: E402
from far_world.data.clips import ClipDataset  # noqa: E402
from far_world.data.episodes import read_meta  # noqa: E402
from far_world.data.latents import build_latent_cache  # noqa: E402
from far_world.model.autoencoder import FrameAutoencoder  # noqa: E402
from far_world.model.config import FARConfig  # noqa: E402
from far_world.training.distributed import DistInfo, barrier, init_distributed, shutdown_distributed  # noqa: E402
from far_world.training.export import export_world  # noqa: E402
from far_world.training.far_trainer import FARTrainer  # noqa: E402
from far_world.training.presets import FAR_PRESETS, FARTrainConfig, apply_overrides, preset, write_config  # noqa: E402
from far_world.training.resume import check_resumable  # noqa: E402
from far_world.training.run_log import RunLog  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, FARTrainConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="episode folder with train/ and test/ splits and meta.json")
    parser.add_argument("--ae", required=True, help="trained autoencoder: a train_ae run folder, its ae.pt, or a world checkpoint whose autoencoder to reuse")
    parser.add_argument("--out", required=True, help="run folder (created; resumed if it holds state.pt)")
    parser.add_argument("--preset", default="cpu", choices=sorted(FAR_PRESETS))
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides the preset)")
    parser.add_argument("--cache", help="latent cache folder (default: DATA/latent_cache/<autoencoder hash>)")
    parser.add_argument(
        "--allow-imagined", action="store_true",
        help="train on episodes labelled imagined (play.py recordings of a learned world): refused by default",
    )  # fmt: skip
    parser.add_argument(
        "--init", help="start from this world checkpoint's FAR weights (fine-tuning; needs the same shape and autoencoder)"
    )
    parser.add_argument(
        "--new-output", action="store_true",
        help="with --init: let the run change what the network outputs (far.prediction, far.change_scale) and relearn it",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="config fields, e.g. lr=1e-4 far.depth=4 batch_size=32")
    args = parser.parse_args(argv)
    cfg = apply_overrides(preset(FAR_PRESETS, args.preset), args.overrides)
    if args.steps is not None:
        cfg = apply_overrides(cfg, [f"steps={args.steps}"])
    return args, cfg


def fit_to_data(cfg: FARTrainConfig, ae: FrameAutoencoder, action_nvec: tuple[int, ...]) -> FARTrainConfig:
    """The latent geometry comes from the autoencoder and the action space from the data."""
    latent = [f"far.latent_channels={ae.cfg.latent_channels}", f"far.latent_size={ae.cfg.latent_size}"]
    return apply_overrides(cfg, [*latent, "far.action_nvec=" + ",".join(map(str, action_nvec))])


def latent_dataset(args: argparse.Namespace, cfg: FARTrainConfig, ae: FrameAutoencoder, dist: DistInfo) -> ClipDataset:
    """Rank 0 builds (or reuses) the cache of the train split; the other ranks wait, then read it."""
    fingerprint = ae.fingerprint()
    train_folder = Path(args.data) / "train"
    cache = Path(args.cache) if args.cache else Path(args.data) / "latent_cache" / fingerprint[:16]
    if dist.is_main:
        device = dist.device

        def encode(frames: torch.Tensor) -> torch.Tensor:
            return ae.to(device).encode(frames.to(device)).cpu()

        build_latent_cache(train_folder, cache, encode, fingerprint, allow_imagined=args.allow_imagined)
    barrier(dist)
    return ClipDataset(
        cache, clip_len=cfg.min_clip_frames, seed=cfg.seed, action_nvec=cfg.far.action_nvec,
        allow_imagined=args.allow_imagined,
    )  # fmt: skip


# FARConfig fields that say what the network's output is: weights trained under one value are
# nonsense under another, yet they load without a shape error.
OUTPUT_MEANING = ("prediction", "change_scale")


def initial_weights(path: Path, ae: FrameAutoencoder, far: FARConfig, new_output: bool = False) -> dict[str, torch.Tensor]:
    """A world checkpoint's FAR weights, refused unless it was trained on this autoencoder's
    latents and, unless ``new_output``, its output means what this run's config says it does."""
    if load_autoencoder(path)[0].fingerprint() != ae.fingerprint():
        raise SystemExit(f"--init {path}: its autoencoder is not the --ae one, so its latents mean something else")
    ckpt = load_world_checkpoint(path)
    for name in OUTPUT_MEANING:
        theirs, ours = getattr(ckpt.far_config, name), getattr(far, name)
        if theirs != ours and not new_output:
            raise SystemExit(
                f"--init {path}: it was trained with far.{name}={theirs}, this run has {ours}; pass far.{name}={theirs}, "
                "or --new-output to relearn the output"
            )
    return ckpt.far_state


def main(argv: list[str] | None = None) -> dict | None:
    args, cfg = parse_args(argv)
    dist = init_distributed(cfg.device)
    out = Path(args.out)
    ae_path = Path(args.ae) / "ae.pt" if Path(args.ae).is_dir() else Path(args.ae)
    ae, ae_summary = load_autoencoder(ae_path)
    meta = read_meta(Path(args.data))
    cfg = fit_to_data(cfg, ae, nvec_from_spec(meta.action_space))
    trainer = FARTrainer(cfg, latent_dataset(args, cfg, ae, dist), dist)

    state_path = out / "state.pt"
    progress = {"elapsed_s": 0.0, "tokens_seen": 0}
    if state_path.is_file():
        state = load_training_state(state_path)
        # Through the config class: fields added since the run started compare at their defaults.
        check_resumable(FARTrainConfig.from_dict(state.config).to_dict(), cfg.to_dict())
        trainer.load_training_state(state)
        progress.update({k: state.extra[k] for k in progress if k in state.extra})
        if dist.is_main:
            print(f"resumed from {state_path} at step {trainer.step}")
    elif args.init:
        trainer.start_from(initial_weights(Path(args.init), ae, cfg.far, args.new_output))
        if dist.is_main:
            print(f"started from the weights of {args.init}")
    if cfg.distill_prob > 0 and trainer.teacher is None:
        raise SystemExit("distill_prob > 0 needs --init WORLD.pt: the teacher is the world the run starts from")
    if dist.is_main:
        write_config(cfg, out / "config.json")
        if cfg.rollout_prob > 0 and cfg.rollout_start_step >= cfg.steps:
            print(f"note: rollouts start at step {cfg.rollout_start_step}, after this run's {cfg.steps} steps: it trains without them")
        if trainer.revisits is not None:
            longest = min(cfg.max_clip_frames, trainer.longest)
            print(f"revisit windows: {trainer.revisits.share(longest):.1%} of the {longest}-frame windows "
                  f"(margin {cfg.revisit_margin}); a clip is one with probability {cfg.revisit_prob}")
    log = RunLog(out, enabled=dist.is_main, start_step=trainer.step)

    params = sum(p.numel() for p in trainer.model.parameters())
    bar = tqdm(
        total=cfg.steps, initial=trainer.step, desc="FAR", unit="step", dynamic_ncols=True, disable=not dist.is_main
    )
    recent: list[float] = []
    with graceful_stop(enabled=dist.world_size == 1) as stop:
        while trainer.step < cfg.steps and not stop:
            start = time.perf_counter()
            metrics = trainer.train_step()
            progress["elapsed_s"] += time.perf_counter() - start
            progress["tokens_seen"] += int(metrics["tokens"])
            recent = (recent + [metrics["loss"]])[-50:]
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}", F=int(metrics["clip_frames"])
            )
            if trainer.step % cfg.log_every == 0:
                log.scalars(trainer.step, metrics)
            if dist.is_main and (trainer.step % cfg.ckpt_every == 0 or trainer.step == cfg.steps or stop):
                # Rank 0's state serves every rank: ranks hold the same weights, and all the
                # randomness of a step comes from per-shard generators, not the global RNGs.
                state = trainer.training_state()
                state.extra.update(progress)
                save_training_state(state_path, state)
    bar.close()
    if stop:
        print(f"stopped at step {trainer.step} of {cfg.steps}; saved {state_path}: the same command continues the run")
        log.close()
        del trainer  # its DDP reducer must not outlive the process group (shutdown_distributed)
        shutdown_distributed()
        return None

    summary = None
    if dist.is_main:
        summary = {
            "steps": trainer.step,
            "params": params,
            "final_loss": sum(recent) / max(1, len(recent)),
            "train_seconds": round(progress["elapsed_s"], 1),
            "tokens_seen": progress["tokens_seen"],
            "world_size": dist.world_size,
            "world": meta.world,
            "data": str(args.data),
            "autoencoder": ae_summary,
            "train_config": cfg.to_dict(),
            "init": args.init,
        }
        data = Path(args.data)
        export_world(
            out / "world.pt", cfg.far, trainer.ema.state_dict(), ae, meta,
            [data / "test", data / "train"], cfg.num_prompts, cfg.prompt_frames, summary,
        )  # fmt: skip
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out / 'world.pt'} (final loss {summary['final_loss']:.4f})")
    log.close()
    del trainer  # its DDP reducer must not outlive the process group (shutdown_distributed)
    shutdown_distributed()
    return summary


if __name__ == "__main__":
    main()
