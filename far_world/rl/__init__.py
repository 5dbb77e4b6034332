"""Agents trained inside a learned world and scored in the real one.

    venv = gymnasium.make_vec("FARWorld-v0", num_envs=16, vectorization_mode="vector_entry_point", ckpt=...)
    model = PPO("CnnPolicy", ImaginationVecEnv(venv))
    world = venv.unwrapped.world
    score = evaluate_in_real_world(sb3_policy(model), world.world_spec, episodes=30, world_kwargs=world.world_kwargs)
"""

try:
    import stable_baselines3  # noqa: F401
except ImportError as exc:  # an optional extra: say how to get it rather than fail deep in an import chain
    raise ImportError('far_world.rl needs stable-baselines3: pip install -e ".[rl]"') from exc

from far_world.rl.evaluation import EvalResult, check_real_world_actions, evaluate_in_real_world, random_policy, sb3_policy
from far_world.rl.stats import MeanCI, mean_confidence_interval
from far_world.rl.training import PPOSettings, TrainReport, train_ppo
from far_world.rl.vec_env import ImaginationVecEnv, make_real_vec_env

__all__ = [
    "EvalResult",
    "ImaginationVecEnv",
    "MeanCI",
    "PPOSettings",
    "TrainReport",
    "check_real_world_actions",
    "evaluate_in_real_world",
    "make_real_vec_env",
    "mean_confidence_interval",
    "random_policy",
    "sb3_policy",
    "train_ppo",
]
