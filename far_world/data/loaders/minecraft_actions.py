"""One action space for human Minecraft recordings (MineRL and VPT): raw inputs -> discrete ids.

Both datasets record what a person pressed each tick: movement keys, jump, attack, use, sneak,
sprint and a camera delta in degrees (pitch, yaw; positive pitch looks down, positive yaw
turns right). :class:`MinecraftInputs` holds those; two mappings turn them into actions.

Discrete (one id a step): the Minecraft world's own action set (``--world minecraft``,
:data:`DISCRETE_ACTIONS`), so that a checkpoint trained on imported recordings has the same
controls as one trained in the game. A person often holds several inputs at once; one wins,
by how much it changes the picture (a camera turn moves every pixel, a jump shifts the whole
view, walking moves it, an attack or a placed block changes a small patch):
  camera (the axis with the larger |delta| at or over the threshold) > jump (forward+jump
  when walking forward too) > forward > back > left > right > attack > use > noop.
Forward with back (or left with right) cancel out, as they do in the game. Camera deltas below
the threshold count as none: hand jitter that moves a 64x64 view by less than about a pixel.
The world turns 15 degrees a step where a person turns a few degrees a tick: the names match,
the sizes of the steps do not.

Multi-discrete (one value per component, nothing lost to a priority): move (none/forward/back),
strafe (none/left/right), jump, attack, use, sprint, sneak (no/yes), yaw (none/left/right),
pitch (none/up/down).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from far_world.data.episodes import DatasetMeta
from far_world.envs.real.minecraft_protocol import ACTIONS

ActionKind = Literal["discrete", "multi-discrete"]

DISCRETE_ACTIONS: tuple[str, ...] = ACTIONS
_ID = {name: i for i, name in enumerate(DISCRETE_ACTIONS)}

MULTI_DISCRETE_COMPONENTS: dict[str, tuple[str, ...]] = {
    "move": ("none", "forward", "back"),
    "strafe": ("none", "left", "right"),
    "jump": ("no", "yes"),
    "attack": ("no", "yes"),
    "use": ("no", "yes"),
    "sprint": ("no", "yes"),
    "sneak": ("no", "yes"),
    "yaw": ("none", "left", "right"),
    "pitch": ("none", "up", "down"),
}

# In degrees a step (20 Hz). A 64x64 view spans about 70 degrees, so 2 degrees is ~2 pixels.
DEFAULT_CAMERA_THRESHOLD = 2.0


@dataclass
class MinecraftInputs:
    """Per-step human inputs: button arrays bool (T,), ``camera`` float32 (T,2) degrees (pitch, yaw)."""

    forward: np.ndarray
    back: np.ndarray
    left: np.ndarray
    right: np.ndarray
    jump: np.ndarray
    attack: np.ndarray
    sneak: np.ndarray
    sprint: np.ndarray
    camera: np.ndarray
    use: np.ndarray | None = None  # None: never pressed (a recording without it)

    def __post_init__(self) -> None:
        if self.use is None:
            self.use = np.zeros(len(self.camera), bool)

    def __len__(self) -> int:
        return len(self.camera)

    def __getitem__(self, index: slice) -> "MinecraftInputs":
        """The inputs of a range of steps (e.g. ``inputs[:T]``)."""
        return MinecraftInputs(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def _net(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opposite keys held together cancel: (positive only, negative only)."""
    return positive & ~negative, negative & ~positive


