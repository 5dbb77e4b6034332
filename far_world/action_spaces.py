"""Action spaces as checkpoints and ``meta.json`` store them, decoded and checked in one place.

The stored form is a small dict: ``{"type": "discrete", "n": 6}`` or
``{"type": "multi_discrete", "nvec": [2, 3]}``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

DISCRETE = "discrete"
MULTI_DISCRETE = "multi_discrete"


def nvec_from_spec(spec: dict[str, Any]) -> tuple[int, ...]:
    """Classes per action component: ``(n,)`` for discrete, ``nvec`` for multi-discrete."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == DISCRETE:
        return (int(spec["n"]),)
    if kind == MULTI_DISCRETE:
        return tuple(int(n) for n in spec["nvec"])
    raise ValueError(f"unsupported action space {spec!r}: expected type '{DISCRETE}' or '{MULTI_DISCRETE}'")


def space_from_spec(spec: dict[str, Any]) -> gymnasium.spaces.Discrete | gymnasium.spaces.MultiDiscrete:
    """The Gymnasium space a stored action-space dict describes."""
    nvec = nvec_from_spec(spec)
    if spec["type"] == DISCRETE:
        return gymnasium.spaces.Discrete(nvec[0])
    return gymnasium.spaces.MultiDiscrete(np.asarray(nvec, dtype=np.int64))


def spec_from_space(space: gymnasium.spaces.Space) -> dict[str, Any]:
    """The stored dict of a Discrete or MultiDiscrete space (Discrete must start at 0)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"a Discrete action space must start at 0, got start={space.start}")
        return {"type": DISCRETE, "n": int(space.n)}
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        return {"type": MULTI_DISCRETE, "nvec": [int(n) for n in np.asarray(space.nvec).ravel()]}
    raise ValueError(f"only Discrete and MultiDiscrete action spaces are supported, got {space}")


def action_count(spec: dict[str, Any]) -> int:
    """How many distinct actions the space holds (the product of the components' classes)."""
    return int(np.prod(nvec_from_spec(spec)))


def check_actions(space: gymnasium.spaces.Space, actions: Any) -> np.ndarray:
    """``actions`` as int64 if ``space`` holds them, else ValueError.

    Integers only, as Gymnasium's ``Discrete.contains`` decides: a float such as 2.5 (or 2.0)
    is refused rather than truncated to a neighbouring action.
    """
    arr = np.asarray(actions)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"action {actions!r} is not an integer: the action space {space} holds integers only")
    arr = arr.astype(np.int64)
    if not space.contains(arr.astype(space.dtype)):
        raise ValueError(f"action {actions!r} is outside the action space {space}")
    return arr
