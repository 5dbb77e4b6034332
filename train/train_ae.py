"""Train the frame autoencoder on a folder of episodes.

    python train/train_ae.py --data data/doom --out runs/ae_doom [--preset cpu] [--steps N] [key=value ...]

Resumes from RUN_DIR/state.pt when it exists. Writes RUN_DIR/config.json, TensorBoard logs
(RUN_DIR/tb), metrics.jsonl, the trained model RUN_DIR/ae.pt (with latent statistics) and
RUN_DIR/summary.json with the reconstruction PSNR on held-out (test split) frames.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import far_world  # noqa: F401  (first: torch's OpenMP settings precede its import; far_world/openmp.py)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from far_world.checkpoint import load_training_state, save_autoencoder, save_training_state  # noqa: E402
from far_world.training.stop import graceful_stop  # noqa: E402
from far_world.data.clips import FrameDataset  # noqa: E402
from far_world.training.ae_trainer import (  # noqa: E402
    AETrainer,
    held_out_frames,
    reconstruction_psnr,
    reconstruction_sharpness,
)
from far_world.training.distributed import resolve_device  # noqa: E402
from far_world.training.presets import AE_PRESETS, AETrainConfig, apply_overrides, preset, write_config  # noqa: E402
from far_world.training.resume import check_resumable  # noqa: E402
from far_world.training.run_log import RunLog  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, AETrainConfig]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="episode folder with train/ and test/ splits")
    parser.add_argument("--out", required=True, help="run folder (created; resumed if it holds state.pt)")
    parser.add_argument(
        "--allow-imagined", action="store_true",
        help="train on episodes labelled imagined (play.py recordings of a learned world): refused by default",
    )  # fmt: skip
    parser.add_argument("--preset", default="cpu", choices=sorted(AE_PRESETS))
    parser.add_argument("--steps", type=int, help="total optimizer steps (overrides the preset)")
    parser.add_argument("overrides", nargs="*", help="config fields, e.g. lr=1e-3 ae.channels=32,64")
    args = parser.parse_args(argv)
    cfg = apply_overrides(preset(AE_PRESETS, args.preset), args.overrides)
    if args.steps is not None:
        cfg = apply_overrides(cfg, [f"steps={args.steps}"])
    return args, cfg


def split_folder(data: Path, split: str) -> Path:
    """``data/split`` when the dataset is split, else ``data`` itself."""
    return data / split if (data / split).is_dir() else data


def main(argv: list[str] | None = None) -> dict | None:
    args, cfg = parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    device = resolve_device(cfg.device)
    trainer = AETrainer(cfg, FrameDataset(split_folder(data, "train"), seed=cfg.seed, allow_imagined=args.allow_imagined), device)
    state_path = out / "state.pt"
    if state_path.is_file():
        state = load_training_state(state_path)
        check_resumable(state.config, cfg.to_dict())
        trainer.load_training_state(state)
        print(f"resumed from {state_path} at step {trainer.step}")
    write_config(cfg, out / "config.json")
    log = RunLog(out, start_step=trainer.step)

    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="autoencoder", unit="step", dynamic_ncols=True)
    with graceful_stop() as stop:
        while trainer.step < cfg.steps and not stop:
            metrics = trainer.train_step()
            bar.update(1)
            bar.set_postfix(l1=f"{metrics['l1']:.4f}", img_s=f"{metrics['images_per_s']:.0f}")
            if trainer.step % cfg.log_every == 0:
                log.scalars(trainer.step, metrics)
            if trainer.step % cfg.ckpt_every == 0 or trainer.step == cfg.steps or stop:
                save_training_state(state_path, trainer.training_state())
    bar.close()
    if stop:
        print(f"stopped at step {trainer.step} of {cfg.steps}; saved {state_path}: the same command continues the run")
        log.close()
        return None

    trainer.fit_latent_stats()
    test_frames = held_out_frames(split_folder(data, "test"), cfg.eval_frames)
    test_psnr = reconstruction_psnr(trainer.model, test_frames)
    test_sharpness = reconstruction_sharpness(trainer.model, test_frames)
    train_psnr = reconstruction_psnr(trainer.model, held_out_frames(split_folder(data, "train"), cfg.eval_frames))
    with torch.no_grad():
        latents = trainer.model.encode(test_frames)
        start = time.perf_counter()
        trainer.model.decode(latents)
        decode_rate = len(latents) / (time.perf_counter() - start)
    summary = {
        "steps": trainer.step,
        "test_psnr_db": round(test_psnr, 3),
        "train_psnr_db": round(train_psnr, 3),
        "test_sharpness_ratio": round(test_sharpness, 3),
        "test_frames": len(test_frames),
        "decode_images_per_s": round(decode_rate, 1),
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "data": str(data),
    }
    log.scalars(trainer.step, {"psnr_db": test_psnr}, prefix="test")
    log.close()
    save_autoencoder(out / "ae.pt", trainer.model.cpu(), summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"reconstruction PSNR on {len(test_frames)} held-out frames: {test_psnr:.2f} dB (train {train_psnr:.2f} dB), "
          f"sharpness ratio {test_sharpness:.3f}")
    print(f"wrote {out / 'ae.pt'} and {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
