"""Give a trained world carried game variables (doom's health) and a termination head that reads them.

    python train/tune_carried.py --ckpt checkpoints/doom_health_gathering.pt --data data/doom_hg_health --carried health --out OUT.pt

The transformer stays frozen (far_world/training/carried_heads.py). The carried head and a new
termination head learn from the features of real frames (teacher forcing) and of frames the
world drew itself from real context under the true actions, with the values the data recorded
(``extra_<name>``: collect the data with a world that records them). The termination head's
logit is then shifted so that the world's decision (probability > 0.5) has the best F1 on the
last fifth of the training episodes, which the heads did not learn from. The test split is read
only at the end: the heads' errors there, and each ended test episode replayed in the world from
its first frames with the world carrying its own values, to see when it imagines the end
(train/carried_replay.py alone; OUT.carried.json and OUT.replay.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
import numpy as np
import torch
from tqdm import tqdm

from far_world.checkpoint import WorldCheckpoint, load_world_checkpoint, save_world_checkpoint
from far_world.data.episodes import iter_episodes
from far_world.evaluation.carried import replay_ended_episodes, save_replay_plot
from far_world.model.heads import FrameHeads
from far_world.training.carried_heads import (
    FeatureBank, bank_report, drawn_features, encode_carried, fit_carried_heads, read_bank, teacher_forced_features,
)  # fmt: skip
from far_world.training.termination_head import best_logit_shift
from far_world.world import WorldModel

CARRIED_PREFIXES = ("heads.termination.", "heads.carried.")


def with_carried_heads(source: WorldCheckpoint, names: list[str], scale: list[float], start: list[float]) -> WorldCheckpoint:
    """``source`` with carried variables and freshly initialized carried and termination heads."""
    cfg = dataclasses.replace(source.far_config, carried=tuple(names), carried_scale=tuple(scale), carried_start=tuple(start))
    fresh = FrameHeads(cfg.width, carried_scale=cfg.carried_scale).state_dict()
    kept = {k: v for k, v in source.far_state.items() if not k.startswith(CARRIED_PREFIXES)}
    kept.update({f"heads.{k}": v for k, v in fresh.items() if f"heads.{k}".startswith(CARRIED_PREFIXES)})
    return dataclasses.replace(source, far_config=cfg, far_state=kept)


def banks(
    world: WorldModel, episodes: list, context: int, horizon: int, seed: int, desc: str, cache: Path | None = None
) -> FeatureBank:
    """Teacher-forced and drawn features of ``episodes``, read from ``cache`` if it exists, else
    written there: the features depend on the frozen world and the data, not on the heads."""
    if cache is not None and cache.is_file():
        print(f"{desc}: features from {cache}")
        return FeatureBank.load(cache)
    encoded = encode_carried(world, episodes, world.carried_names)
    with tqdm(total=sum(len(e.latents) - 1 for e in encoded), unit="frame", desc=f"{desc}: real frames") as bar:
        real = teacher_forced_features(world, encoded, bar=bar)
    with tqdm(unit="frame", desc=f"{desc}: drawn frames") as bar:
        drawn = drawn_features(world, encoded, context, horizon, np.random.default_rng(seed), bar=bar)
    bank = FeatureBank.concat([real, drawn])
    if cache is not None:
        bank.save(cache)
    return bank


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="the world to give carried variables")
    p.add_argument("--data", required=True, help="its dataset folder, with train/ and test/, recording the variables")
    p.add_argument("--carried", nargs="+", required=True, help="the variables to carry, as the data names them (e.g. health)")
    p.add_argument("--out", required=True, help="where to write the world")
    p.add_argument("--episodes", type=int, default=200, help="training episodes the heads learn from")
    p.add_argument("--test-episodes", type=int, default=64, help="test episodes scored at the end")
    p.add_argument("--context", type=int, default=16, help="real frames before each drawn window")
    p.add_argument("--horizon", type=int, default=8, help="frames drawn per window")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-recall", type=float, default=0.0,
                   help="only thresholds that catch this share of the held-out training ends compete (0: F1 alone)")
    p.add_argument("--drawn-share", type=float, default=None,
                   help="share of the carried head's rows drawn from the drawn frames (default: uniform over all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", help="a folder to keep the features in, and read them from on a rerun "
                   "with the same world, data and settings (e.g. to try other head settings)")
    args = p.parse_args(argv)
    if not 0.0 <= args.min_recall <= 1.0:
        p.error(f"--min-recall is a share of the ends, in [0, 1]; got {args.min_recall}")
    if args.context < 1 or args.horizon < 1:
        p.error("--context and --horizon must be >= 1")

    train = [e for _, e in iter_episodes(f"{args.data}/train")]
    test = [e for _, e in iter_episodes(f"{args.data}/test")][: args.test_episodes]
    missing = sorted({n for e in train[:1] + test[:1] for n in args.carried if n not in e.extras})
    if not train or not test:
        raise SystemExit(f"{args.data} needs episodes in train/ and test/")
    if missing:
        raise SystemExit(f"{args.data} records no {missing}; it records {sorted(train[0].extras)}")
    held = max(1, len(train) // 5)
    fit, validation = train[:-held][: args.episodes], train[-held:]
    values = np.concatenate([np.stack([e.extras[n] for n in args.carried], axis=1) for e in fit])
    scale = [max(1.0, float(np.percentile(np.abs(values[:, i]), 95))) for i in range(len(args.carried))]
    start = [float(np.median([e.extras[n][0] for e in fit])) for n in args.carried]
    print(f"carrying {args.carried}: scale {scale}, start values {start}")

    source = load_world_checkpoint(args.ckpt)
    torch.manual_seed(args.seed)  # the fresh heads' weights
    world = WorldModel(with_carried_heads(source, args.carried, scale, start))
    folder = None if args.features is None else Path(args.features)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    # Features are those of one world file on one dataset with these settings: the name says which.
    ckpt = Path(args.ckpt).resolve()
    key = f"{ckpt}:{ckpt.stat().st_mtime_ns}:{Path(args.data).resolve()}:{args.episodes}:{args.context}:{args.horizon}:{args.seed}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]

    def cached(name: str) -> Path | None:
        return None if folder is None else folder / f"{name}_{digest}.pt"

    fit_bank = banks(world, fit, args.context, args.horizon, args.seed, "training episodes", cached("fit"))
    with tqdm(total=args.steps, unit="step", desc="heads") as bar:
        try:
            losses = fit_carried_heads(
                world.far.heads, fit_bank, args.steps, args.batch_size, args.lr, args.seed, bar, args.drawn_share
            )
        except ValueError as exc:
            raise SystemExit(f"{args.data}/train: {exc}") from exc
    print(f"heads trained {args.steps} steps: loss {np.mean(losses[-100:]):.4f}")

    validation_bank = banks(
        world, validation, args.context, args.horizon, args.seed + 1, "held-out training episodes", cached("validation")
    )
    probs, _ = read_bank(world.far.heads, validation_bank)
    shift, f1 = best_logit_shift(probs, validation_bank.ended.numpy(), min_recall=args.min_recall)
    with torch.no_grad():
        world.far.heads.termination[-1].bias += shift
    print(f"logit shift {shift:+.2f}: F1 {f1:.3f} on {len(validation)} held-out training episodes")

    test_bank = banks(world, test, args.context, args.horizon, args.seed + 2, "test episodes", cached(f"test{args.test_episodes}"))
    report = {
        "test_real_frames": bank_report(world.far.heads, test_bank.where(~test_bank.drawn), args.carried),
        "test_drawn_frames": bank_report(world.far.heads, test_bank.where(test_bank.drawn), args.carried),
    }
    with tqdm(unit="step", desc="imagined episodes") as bar:
        replay = replay_ended_episodes(world, test, args.context, seed=args.seed, bar=bar)
    report["test_imagined_episodes"] = replay.summary

    tuned = world.far.state_dict()
    dtype = next(iter(source.far_state.values())).dtype
    far_state = {k: (tuned[k].to(dtype) if k.startswith(CARRIED_PREFIXES) else v)
                 for k, v in world.checkpoint.far_state.items()}
    tuning = {
        "carried": args.carried, "scale": scale, "start": start, "episodes": len(fit), "steps": args.steps,
        "context": args.context, "horizon": args.horizon, "drawn_share": args.drawn_share,
        "final_loss": float(np.mean(losses[-100:])),
        "logit_shift": shift, "validation_episodes": len(validation), "validation_f1": f1, **report,
    }  # fmt: skip
    summary = {**source.summary, "carried_heads": tuning}
    save_world_checkpoint(args.out, dataclasses.replace(world.checkpoint, far_state=far_state, summary=summary))
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    Path(args.out).with_suffix(".carried.json").write_text(json.dumps(tuning, indent=1))
    print(f"wrote {save_replay_plot(replay, Path(args.out).with_suffix('.replay.png'))}")
    return tuning


if __name__ == "__main__":
    main()
