"""The VecEnvs agents train on: the learned world (native vector FARWorld-v0) and, for reference, the real one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from far_world.envs.far_world_vector import FARWorldVectorEnv
from far_world.envs.real import make_real_world


class ImaginationVecEnv(VecEnv):
    """SB3 VecEnv over a :class:`FARWorldVectorEnv`: every world steps in one batched forward pass.

    SB3 expects same-step autoreset: the step that ends an episode returns the next episode's
    first frame, with the last frame in ``info["terminal_observation"]``. Gymnasium's default
    (next step) would hand SB3 one transition per episode whose action is ignored and whose
    reward is 0, so the adapter switches the native env to same-step autoreset and only
    translates its results; the native env is reset and stepped through here alone.

    Episodes end when the world model's termination head fires (``terminated``) or after
    ``max_episode_steps`` of the native env (truncated). ``info["TimeLimit.truncated"]`` is set
    where an episode was truncated and did not terminate, as SB3's own wrappers do: SB3
    bootstraps the value there, since an imagination horizon is not a real end.
    """

    def __init__(self, venv: gymnasium.vector.VectorEnv) -> None:
        native = venv.unwrapped
        if not isinstance(native, FARWorldVectorEnv):
            raise TypeError(f"ImaginationVecEnv wraps FARWorld-v0's native vector env, got {type(native).__name__}")
        native.set_autoreset_mode(AutoresetMode.SAME_STEP)
        self.venv = native
        self._obs = np.zeros((native.num_envs, *native.single_observation_space.shape), np.uint8)
        self._actions: np.ndarray | None = None
        super().__init__(native.num_envs, native.single_observation_space, native.single_action_space)

    def reset(self) -> VecEnvObs:
        # One generator drives all worlds, so only the first seed SB3 hands out is used.
        obs, _ = self.venv.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        self._obs = obs
        return obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, *self.action_space.shape)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async() before step_wait()")
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"TimeLimit.truncated": bool(cut and not ended)} for cut, ended in zip(truncated, terminated)
        ]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
        self._obs = obs
        return obs.copy(), rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self._obs.copy())

    # The worlds share one native env, so attributes and methods live once for all indices.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_real_vec_env(
    world_spec: str, num_envs: int, seed: int = 0, world_kwargs: Mapping[str, Any] | None = None
) -> VecEnv:
    """``num_envs`` copies of a real world (seeds seed..seed+num_envs-1), stepped in turn in this process.

    In-process stepping suits doom (thousands of steps/s); each world ends its own episodes.
    """
    kwargs = dict(world_kwargs or {})
    return DummyVecEnv([partial(make_real_world, world_spec, seed=seed + i, **kwargs) for i in range(num_envs)])
