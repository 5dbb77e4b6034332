"""The ``meta.json`` of a collected dataset, and the check that a rerun adds to the same dataset."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from far_world.data.episodes import DatasetMeta, read_meta


class DatasetMismatchError(ValueError):
    """An output folder that already holds a different dataset (other world, seed, policy, ...)."""


def settings_info(steps: int, test_fraction: float, world_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What else decides the episodes' content, for ``meta.info``: steps per episode, the split
    fraction, the world's keyword arguments (round-tripped through JSON, so that it compares
    equal to the same dict read back from disk)."""
    return json.loads(json.dumps({"steps": steps, "test_fraction": test_fraction, "world_kwargs": world_kwargs}))


def build_meta(description: dict[str, Any], policy: str, seed: int, info: dict[str, Any]) -> DatasetMeta:
    """DatasetMeta from a worker's world description and the run's settings."""
    return DatasetMeta(
        world=description["world"],
        action_names=list(description["action_names"]),
        action_space=dict(description["action_space"]),
        resolution=list(description["resolution"]),
        frame_skip=int(description["frame_skip"]),
        policy=policy,
        seed=seed,
        extras=list(description["extras"]),
        info=info,
    )


def existing_meta(out: str | Path) -> DatasetMeta | None:
    path = Path(out) / "meta.json"
    return read_meta(out) if path.is_file() else None


def _differences(existing: DatasetMeta, new: dict[str, Any]) -> list[str]:
    found = [f"{name}: {getattr(existing, name)!r} on disk, {value!r} now"
             for name, value in new.items() if name != "info" and getattr(existing, name) != value]
    found += [f"{key}: {existing.info.get(key)!r} on disk, {value!r} now"
              for key, value in new.get("info", {}).items() if existing.info.get(key) != value]
    return found


def _raise_if_different(existing: DatasetMeta | None, new: dict[str, Any], out: str | Path) -> None:
    if existing is None:
        return
    if existing.world != new["world"]:
        raise DatasetMismatchError(
            f"{out} holds a '{existing.world}' dataset (meta.json); this run collects '{new['world']}'. Use another --out."
        )
    differences = _differences(existing, new)
    if differences:
        raise DatasetMismatchError(
            f"{out} holds a dataset collected with other settings ({'; '.join(differences)}): "
            "rerun with the same settings to resume or grow it, or use another --out."
        )


def check_settings(
    existing: DatasetMeta | None, world: str, policy: str, seed: int, info: dict[str, Any], out: str | Path
) -> None:
    """Fail fast, before any worker starts, when ``out`` holds another world or other settings."""
    _raise_if_different(existing, {"world": world, "policy": policy, "seed": seed, "info": info}, out)


def check_compatible(existing: DatasetMeta | None, new: DatasetMeta, out: str | Path) -> None:
    """Raise :class:`DatasetMismatchError` unless ``new`` describes the dataset already in ``out``
    (the world as a worker built it: action names and space, resolution, frame skip, extras)."""
    _raise_if_different(existing, asdict(new), out)
