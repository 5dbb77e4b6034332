"""What a PPO run does besides learning: a progress bar, checkpoints, curve points, real-world evaluations."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize
from tqdm import tqdm

from far_world.rl.curve import REAL_EVAL, TRAIN, CurveLog
from far_world.rl.evaluation import evaluate_in_real_world, sb3_policy
from far_world.files import atomic_write, write_json


class ProgressBar(BaseCallback):
    """tqdm over environment steps, showing the mean return of the last 100 training episodes."""

    def __init__(self, total_steps: int, desc: str) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.desc = desc
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self.total_steps, initial=self.model.num_timesteps, desc=self.desc, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self._bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        episodes = self.model.ep_info_buffer
        if episodes:
            self._bar.set_postfix(ep_return=f"{np.mean([e['r'] for e in episodes]):.1f}")

    def _on_training_end(self) -> None:
        self._bar.close()


def save_checkpoint(model: Any, folder: Path, elapsed_s: float) -> None:
    """``checkpoint.zip`` (policy, optimizer) and ``checkpoint.json`` (steps, time, reward statistics).

    The zip is written first: a run killed between the two writes leaves a JSON whose steps do
    not match the zip, which :func:`load_checkpoint_meta` then ignores.
    """
    atomic_write(folder / "checkpoint.zip", model.save)
    meta: dict[str, Any] = {"num_timesteps": int(model.num_timesteps), "elapsed_s": elapsed_s}
    normalizer = model.get_vec_normalize_env()
    if normalizer is not None:
        rms = normalizer.ret_rms
        meta["reward_rms"] = {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}
    write_json(folder / "checkpoint.json", meta)


def load_checkpoint_meta(folder: Path, num_timesteps: int) -> dict[str, Any]:
    """The sidecar of ``checkpoint.zip`` when it belongs to a model at ``num_timesteps``, else {}."""
    path = folder / "checkpoint.json"
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    return meta if meta.get("num_timesteps") == num_timesteps else {}


def restore_reward_stats(normalizer: VecNormalize, meta: dict[str, Any]) -> None:
    if "reward_rms" in meta:
        rms = meta["reward_rms"]
        normalizer.ret_rms.mean = np.float64(rms["mean"])
        normalizer.ret_rms.var = np.float64(rms["var"])
        normalizer.ret_rms.count = rms["count"]


class PeriodicCheckpoint(BaseCallback):
    """Save every ``every`` steps, at a rollout boundary (after an update, before collecting).

    PPO keeps nothing between rollouts but the model, so a run resumed from such a checkpoint
    loses only the environments' current episodes.
    """

    def __init__(self, folder: Path, every: int, prior_elapsed_s: float = 0.0) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.every = every
        self.prior_elapsed_s = prior_elapsed_s
        self._start = 0.0
        self._next = 0

    def _elapsed_s(self) -> float:
        return self.prior_elapsed_s + time.perf_counter() - self._start

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self._next:
            save_checkpoint(self.model, self.folder, self._elapsed_s())
            self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True


class TrainingCurve(BaseCallback):
    """After each rollout, the mean return of the training episodes that ended in it (raw rewards)."""

    def __init__(self, curve: CurveLog) -> None:
        super().__init__()
        self.curve = curve
        self._returns: list[float] = []

    def _on_step(self) -> bool:
        # VecMonitor puts a finished episode's return and length in info["episode"].
        self._returns += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        return True

    def _on_rollout_end(self) -> None:
        if self._returns:
            self.curve.append(TRAIN, self.model.num_timesteps, mean_return=float(np.mean(self._returns)), episodes=len(self._returns))
        self._returns = []


class RealWorldEvaluation(BaseCallback):
    """Every ``every`` steps (from step 0), play ``episodes`` real episodes with the current policy."""

    def __init__(
        self,
        world_spec: str,
        every: int,
        episodes: int,
        seed: int,
        curve: CurveLog,
        world_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.world_spec = world_spec
        self.world_kwargs = dict(world_kwargs or {})
        self.every = every
        self.episodes = episodes
        self.seed = seed
        self.curve = curve
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = -(-self.model.num_timesteps // self.every) * self.every  # the next multiple, this one included

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps < self._next:
            return
        result = evaluate_in_real_world(
            sb3_policy(self.model), self.world_spec, self.episodes, self.seed, world_kwargs=self.world_kwargs
        )
        summary = result.summary
        self.curve.append(REAL_EVAL, self.model.num_timesteps, **summary.to_dict())
        self.logger.record("real/mean_return", summary.mean)
        self.logger.record("real/mean_length", float(np.mean(result.lengths)))
        self._next = (self.model.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        return True

