"""Exploration policies that choose a world's actions while collecting trajectories.

A world model learns only the dynamics its data shows: uniform random actions jitter in place,
so ``persistent`` repeats each action for a few steps (and favours moving), and ``retrace``
also walks back along its own path, so that the data holds revisits with long gaps between
them, the situations long-term memory is for. ``retrace_jitter`` keeps the revisits but holds
actions for at most two steps and takes a random action on a quarter of the way back: when the
last frames already show which way the agent moves, a model can predict the next frame without
reading the action, so less predictable actions teach action following. ``minecraft`` plays the
Minecraft world (``minecraft_policy.py``): walking, looking around, climbing, digging, building and
coming back to where it has been. Every random choice
comes from the ``numpy.random.Generator`` a policy is given: an episode's actions are a function
of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from far_world.collection.minecraft_policy import MinecraftExplorer


class Policy(Protocol):
    def reset(self, info: dict[str, Any]) -> None:
        """Start an episode; ``info`` is the world's reset info."""

    def act(self, info: dict[str, Any]) -> int:
        """The next action index, given the world's latest ``info``."""


def movement_weights(
    action_names: Sequence[str], travel: float = 3.0, turn: float = 1.5, noop: float = 0.25
) -> np.ndarray:
    """Sampling weights (A,) that favour moving: actions that travel (anything with forward,
    crafter's move_*) most, turns, sidesteps and backward next, noop least, everything else 1
    (crafter's 'do', doom's 'attack' stay frequent enough to matter)."""
    weights = []
    for name in action_names:
        parts = name.split("+")
        if name == "noop":
            weights.append(noop)
        elif "forward" in parts or any(p.startswith("move_") for p in parts):
            weights.append(travel)
        elif any(p in ("left", "right", "backward") or p.startswith("strafe_") for p in parts):
            weights.append(turn)
        else:
            weights.append(1.0)
    return np.asarray(weights, np.float64)


class UniformPolicy:
    """A fresh uniformly random action every step: the baseline the others are measured against."""

    def __init__(self, action_names: Sequence[str], rng: np.random.Generator) -> None:
        self.num_actions = len(action_names)
        self.rng = rng

    def reset(self, info: dict[str, Any]) -> None:
        pass

    def act(self, info: dict[str, Any]) -> int:
        return int(self.rng.integers(self.num_actions))


class PersistentRandomPolicy:
    """Random actions, each held for 1..max_repeat steps (uniform), drawn with :func:`movement_weights`."""

    def __init__(self, action_names: Sequence[str], rng: np.random.Generator, max_repeat: int = 6) -> None:
        if max_repeat < 1:
            raise ValueError(f"max_repeat must be >= 1, got {max_repeat}")
        weights = movement_weights(action_names)
        self.probs = weights / weights.sum()
        self.max_repeat = max_repeat
        self.rng = rng
        self._action = 0
        self._left = 0

    def reset(self, info: dict[str, Any]) -> None:
        self._left = 0

    def act(self, info: dict[str, Any]) -> int:
        if self._left == 0:
            self._action = int(self.rng.choice(len(self.probs), p=self.probs))
            self._left = int(self.rng.integers(1, self.max_repeat + 1))
        self._left -= 1
        return self._action


STEER_ACTIONS = ("forward", "left", "right", "forward+left", "forward+right")


