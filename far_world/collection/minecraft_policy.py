"""Exploration for the Minecraft world: walk, look around, climb, dig, build, and come back.

Persistent random keys make a poor Minecraft player: it stares at the sky, walks into a tree
and stays there. This explorer plays in short segments, each with an intent drawn at random:

  walk      forward for 6..40 steps, curving with an occasional camera turn; when a step moves
            the player less than a tenth of a block it jumps (forward+jump: one block up), and
            when jumping does not help either it turns away; near the level's border it turns
            back toward the middle
  look      a run of camera turns one way, sometimes a look up or down
  sidestep  strafe or step back for a few steps
  dig       look down a step or two and attack (break) a few times
  build     place a few blocks (use)
  hop       jump in place or forward
  pause     stand still
  return    walk back to a place on its own trail (a waypoint dropped every block walked), then
            turn to the view it had there: a revisit, what long-term memory is scored on

Walking intents first bring the view back to level, so that most frames show the landscape.
On every step, with probability ``jitter``, a uniformly random action
replaces the planned one: when the last frames already tell what comes next, a model can
ignore the action, and random interruptions teach it to read the action (docs/decisions.md).

Steering reads ``info["pose"]`` (x, y, z, yaw, pitch; yaw grows turning right, heading
(sin yaw, -cos yaw) in the x-z plane), as the Minecraft world reports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from far_world.envs.real.minecraft_protocol import LEVEL_SIZE

REQUIRED_ACTIONS = (
    "noop", "forward", "back", "left", "right", "jump", "forward+jump",
    "camera_left", "camera_right", "camera_up", "camera_down", "attack", "use",
)  # fmt: skip
INTENT_WEIGHTS = {
    "walk": 0.38, "look": 0.17, "sidestep": 0.08, "dig": 0.08, "build": 0.05, "hop": 0.04, "pause": 0.04,
    "return": 0.16,
}  # fmt: skip
STUCK_BLOCKS = 0.1  # a forward step that moves less than this is blocked
LEVEL_PITCH = 15.0  # degrees: a look up or down starting within this of level may go either way
AIM_DEG = 10.0  # steer straight on when the target is within this of the heading
WAYPOINT_SPACING = 1.0  # blocks between trail waypoints
REACH = 0.8  # blocks: a waypoint this close is reached
MIN_RETURN_AGE = 24  # waypoints: return only to places at least this far back along the trail
EDGE = 10.0  # blocks: this close to the level's border, walking turns back toward its middle


def _wrap(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def _bearing(dx: float, dz: float) -> float:
    """The yaw that faces the offset (dx, dz): heading (sin yaw, -cos yaw) = its direction."""
    return math.degrees(math.atan2(dx, -dz))


class MinecraftExplorer:
    """The Minecraft exploration policy (see the module doc); ``jitter`` is the random-action rate."""

    def __init__(self, action_names: Sequence[str], rng: np.random.Generator, jitter: float = 0.1) -> None:
        missing = [a for a in REQUIRED_ACTIONS if a not in action_names]
        if missing:
            raise ValueError(f"the minecraft policy needs Minecraft's actions; this world lacks {missing}")
        self.index = {name: i for i, name in enumerate(action_names)}
        self.num_actions = len(action_names)
        self.rng = rng
        self.jitter = jitter
        intents = [i for i in INTENT_WEIGHTS]
        weights = np.array([INTENT_WEIGHTS[i] for i in intents])
        self.intents, self.intent_probs = intents, weights / weights.sum()
        self.trail: list[np.ndarray] = []  # (x, z, yaw, pitch) per waypoint
        self._plan: list[str] = []  # open-loop actions still to take, next first
        self._intent = "pause"
        self._steps_left = 0
        self._curve = "camera_left"
        self._blocked = 0
        self._target: np.ndarray | None = None
        self._last_pos: np.ndarray | None = None
        self._last_action = "noop"

    def reset(self, info: dict[str, Any]) -> None:
        pose = self._pose(info)
        self.trail = [pose[[0, 2, 3, 4]].copy()]
        self._plan, self._steps_left, self._target = [], 0, None
        self._last_pos, self._last_action, self._blocked = pose[[0, 2]].copy(), "noop", 0

    @staticmethod
    def _pose(info: dict[str, Any]) -> np.ndarray:
        if "pose" not in info:
            raise KeyError("the minecraft policy steers by info['pose'] (x, y, z, yaw, pitch); this world has none")
        return np.asarray(info["pose"], np.float64)

    def act(self, info: dict[str, Any]) -> int:
        pose = self._pose(info)
        pos = pose[[0, 2]]
        moved = float(np.linalg.norm(pos - self._last_pos))
        if "forward" in self._last_action.split("+"):
            self._blocked = self._blocked + 1 if moved < STUCK_BLOCKS else 0
        self._last_pos = pos.copy()
        if np.linalg.norm(pos - self.trail[-1][:2]) >= WAYPOINT_SPACING:
            self.trail.append(pose[[0, 2, 3, 4]].copy())
        name = self._next(pose)
        if self.jitter and self.rng.random() < self.jitter:
            name = REQUIRED_ACTIONS[int(self.rng.integers(len(REQUIRED_ACTIONS)))]
        self._last_action = name
        return self.index[name]

    def _next(self, pose: np.ndarray) -> str:
        if self._plan:
            return self._plan.pop(0)
        if self._steps_left <= 0:
            self._start_intent(pose)
            if self._plan:
                return self._plan.pop(0)
        self._steps_left -= 1
        if self._intent == "return":
            return self._steer(pose)
        return self._walk(pose)

    def _start_intent(self, pose: np.ndarray) -> None:
        rng = self.rng
        intent = str(rng.choice(self.intents, p=self.intent_probs))
        if intent == "return" and len(self.trail) <= MIN_RETURN_AGE:
            intent = "walk"
        self._intent, self._steps_left, self._blocked = intent, 0, 0
        turn = "camera_left" if rng.random() < 0.5 else "camera_right"
        pitch = pose[4]
        if intent == "walk":
            self._plan = self._level_pitch(pitch)
            self._steps_left = int(rng.integers(6, 41))
            self._curve = turn
        elif intent == "return":
            self._plan = self._level_pitch(pitch)
            self._target = self.trail[int(rng.integers(0, len(self.trail) - MIN_RETURN_AGE))]
            distance = float(np.linalg.norm(self._target[:2] - pose[[0, 2]]))
            self._steps_left = int(3 * distance / 0.4) + 20  # ~0.4 blocks a step when walking
        elif intent == "look":
            self._plan = [turn] * int(rng.integers(2, 9))
            if rng.random() < 0.3:
                vertical = "camera_down" if pitch < 0 else "camera_up"  # look back toward level
                if abs(pitch) < LEVEL_PITCH and rng.random() < 0.5:
                    vertical = "camera_up" if vertical == "camera_down" else "camera_down"
                self._plan.insert(int(rng.integers(0, len(self._plan) + 1)), vertical)
        elif intent == "sidestep":
            self._plan = [str(rng.choice(["left", "right", "back"]))] * int(rng.integers(2, 9))
        elif intent == "dig":
            down = ["camera_down"] * int(rng.integers(1, 3)) if pitch < 30 else []
            self._plan = down + ["attack"] * int(rng.integers(1, 5))
        elif intent == "build":
            self._plan = ["camera_down"] * int(pitch < 30) + ["use"] * int(rng.integers(1, 4))
        elif intent == "hop":
            self._plan = [str(rng.choice(["jump", "forward+jump"]))] * int(rng.integers(1, 4))
        else:
            self._plan = ["noop"] * int(rng.integers(1, 5))

    def _level_pitch(self, pitch: float) -> list[str]:
        """Camera steps that bring the view back to level (pitch 0)."""
        return self._turns(-pitch, "camera_down", "camera_up")

    def _walk(self, pose: np.ndarray) -> str:
        if self._blocked == 1:
            return "forward+jump"
        if self._blocked >= 2:  # a wall, a cliff or a tree: turn away (90..180 degrees), walk on
            self._blocked = 0
            self._plan = [self._curve] * int(self.rng.integers(6, 13))
            return self._plan.pop(0)
        x, z, yaw = pose[0], pose[2], pose[3]
        if min(x, z, LEVEL_SIZE - x, LEVEL_SIZE - z) < EDGE:
            delta = _wrap(_bearing(LEVEL_SIZE / 2 - x, LEVEL_SIZE / 2 - z) - yaw)
            if abs(delta) > 60.0:  # heading out: face the middle again
                self._plan = self._turns(delta, "camera_right", "camera_left")
                return self._plan.pop(0)
        if self.rng.random() < 0.15:
            return self._curve
        return "forward"

    def _steer(self, pose: np.ndarray) -> str:
        target = self._target
        offset = target[:2] - pose[[0, 2]]
        if np.linalg.norm(offset) < REACH:
            # Arrived: take the view it had there (yaw, then pitch), and end the return.
            self._steps_left = 0
            self._plan = self._turns(_wrap(target[2] - pose[3]), "camera_right", "camera_left")
            self._plan += self._turns(target[3] - pose[4], "camera_down", "camera_up")
            return self._plan.pop(0) if self._plan else "noop"
        if self._blocked == 1:
            return "forward+jump"
        if self._blocked >= 2:  # jumping did not get it over: try around, sideways
            self._blocked = 0
            return str(self.rng.choice(["left", "right"]))
        delta = _wrap(_bearing(offset[0], offset[1]) - pose[3])
        if abs(delta) > AIM_DEG:
            return "camera_right" if delta > 0 else "camera_left"
        return "forward"

    @staticmethod
    def _turns(delta: float, positive: str, negative: str) -> list[str]:
        """15-degree camera steps that cover ``delta`` degrees to within half a step."""
        return [positive if delta > 0 else negative] * int(round(abs(delta) / 15.0))
