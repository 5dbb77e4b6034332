"""Retrain a world's termination head alone and set where it says "ended"; write the tuned world.

    python train/tune_termination.py --ckpt runs/far_doom_hud/released.pt --data data/doom_hg_hud --out OUT.pt

The transformer stays frozen: the head learns from clips of real training frames of which a
quarter end an episode (far_world/training/termination_head.py). Its logit is then shifted so
that the world's decision (probability > 0.5) has the best F1 on the last fifth of the training
episodes, which the head did not learn from; the test split is only read at the end, for the
precision and recall printed (train/evaluate.py --protocol heads reads the same). Everything
else in the checkpoint is kept; its summary records the tuning.
"""

from __future__ import annotations

import argparse
import dataclasses

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
import numpy as np
import torch
from tqdm import tqdm

from far_world.checkpoint import load_world_checkpoint, save_world_checkpoint
from far_world.data.episodes import iter_episodes
from far_world.evaluation.heads import evaluate_heads, read_heads_in_batches
from far_world.training.termination_head import best_logit_shift, encode, fit_termination_head, prior_entropy
from far_world.world import WorldModel

HEAD_PREFIX = "heads.termination."


def validation_readings(world: WorldModel, episodes: list) -> tuple[np.ndarray, np.ndarray]:
    """The head's probabilities and the true ends of every transition of ``episodes``."""
    with tqdm(total=sum(e.num_steps for e in episodes), unit="frame", desc="validation") as bar:
        probs = [r.termination_probs for r in read_heads_in_batches(world, episodes, bar=bar)]
    ended = np.concatenate([np.asarray(e.terminated, bool) for e in episodes])
    return np.concatenate(probs), ended


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the world to tune")
    p.add_argument("--data", required=True, help="its dataset folder, with train/ and test/")
    p.add_argument("--out", required=True, help="where to write the tuned world")
    p.add_argument("--episodes", type=int, default=400, help="training episodes the head learns from")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--min-recall", type=float, default=0.0,
        help="only thresholds that catch this share of the held-out training ends compete (0: F1 alone)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if not 0.0 <= args.min_recall <= 1.0:
        p.error(f"--min-recall is a share of the ends, in [0, 1]; got {args.min_recall}")

    world = WorldModel.load(args.ckpt)
    if world.carried_names:
        raise SystemExit(f"{args.ckpt} carries {world.carried_names}: its termination head reads them; refit it with train/tune_carried.py")
    train = [e for _, e in iter_episodes(f"{args.data}/train")]
    held = max(1, len(train) // 5)
    fit, validation = train[:-held], train[-held:]
    if not any(np.asarray(e.terminated).any() for e in validation):
        raise SystemExit(f"no episode of the last fifth of {args.data}/train ends: nothing to set the threshold on")
    fit = fit[: args.episodes]
    print(f"encoding {len(fit)} training episodes")
    with tqdm(total=args.steps, unit="step", desc="termination head") as bar:
        try:
            losses = fit_termination_head(world, encode(world, fit), args.steps, args.batch_size, args.lr, bar=bar)
        except ValueError as exc:
            raise SystemExit(f"{args.data}/train: {exc}") from exc
    print(f"head trained {args.steps} steps: loss {np.mean(losses[-50:]):.3f} "
          f"(a head that cannot tell ends apart: {prior_entropy():.3f})")
    shift, f1 = best_logit_shift(*validation_readings(world, validation), min_recall=args.min_recall)
    with torch.no_grad():
        world.far.heads.termination[-1].bias += shift
    print(f"logit shift {shift:+.2f}: F1 {f1:.3f} on {len(validation)} held-out training episodes")

    source = load_world_checkpoint(args.ckpt)
    tuned = world.far.state_dict()
    far_state = {k: tuned[k].to(v.dtype) if k.startswith(HEAD_PREFIX) else v for k, v in source.far_state.items()}
    with tqdm(unit="frame", desc="test") as bar:
        report = evaluate_heads(world, f"{args.data}/test", bar=bar)
    tuning = {
        "episodes": len(fit), "steps": args.steps, "min_recall": args.min_recall, "logit_shift": shift,
        "validation_episodes": len(validation), "validation_f1": f1,
        "test_precision": report.termination_precision, "test_recall": report.termination_recall,
    }  # fmt: skip
    summary = {**source.summary, "termination_head_tuning": tuning}
    save_world_checkpoint(args.out, dataclasses.replace(source, far_state=far_state, summary=summary))
    print(f"test: precision {report.termination_precision}, recall {report.termination_recall} "
          f"({report.predicted_terminations} predicted, {report.terminations} real ends); wrote {args.out}")
    return tuning


if __name__ == "__main__":
    main()
