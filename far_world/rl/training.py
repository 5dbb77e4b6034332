"""PPO on pixels, resumable: the same recipe trains an agent in imagination and in the real world."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

from far_world.rl.callbacks import (
    PeriodicCheckpoint,
    ProgressBar,
    TrainingCurve,
    load_checkpoint_meta,
    restore_reward_stats,
    save_checkpoint,
)
from far_world.rl.curve import CurveLog
from far_world.files import atomic_write


@dataclass
class PPOSettings:
    """PPO with the usual settings for Atari-like pixel games; CnnPolicy is the nature CNN at 64x64.

    ``n_steps`` x num_envs transitions make one rollout; ``batch_size`` should divide that.
    """

    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 4
    learning_rate: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    features_dim: int = 512
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainReport:
    """Where a run ended: environment steps done, training wall time over all sessions, resume point."""

    steps: int
    wall_s: float
    resumed_from: int

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "wall_s": round(self.wall_s, 1), "resumed_from": self.resumed_from,
                "steps_per_s": round(self.steps / self.wall_s, 1) if self.wall_s > 0 else None}


def wrap_for_training(env: VecEnv, gamma: float) -> VecNormalize:
    """Episode statistics on raw rewards, then reward normalization.

    Reward scales differ by world and by learned reward head (doom health_gathering: +4 a step
    alive, -100 at death), and PPO's value loss is only well scaled when returns are near 1.
    Observations stay raw uint8: the CNN scales them to [0, 1] itself.
    """
    return VecNormalize(VecMonitor(env), norm_obs=False, norm_reward=True, gamma=gamma)


def new_ppo(env: VecEnv, settings: PPOSettings) -> PPO:
    return PPO(
        "CnnPolicy", env,
        n_steps=settings.n_steps, batch_size=settings.batch_size, n_epochs=settings.n_epochs,
        learning_rate=settings.learning_rate, gamma=settings.gamma, gae_lambda=settings.gae_lambda,
        clip_range=settings.clip_range, ent_coef=settings.ent_coef, vf_coef=settings.vf_coef,
        policy_kwargs={"features_extractor_kwargs": {"features_dim": settings.features_dim}},
        seed=settings.seed, device=settings.device, verbose=0,
    )  # fmt: skip


def train_ppo(
    env: VecEnv,
    total_steps: int,
    run_dir: str | Path,
    settings: PPOSettings,
    checkpoint_every: int,
    callbacks: list[BaseCallback] | None = None,
    desc: str = "PPO",
) -> tuple[PPO, TrainReport]:
    """Train a CnnPolicy PPO agent on ``env`` to ``total_steps`` environment steps.

    Writes ``run_dir/{checkpoint.zip, checkpoint.json}`` every ``checkpoint_every`` steps and at
    the end, the final agent ``run_dir/agent.zip``, TensorBoard logs ``run_dir/tb`` and curve
    points ``run_dir/curve.jsonl``. A run folder with a checkpoint resumes from it; one already
    at ``total_steps`` only loads. Steps are done in whole rollouts, so a run may end past
    ``total_steps`` by less than one rollout.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    wrapped = wrap_for_training(env, settings.gamma)
    curve = CurveLog(run_dir / "curve.jsonl")
    checkpoint = run_dir / "checkpoint.zip"
    if checkpoint.is_file():
        model = PPO.load(checkpoint, env=wrapped, device=settings.device)
        meta = load_checkpoint_meta(run_dir, model.num_timesteps)
        restore_reward_stats(wrapped, meta)
        curve.truncate(model.num_timesteps)
        prior_elapsed = float(meta.get("elapsed_s", 0.0))
    else:
        model = new_ppo(wrapped, settings)
        prior_elapsed = 0.0
    resumed_from = int(model.num_timesteps)
    model.set_logger(configure(str(run_dir / "tb"), ["tensorboard"]))

    saver = PeriodicCheckpoint(run_dir, checkpoint_every, prior_elapsed)
    remaining = total_steps - model.num_timesteps
    if remaining > 0:
        every = [ProgressBar(total_steps, desc), saver, TrainingCurve(curve), *(callbacks or [])]
        start = time.perf_counter()
        # reset_num_timesteps=False: SB3 then counts the remaining steps on top of the loaded ones.
        model.learn(remaining, callback=CallbackList(every), reset_num_timesteps=False)
        elapsed = prior_elapsed + time.perf_counter() - start
        save_checkpoint(model, run_dir, elapsed)
    else:
        elapsed = prior_elapsed
    atomic_write(run_dir / "agent.zip", model.save)
    return model, TrainReport(int(model.num_timesteps), elapsed, resumed_from)