def _camera_axes(camera: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Which axis a step turns on: (yaw wins, pitch wins), each bool (T,); ties go to yaw."""
    pitch, yaw = np.abs(camera[:, 0]), np.abs(camera[:, 1])
    yaw_wins = (yaw >= threshold) & (yaw >= pitch)
    pitch_wins = (pitch >= threshold) & ~yaw_wins
    return yaw_wins, pitch_wins


def to_discrete(inputs: MinecraftInputs, camera_threshold: float = DEFAULT_CAMERA_THRESHOLD) -> np.ndarray:
    """Map inputs to one id of :data:`DISCRETE_ACTIONS` a step, int64 (T,), by the priority above."""
    forward, back = _net(inputs.forward, inputs.back)
    left, right = _net(inputs.left, inputs.right)
    yaw_wins, pitch_wins = _camera_axes(inputs.camera, camera_threshold)
    pitch, yaw = inputs.camera[:, 0], inputs.camera[:, 1]
    rules = [  # highest priority first: np.select takes the first rule that holds
        (yaw_wins & (yaw < 0), "camera_left"),
        (yaw_wins & (yaw > 0), "camera_right"),
        (pitch_wins & (pitch < 0), "camera_up"),
        (pitch_wins & (pitch > 0), "camera_down"),
        (inputs.jump & forward, "forward+jump"),
        (inputs.jump, "jump"),
        (forward, "forward"),
        (back, "back"),
        (left, "left"),
        (right, "right"),
        (inputs.attack, "attack"),
        (inputs.use, "use"),
    ]
    conditions = [np.asarray(cond, bool) for cond, _ in rules]
    return np.select(conditions, [_ID[name] for _, name in rules], default=_ID["noop"]).astype(np.int64)


def to_multi_discrete(inputs: MinecraftInputs, camera_threshold: float = DEFAULT_CAMERA_THRESHOLD) -> np.ndarray:
    """Map inputs to one value per :data:`MULTI_DISCRETE_COMPONENTS` entry, int64 (T, 9)."""
    forward, back = _net(inputs.forward, inputs.back)
    left, right = _net(inputs.left, inputs.right)
    pitch, yaw = inputs.camera[:, 0], inputs.camera[:, 1]
    columns = {
        "move": forward * 1 + back * 2,
        "strafe": left * 1 + right * 2,
        "jump": inputs.jump * 1,
        "attack": inputs.attack * 1,
        "use": inputs.use * 1,
        "sprint": inputs.sprint * 1,
        "sneak": inputs.sneak * 1,
        "yaw": (yaw <= -camera_threshold) * 1 + (yaw >= camera_threshold) * 2,
        "pitch": (pitch <= -camera_threshold) * 1 + (pitch >= camera_threshold) * 2,
    }
    return np.stack([columns[name] for name in MULTI_DISCRETE_COMPONENTS], axis=1).astype(np.int64)


def map_inputs(inputs: MinecraftInputs, kind: ActionKind, camera_threshold: float) -> np.ndarray:
    """Map inputs to the ``kind`` action space: int64 (T,) or (T, 9)."""
    if kind == "discrete":
        return to_discrete(inputs, camera_threshold)
    if kind == "multi-discrete":
        return to_multi_discrete(inputs, camera_threshold)
    raise ValueError(f"unknown action kind {kind!r}; expected 'discrete' or 'multi-discrete'")


def action_space_description(kind: ActionKind) -> tuple[list[str], dict, dict]:
    """``(action_names, action_space, info)`` for :class:`~far_world.data.episodes.DatasetMeta`.

    For multi-discrete the names are the components and ``info["action_values"]`` names each
    component's values.
    """
    if kind == "discrete":
        return list(DISCRETE_ACTIONS), {"type": "discrete", "n": len(DISCRETE_ACTIONS)}, {}
    if kind == "multi-discrete":
        nvec = [len(values) for values in MULTI_DISCRETE_COMPONENTS.values()]
        values = {name: list(v) for name, v in MULTI_DISCRETE_COMPONENTS.items()}
        return list(MULTI_DISCRETE_COMPONENTS), {"type": "multi_discrete", "nvec": nvec}, {"action_values": values}
    raise ValueError(f"unknown action kind {kind!r}; expected 'discrete' or 'multi-discrete'")


class MinecraftInputLoader:
    """What the MineRL and VPT loaders share: how recorded inputs become actions, and the meta.

    Subclasses set ``name``, ``world``, ``policy`` and ``extras``, and implement ``find``/``load``.
    """

    name = ""
    world = ""
    policy = ""
    extras: tuple[str, ...] = ()

    def __init__(
        self,
        actions: ActionKind = "discrete",
        camera_threshold: float = DEFAULT_CAMERA_THRESHOLD,
        resolution: int = 64,
    ) -> None:
        action_space_description(actions)  # rejects an unknown kind now, not at the first item
        self.actions = actions
        self.camera_threshold = camera_threshold
        self.resolution = resolution

    def meta(self) -> DatasetMeta:
        names, space, info = action_space_description(self.actions)
        return DatasetMeta(
            world=self.world,
            action_names=names,
            action_space=space,
            resolution=[self.resolution, self.resolution],
            policy=self.policy,
            extras=list(self.extras),
            info={"source_format": self.name, "camera_threshold_deg": self.camera_threshold, **info},
        )
