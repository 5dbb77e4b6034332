"""Does the model follow its actions? The same contexts rolled out with three action streams.

  true      the actions the real agent took: the rollout should match the real future
  shuffled  another window's future actions (a derangement of the windows)
  null      the null action (the model's unconditional prediction of the future)

Only the future actions differ; contexts, seeds and therefore the noise drawn are the same.
A model that ignores actions scores the same with all three: the PSNR gap true - shuffled
per horizon is the signal. An inverse-dynamics model adds a pixel-free check: does it read
the given actions back from the generated frames as often as from real ones?
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from far_world.evaluation.fidelity import HorizonScores
from far_world.evaluation.inverse_dynamics import InverseDynamics, accuracy, chance_accuracy, rollout_pairs
from far_world.evaluation.rollouts import EvalWindows, autoencoder_reconstruction, null_actions, rollout
from far_world.world import WorldModel


def shuffled_actions(actions: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each window gets another window's future actions (a derangement of the windows)."""
    n = len(actions)
    if n < 2:
        raise ValueError("shuffling actions needs at least two windows")
    shift = 1 + int(np.random.default_rng(seed).integers(n - 1))
    return actions[(np.arange(n) + shift) % n]


# The floor's horizons: the gap is read over the first 8 predicted frames, where the action taken
# still decides most of what is in view.
GAP_HORIZONS = 8


def early_gap(actions_metrics: dict, horizons: int = GAP_HORIZONS) -> float:
    """Mean true-vs-shuffled PSNR gap (dB) over horizons 1..``horizons`` of an action protocol's
    metrics (``metrics.json``'s "actions")."""
    return float(np.mean(actions_metrics["psnr_gap_shuffled"][:horizons]))


@dataclass
class ActionReport:
    horizon: int
    windows: int
    scores: dict[str, HorizonScores] = field(default_factory=dict)
    # IDM accuracy per source of frame pairs, against the actions those frames were made with.
    idm_accuracy: dict[str, float] = field(default_factory=dict)

    def gap(self, other: str) -> list[float]:
        """PSNR of the true-action rollout minus that of ``other``, per horizon (dB)."""
        return (np.array(self.scores["true"].psnr) - np.array(self.scores[other].psnr)).tolist()

    def to_dict(self) -> dict:
        return {
            "horizon": self.horizon,
            "windows": self.windows,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
            "psnr_gap_shuffled": self.gap("shuffled"),
            "psnr_gap_null": self.gap("null"),
            "mean_psnr_gap_shuffled": float(np.mean(self.gap("shuffled"))),
            "mean_psnr_gap_null": float(np.mean(self.gap("null"))),
            "idm_accuracy": self.idm_accuracy,
        }


def evaluate_action_following(
    world: WorldModel,
    windows: EvalWindows,
    true_rollout: np.ndarray | None = None,
    idm: InverseDynamics | None = None,
    seed: int = 0,
    batch_size: int = 8,
    bar: tqdm | None = None,
) -> ActionReport:
    """PSNR/SSIM per horizon with true, shuffled and null actions, and the IDM's accuracies.

    ``true_rollout`` (N, Hz, H, W, 3): the true-action rollout if already made (fidelity's).
    """
    truth, given = windows.future_frames, windows.future_actions
    horizon = truth.shape[1]
    shuffled = shuffled_actions(given, seed)
    if true_rollout is None:
        true_rollout = rollout(world, windows, seed=seed, batch_size=batch_size, bar=bar)
    rollouts = {
        "true": true_rollout,
        "shuffled": rollout(world, windows, shuffled, seed=seed, batch_size=batch_size, bar=bar),
        "null": rollout(world, windows, null_actions(world, len(windows), horizon), seed=seed, batch_size=batch_size, bar=bar),
    }
    report = ActionReport(horizon=horizon, windows=len(windows))
    for name, frames in rollouts.items():
        report.scores[name] = HorizonScores.of(truth, frames)
    if idm is not None:
        k = len(idm.action_nvec)
        flat_given, flat_shuffled = given.reshape(-1, k), shuffled.reshape(-1, k)
        ctx = windows.context_frames
        reconstructed_last = autoencoder_reconstruction(world, ctx[:, -1:])
        report.idm_accuracy = {
            "real": accuracy(idm, *rollout_pairs(ctx, truth), flat_given),
            "autoencoder": accuracy(idm, *rollout_pairs(reconstructed_last, autoencoder_reconstruction(world, truth)), flat_given),
            "model_true": accuracy(idm, *rollout_pairs(ctx, rollouts["true"]), flat_given),
            "model_shuffled": accuracy(idm, *rollout_pairs(ctx, rollouts["shuffled"]), flat_shuffled),
            "chance": chance_accuracy(flat_given, k),
        }
    return report
