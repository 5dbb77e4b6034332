"""World specs -> real worlds. World modules import lazily: each needs its own (optional) package."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from far_world.envs.real.base import RealWorld
from far_world.envs.real.errors import MissingWorldPackageError, UnknownWorldError


@dataclass(frozen=True)
class WorldEntry:
    module: str  # far_world.envs.real.<module>
    cls: str
    packages: dict[str, str]  # import name -> pip package name, for the missing-package message
    argument: str | None  # the keyword the spec's ":ARG" fills, None when the world takes none
    default_argument: str | None = None
    # The default argument is left out of the canonical spec ('maze', not 'maze:9x9'), so that
    # datasets and checkpoints labelled before the argument existed keep their label.
    implicit_default: bool = False


WORLDS: dict[str, WorldEntry] = {
    "maze": WorldEntry("maze_world", "MemoryMazeWorld", {"memory_maze": "memory-maze", "dm_control": "dm-control",
                                                         "mujoco": "mujoco", "labmaze": "labmaze"},
                       "size", "9x9", implicit_default=True),
    "doom": WorldEntry("doom_world", "DoomWorld", {"vizdoom": "vizdoom"}, "scenario", "health_gathering"),
    "crafter": WorldEntry("crafter_world", "CrafterWorld", {"crafter": "crafter"}, None),
    # The game runs in its own interpreter (envs/real/minecraft_venv.py): nothing to import here.
    "minecraft": WorldEntry("minecraft_world", "MinecraftWorld", {}, None),
    "gym": WorldEntry("gym_world", "GymnasiumWorld", {}, "env_id"),
}
SPEC_HELP = "maze, maze:SIZE (9x9 to 15x15), doom, doom:SCENARIO, crafter, minecraft, gym:ENV_ID"


def parse_world_spec(spec: str) -> tuple[str, str | None]:
    """'doom' -> ('doom', 'health_gathering'); 'gym:CartPole-v1' -> ('gym', 'CartPole-v1'); 'maze' -> ('maze', None)."""
    name, sep, argument = spec.strip().partition(":")
    entry = WORLDS.get(name)
    if entry is None:
        raise UnknownWorldError(f"unknown world '{spec}'; worlds: {SPEC_HELP}")
    if entry.argument is None and sep:
        raise UnknownWorldError(f"world '{name}' takes no ':{argument}' (worlds: {SPEC_HELP})")
    if entry.argument is not None:
        argument = argument or entry.default_argument
        if not argument:
            raise UnknownWorldError(f"world '{name}' needs a name after the colon, e.g. {name}:CartPole-v1")
    return name, argument or None


def canonical_world_spec(spec: str) -> str:
    """The one spelling of a spec that ``meta.json`` records: 'doom' -> 'doom:health_gathering', 'maze:9x9' -> 'maze'."""
    name, argument = parse_world_spec(spec)
    entry = WORLDS[name]
    if argument is None or (entry.implicit_default and argument == entry.default_argument):
        return name
    return f"{name}:{argument}"


def make_real_world(spec: str, seed: int | None = None, **kwargs: Any) -> RealWorld:
    """Build the real world a spec names ('maze', 'doom', 'doom:SCENARIO', 'crafter', 'minecraft', 'gym:ENV_ID').

    ``seed`` seeds the world's first episode; ``kwargs`` go to the world (e.g. ``render_mode``,
    doom's and gym's ``frame_skip``). Raises :class:`UnknownWorldError` for a spec that names
    nothing and :class:`MissingWorldPackageError` when the world's package is not installed.
    """
    name, argument = parse_world_spec(spec)
    entry = WORLDS[name]
    try:
        module = importlib.import_module(f"far_world.envs.real.{entry.module}")
    except ModuleNotFoundError as exc:  # world modules import nothing beyond the core but their world's packages
        root = (exc.name or "").split(".")[0]
        raise MissingWorldPackageError(name, entry.packages.get(root, root)) from exc
    if entry.argument is not None:
        kwargs[entry.argument] = argument
    try:
        return getattr(module, entry.cls)(seed=seed, **kwargs)
    except TypeError as exc:
        raise TypeError(f"world '{name}': {exc}") from exc