class RetracePolicy:
    """Wander, then walk back along the trail to a random earlier point, and branch off from there.

    While wandering (persistent random actions for ``wander_steps`` steps) the policy drops a
    waypoint whenever the agent is ``spacing`` cells from the last one; the trail is a path the
    agent has walked, so it is free of walls. Then it picks a random earlier waypoint (uniform
    over the whole trail, so revisit gaps range from seconds to the episode's length) and steers
    back to it one waypoint at a time from ``info["agent_pos"]`` and ``info["agent_dir"]``,
    turning in place when the next waypoint is far off its heading. The trail is cut at the point
    reached, so the next wander branches off it: a depth-first exploration of the maze.
    Closed-loop steering (not replaying reversed actions) is what keeps it on the trail: the
    rolling ball slides, and bumps into walls are not reversible. Measured on 1000-step 9x9
    maze episodes (2 seeds each): about twice the revisit frames of ``persistent`` (same cell
    and heading as a frame more than 100 steps before), at about half the cells visited.

    ``max_repeat`` caps how long the wanderer holds an action; ``jitter`` is the chance of a
    uniformly random action in place of each steering action on the way back.

    Needs the worlds' pose info and the actions ``forward``, ``left``, ``right`` (turns;
    left = counter-clockwise in ``agent_pos`` coordinates), ``forward+left``, ``forward+right``.
    Distances are in cells: ``cell_size`` converts them to ``agent_pos`` units.
    """

    def __init__(
        self,
        action_names: Sequence[str],
        rng: np.random.Generator,
        cell_size: float = 1.0,
        wander_steps: tuple[int, int] = (24, 96),
        spacing: float = 0.5,
        reach: float = 0.35,
        patience: int = 20,
        max_repeat: int = 6,
        jitter: float = 0.0,
    ) -> None:
        missing = [a for a in STEER_ACTIONS if a not in action_names]
        if missing:
            raise ValueError(f"the retrace policy needs the actions {list(STEER_ACTIONS)}; this world lacks {missing}")
        self.index = {a: list(action_names).index(a) for a in STEER_ACTIONS}
        self.rng = rng
        self.wanderer = PersistentRandomPolicy(action_names, rng, max_repeat=max_repeat)
        self.jitter = jitter
        self.num_actions = len(action_names)
        self.wander_steps = wander_steps
        self.spacing = spacing * cell_size
        self.reach = reach * cell_size
        self.patience = patience
        self.trail: list[np.ndarray] = []
        self._route: list[int] = []  # trail indices still to visit on the way back, next first
        self._wander_left = 0
        self._stuck = 0

    def reset(self, info: dict[str, Any]) -> None:
        self.wanderer.reset(info)
        self.trail = [self._pose(info)[0]]
        self._route = []
        self._start_wander()

    @staticmethod
    def _pose(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if "agent_pos" not in info or "agent_dir" not in info:
            raise KeyError("the retrace policy steers by info['agent_pos'] and info['agent_dir']; this world has no pose")
        return np.asarray(info["agent_pos"], np.float64)[:2].copy(), np.asarray(info["agent_dir"], np.float64)[:2]

    def _start_wander(self) -> None:
        low, high = self.wander_steps
        self._wander_left = int(self.rng.integers(low, high + 1))

    def _start_return(self) -> None:
        target = int(self.rng.integers(0, len(self.trail) - 1))
        self._route = list(range(len(self.trail) - 2, target - 1, -1))
        self._stuck = 0

    def act(self, info: dict[str, Any]) -> int:
        pos, heading = self._pose(info)
        if self._route:
            return self._steer_back(pos, heading)
        if np.linalg.norm(pos - self.trail[-1]) >= self.spacing:
            self.trail.append(pos)
        self._wander_left -= 1
        if self._wander_left <= 0 and len(self.trail) >= 2:
            self._start_return()
            return self._steer_back(pos, heading)
        return self.wanderer.act(info)

    def _steer_back(self, pos: np.ndarray, heading: np.ndarray) -> int:
        # Waypoints reached (or given up on after ``patience`` steps) are dropped; the trail is
        # cut behind the agent so the next wander grows from where it stands.
        while self._route and (self._stuck >= self.patience or np.linalg.norm(self.trail[self._route[0]] - pos) < self.reach):
            del self.trail[self._route.pop(0) + 1:]
            self._stuck = 0
        if not self._route:
            self.wanderer.reset({})
            self._start_wander()
            return self.wanderer.act({})
        self._stuck += 1
        if self.jitter and self.rng.random() < self.jitter:
            return int(self.rng.integers(self.num_actions))
        return self.index[steer_toward(pos, heading, self.trail[self._route[0]])]


def steer_toward(
    pos: np.ndarray, heading: np.ndarray, target: np.ndarray, turn_deg: float = 30.0, curve_deg: float = 10.0
) -> str:
    """The steering action toward ``target``: turn in place when it is more than ``turn_deg`` off
    the heading, curve (forward+turn) beyond ``curve_deg``, else go straight. pos, heading, target: (2,)."""
    to_target = target - pos
    # Signed angle from heading to target, positive counter-clockwise (= to the left).
    angle = math.degrees(math.atan2(heading[0] * to_target[1] - heading[1] * to_target[0], heading @ to_target))
    side = "left" if angle > 0 else "right"
    if abs(angle) > turn_deg:
        return side
    if abs(angle) > curve_deg:
        return f"forward+{side}"
    return "forward"


PolicyFactory = Callable[[Sequence[str], np.random.Generator, float], Policy]
POLICIES: dict[str, PolicyFactory] = {
    "uniform": lambda names, rng, cell_size: UniformPolicy(names, rng),
    "persistent": lambda names, rng, cell_size: PersistentRandomPolicy(names, rng),
    "retrace": lambda names, rng, cell_size: RetracePolicy(names, rng, cell_size=cell_size),
    "retrace_jitter": lambda names, rng, cell_size: RetracePolicy(
        names, rng, cell_size=cell_size, max_repeat=2, jitter=0.25
    ),
    "minecraft": lambda names, rng, cell_size: MinecraftExplorer(names, rng),
}


def default_policy(world: str) -> str:
    """The maze is the memory benchmark, so it gets revisits, with the jitter that the released
    maze world was trained on (its actions are less predictable from the frames; docs/decisions.md);
    Minecraft its own explorer (which revisits too); elsewhere persistent random actions."""
    return {"maze": "retrace_jitter", "minecraft": "minecraft"}.get(world, "persistent")


def make_policy(name: str, action_names: Sequence[str], rng: np.random.Generator, cell_size: float = 1.0) -> Policy:
    """A policy by name (a key of :data:`POLICIES`) for a world's action names."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; policies: {', '.join(POLICIES)}")
    return POLICIES[name](action_names, rng, cell_size)
