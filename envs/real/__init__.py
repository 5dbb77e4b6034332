"""Real worlds that generate trajectories: 64x64 RGB Gymnasium envs with named discrete actions.

    from far_world.envs.real import make_real_world
    env = make_real_world("doom", seed=0)   # or "maze", "doom:my_way_home", "crafter", "gym:CartPole-v1"
"""

from far_world.envs.real.base import RESOLUTION, RealWorld
from far_world.envs.real.errors import MissingWorldPackageError, UnknownWorldError
from far_world.envs.real.registry import WORLDS, canonical_world_spec, make_real_world, parse_world_spec

__all__ = [
    "RESOLUTION",
    "WORLDS",
    "MissingWorldPackageError",
    "RealWorld",
    "UnknownWorldError",
    "canonical_world_spec",
    "make_real_world",
    "parse_world_spec",
]
