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
The checkpoint is not changed.
"""

from __future__ import annotations

import argparse
import math

import far_world  # noqa: F401, I001  (first: its OpenMP setting precedes torch)
import numpy as np
import torch
import torch.nn.functional as F

from far_world.data.episodes import iter_episodes
from far_world.evaluation.heads import evaluate_heads
from far_world.evaluation.rollouts import actions_into
from far_world.model.far import CONTEXT
from far_world.world import WorldModel

ENDING_SHARE = 0.25  # of each probe batch


def frame_change(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean absolute pixel change (0-255) of the transitions that end an episode and of the others."""
    ending, other = [], []
    for _, episode in iter_episodes(folder):
        change = np.abs(np.diff(np.asarray(episode.frames, np.int16), axis=0)).mean(axis=(1, 2, 3))
        ends = np.asarray(episode.terminated, bool)
        ending += list(change[ends])
        other += list(change[~ends])
    return np.array(ending), np.array(other)


def encode(world: WorldModel, folder: str, limit: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per episode: latents (T,C,h,w), actions into each frame (T,K), ended (T,) bool (frame t ends it)."""
    out = []
    with torch.no_grad():
        for _, episode in list(iter_episodes(folder))[:limit]:
            latents = world.autoencoder.encode(torch.from_numpy(np.array(episode.frames)))
            ended = torch.zeros(len(latents), dtype=torch.bool)
            ended[1:] = torch.from_numpy(np.asarray(episode.terminated, bool))
            out.append((latents, actions_into(world, episode.actions, len(latents)), ended))
    return out


def endings(episodes: list) -> list[tuple[int, int]]:
    """(episode, frame) of every frame that ends an episode."""
    return [(i, int(e[2].nonzero()[0])) for i, e in enumerate(episodes) if e[2].any()]


def probe_batch(
    episodes: list, ends: list[tuple[int, int]], rng: np.random.Generator, size: int, max_frames: int
) -> tuple[torch.Tensor, ...]:
    """Clips of real frames that end at the frame to read, a share of them at an episode's end (``ends``)."""
    length = int(rng.integers(4, max_frames + 1))
    latents, actions, ended = [], [], []
    for row in range(size):
        if row < size * ENDING_SHARE:
            i, last = ends[rng.integers(len(ends))]
        else:
            i = int(rng.integers(len(episodes)))
            last = int(rng.integers(1, len(episodes[i][0])))
        lat, act, end = episodes[i]
        first = max(0, last - length + 1)
        pad = length - (last + 1 - first)  # episodes shorter than the clip repeat their first frame
        latents.append(torch.cat([lat[first : first + 1].expand(pad, *lat.shape[1:]), lat[first : last + 1]]))
        actions.append(torch.cat([act[first : first + 1].expand(pad, *act.shape[1:]), act[first : last + 1]]))
        ended.append(float(end[last]))
    return torch.stack(latents), torch.stack(actions), torch.tensor(ended)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True, help="dataset folder with train/ and test/")
    p.add_argument("--episodes", type=int, default=200, help="training episodes encoded for the probe")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    torch.manual_seed(0)

    ending, other = frame_change(f"{args.data}/test")
    print(f"frames: {len(ending)} ending transitions change the frame by {np.median(ending):.2f} (median); "
          f"{(other < 0.5).mean():.2%} of the {len(other)} others change it by less than 0.5")

    world = WorldModel.load(args.ckpt)
    episodes = encode(world, f"{args.data}/train", args.episodes)
    ends = endings(episodes)
    if not ends:
        raise SystemExit(f"no episode in {args.data}/train ends in a termination")
    head = world.far.heads.termination
    optimizer = torch.optim.Adam(head.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    prior_entropy = -(ENDING_SHARE * math.log(ENDING_SHARE) + (1 - ENDING_SHARE) * math.log(1 - ENDING_SHARE))
    max_frames = world.far.cfg.max_long_frames + world.far.cfg.short_window  # the longest context held
    losses = []
    for step in range(args.steps):
        latents, actions, ended = probe_batch(episodes, ends, rng, args.batch_size, max_frames)
        with torch.no_grad():
            _, features = world.far(latents, actions, torch.full(latents.shape[:2], CONTEXT))
        loss = F.binary_cross_entropy_with_logits(head(features[:, -1]).squeeze(-1), ended)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            print(f"probe step {step}: loss {np.mean(losses[-50:]):.3f} (entropy of the prior {prior_entropy:.3f})", flush=True)

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
