"""Can a world's termination head find the episode ends at all? A probe on frozen features.

    python train/probe_termination.py --ckpt checkpoints/doom_health_gathering.pt --data data/doom_hg

Prints two things:
  frames   how much the frame changes at the transitions that end an episode and elsewhere
           (a world whose last frame repeats, as ViZDoom's does, shows a death in the pixels);
  probe    the termination head retrained alone, the transformer frozen, on clips of real frames
           of which a quarter end in a termination; then its precision and recall on the held-out
           episodes (--protocol heads of train/evaluate.py), at that prior and corrected to the
           data's. A loss that stays at the entropy of the prior means the pooled features the
           head reads do not tell an ending transition from another, so no loss weight can.
The checkpoint is not changed (train/tune_termination.py writes a world with such a head).
"""

from __future__ import annotations

import argparse
import math

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
import numpy as np
import torch

from far_world.data.episodes import iter_episodes
from far_world.evaluation.heads import evaluate_heads
from far_world.training.termination_head import ENDING_SHARE, encode, fit_termination_head, prior_entropy
from far_world.world import WorldModel


def frame_change(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute pixel change (0-255) of the transitions that end an episode and of the others."""
    ending, other = [], []
    for _, episode in iter_episodes(folder):
        change = np.abs(np.diff(np.asarray(episode.frames, np.int16), axis=0)).mean(axis=(1, 2, 3))
        ends = np.asarray(episode.terminated, bool)
        ending += list(change[ends])
        other += list(change[~ends])
    return np.array(ending), np.array(other)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True, help="dataset folder with train/ and test/")
    p.add_argument("--episodes", type=int, default=200, help="training episodes encoded for the probe")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()

    ending, other = frame_change(f"{args.data}/test")
    print(f"frames: {len(ending)} ending transitions change the frame by {np.median(ending):.2f} (median); "
          f"{(other < 0.5).mean():.2%} of the {len(other)} others change it by less than 0.5")

    world = WorldModel.load(args.ckpt)
    episodes = encode(world, [e for _, e in iter_episodes(f"{args.data}/train")][: args.episodes])
    try:
        losses = fit_termination_head(world, episodes, args.steps, args.batch_size, args.lr)
    except ValueError as exc:
        raise SystemExit(f"{args.data}/train: {exc}") from exc
    for step in range(0, args.steps, 50):
        print(f"probe steps {step}-{min(step + 50, args.steps) - 1}: loss {np.mean(losses[step : step + 50]):.3f} "
              f"(entropy of the prior {prior_entropy():.3f})")
    head = world.far.heads.termination

    transitions = sum(len(e[2]) - 1 for e in episodes)
    data_rate = sum(int(e[2].sum()) for e in episodes) / transitions
    shift = math.log(ENDING_SHARE / (1 - ENDING_SHARE)) - math.log(data_rate / (1 - data_rate))
    with torch.no_grad():
        for label, correction in (("the probe's prior", 0.0), ("the data's prior", shift)):
            head[-1].bias -= correction
            r = evaluate_heads(world, f"{args.data}/test")
            head[-1].bias += correction
            print(f"probe at {label}: precision {r.termination_precision}, recall {r.termination_recall} "
                  f"({r.predicted_terminations} predicted, {r.terminations} real ends); "
                  f"mean p at ends {r.mean_probability_at_end:.3f}, elsewhere {r.mean_probability_elsewhere:.3f}")


if __name__ == "__main__":
    main()
