"""Fine-tune a world's decoder on the latents its model draws; write the world with that decoder.

    python train/tune_decoder.py --ckpt checkpoints/maze.pt --data data/maze_j --out runs/dec_maze

Windows of the training split (``--context`` real frames, then ``--horizon`` frames drawn with
the true actions, as in free play) give pairs of (the model's latent, the true frame); the decoder
alone learns to draw those latents, against the true frames (``--drawn-weight``) or as frames a
critic takes for real (``--adversarial-weight``), with real frames in every batch so that
reconstructions are kept (far_world/training/decoder_tuning.py). The encoder, the latent
statistics and the transformer are untouched, so the world plays exactly as fast as before.

Writes OUT/pairs.npz and OUT/test_pairs.npz (reused when the run is resumed; copy them into a new
run folder that would draw the same pairs), OUT/state.pt every ``--ckpt-every`` steps and on
Ctrl-C (rerun the same command to continue), OUT/metrics.jsonl, and at the end OUT/world.pt and
OUT/summary.json, with the decoder's scores before and after on the test split's windows (pairs
drawn the same way) and on its real frames. docs/RESULTS.md has what each loss did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
import numpy as np
import torch
from tqdm import tqdm

from far_world.checkpoint import (
    TrainingState, capture_rng_state, load_training_state, load_world_checkpoint, restore_rng_state,
    save_training_state, save_world_checkpoint,
)  # fmt: skip
from far_world.evaluation.rollouts import load_windows
from far_world.files import atomic_write, write_json
from far_world.training.ae_trainer import held_out_frames
from far_world.training.decoder_tuning import DecoderPairs, DecoderTuner, decoder_scores, draw_pairs
from far_world.training.run_log import RunLog
from far_world.training.stop import graceful_stop
from far_world.world import WorldModel


def pairs_of(world: WorldModel, folder: str, args: argparse.Namespace, windows: int, cache: Path) -> DecoderPairs:
    """The pairs of ``windows`` windows of ``folder``, read from ``cache`` if it holds those."""
    recipe = {"ckpt": str(args.ckpt), "folder": folder, "windows": windows, "context": args.context,
              "horizon": args.horizon, "seed": args.seed}  # fmt: skip
    drawn_by = np.array(json.dumps(recipe, sort_keys=True))
    if cache.is_file():
        with np.load(cache) as f:
            if str(f["drawn_by"]) != str(drawn_by):
                raise SystemExit(f"{cache} holds pairs drawn otherwise ({f['drawn_by']}); remove it or use another --out")
            return DecoderPairs(f["latents"], f["frames"], f["horizons"])
    per_episode = max(1, -(-windows // max(1, len(list(Path(folder).glob("*.npz"))))))
    cut = load_windows(folder, args.context, args.horizon, max_windows=windows, per_episode=per_episode, seed=args.seed)
    with tqdm(total=len(cut) * args.horizon, unit="frame", desc=f"drawing {Path(folder).name} pairs") as bar:
        pairs = draw_pairs(world, cut, args.batch_rollouts, args.seed, bar)
    arrays = {"latents": pairs.latents, "frames": pairs.frames, "horizons": pairs.horizons, "drawn_by": drawn_by}
    atomic_write(cache, lambda fh: np.savez(fh, **arrays))
    return pairs


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the world whose decoder to tune")
    p.add_argument("--data", required=True, help="its dataset folder, with train/ and test/")
    p.add_argument("--out", required=True, help="run folder (resumed if it holds state.pt)")
    p.add_argument("--windows", type=int, default=768, help="training windows to draw pairs from")
    p.add_argument("--test-windows", type=int, default=128, help="test windows for the scores")
    p.add_argument("--context", type=int, default=16, help="real frames before each window's drawn ones")
    p.add_argument("--horizon", type=int, default=8, help="frames drawn per window")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32, help="pairs a step (plus real frames, --real-share)")
    p.add_argument("--real-share", type=float, default=0.5, help="real frames a step, as a share of --batch-size")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--gradient-weight", type=float, default=0.5, help="weight of the Sobel-gradient L1 (0: pixels only)")
    p.add_argument("--drawn-weight", type=float, default=0.0, help="weight of the drawn frames' loss against the true ones")
    p.add_argument("--adversarial-weight", type=float, default=0.01, help="weight of the critic's verdict (0: no critic)")
    p.add_argument("--critic-lr", type=float, default=2e-4)
    p.add_argument("--batch-rollouts", type=int, default=32, help="windows rolled out together")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("windows", "test_windows", "context", "horizon", "steps", "batch_size", "batch_rollouts", "ckpt_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("real_share", "drawn_weight", "adversarial_weight"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")

    missing = [split for split in ("train", "test") if not Path(args.data, split).is_dir()]
    if missing:
        p.error(f"--data {args.data} has no {' or '.join(missing)} folder of episodes (train/collect.py writes both)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = WorldModel.load(args.ckpt)
    torch.manual_seed(args.seed)
    train_pairs = pairs_of(world, f"{args.data}/train", args, args.windows, out / "pairs.npz")
    test_pairs = pairs_of(world, f"{args.data}/test", args, args.test_windows, out / "test_pairs.npz")
    real_train = held_out_frames(f"{args.data}/train", 8192).numpy()
    real_test = held_out_frames(f"{args.data}/test", 1024).numpy()
    before = decoder_scores(world.autoencoder, test_pairs, real_test)

    ae = world.autoencoder
    tuner = DecoderTuner(
        ae, train_pairs, real_train, args.steps, args.lr, args.batch_size, args.real_share, args.gradient_weight,
        args.drawn_weight, args.adversarial_weight, args.critic_lr, seed=args.seed,
    )  # fmt: skip
    state_path = out / "state.pt"
    if state_path.is_file():
        state = load_training_state(state_path)
        ae.load_state_dict(state.model)
        tuner.load_state_dict(state.extra)
        restore_rng_state(state.rng)
        print(f"resuming {out} at step {tuner.step}")

    def save_state() -> None:
        state = TrainingState(
            step=tuner.step, model={k: v.detach().clone() for k, v in ae.state_dict().items()},
            optimizer=tuner.optimizer.state_dict(), rng=capture_rng_state(), config=vars(args), extra=tuner.state_dict(),
        )  # fmt: skip
        save_training_state(state_path, state)

    log = RunLog(out, start_step=tuner.step)
    with graceful_stop() as stop, tqdm(total=args.steps, initial=tuner.step, unit="step", desc="decoder") as bar:
        while tuner.step < args.steps:
            metrics = tuner.train_step()
            bar.update(1)
            bar.set_postfix(drawn=f"{metrics['drawn_loss']:.4f}", real=f"{metrics['reconstruction_loss']:.4f}")
            if tuner.step % 20 == 0:
                log.scalars(tuner.step, metrics)
            if tuner.step % args.ckpt_every == 0 or stop:
                save_state()
            if stop:
                log.close()
                raise SystemExit(f"stopped at step {tuner.step} ({stop.signal_name}); rerun the same command to continue")
    log.close()
    save_state()

    after = decoder_scores(ae, test_pairs, real_test)
    source = load_world_checkpoint(args.ckpt)
    ae_state = {k: v.detach().cpu().to(source.ae_state[k].dtype) for k, v in ae.state_dict().items()}
    tuning = {
        "source": str(args.ckpt), "data": str(args.data), "train_pairs": len(train_pairs), "test_pairs": len(test_pairs),
        **{k: v for k, v in vars(args).items() if k not in ("ckpt", "data", "out")},
        "test_before": before, "test_after": after,
    }  # fmt: skip
    summary = {**source.summary, "decoder_tuning": tuning}
    save_world_checkpoint(out / "world.pt", dataclasses.replace(source, ae_state=ae_state, summary=summary))
    write_json(out / "summary.json", tuning)
    print(json.dumps({"before": before, "after": after}, indent=1))
    print(f"wrote {out / 'world.pt'}")
    return tuning


if __name__ == "__main__":
    main()
