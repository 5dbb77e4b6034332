"""OpenAI VPT contractor recordings (``<name>.mp4`` + ``<name>.jsonl``) into episodes.

Each ``.jsonl`` line is one tick (20 Hz) and pairs with the video frame of the same index.
The fields read (others, e.g. ``inventory`` or ``stats``, are ignored):
  mouse     {"dx", "dy": pixels moved this tick, "buttons": held (0 attack, 1 use,
             2 pick block), "newButtons": pressed this tick}
  keyboard  {"keys": held, e.g. "key.keyboard.w", "key.keyboard.space"}
  isGuiOpen true while an inventory or menu screen is shown
  xpos, ypos, zpos, pitch, yaw   the player's pose (kept as the per-frame extra ``pose``, NaN if absent)
Line t is the input given while frame t was on screen, so it leads to frame t+1: our
convention. N frames and N lines make N-1 steps (the last line leads past the video); when
the counts differ the shorter one wins, and a cut-off last line (an interrupted recording) is
dropped.

Conversions, after VPT's own data loader:
  camera degrees = mouse pixels x 360/2400 (the recorder's sensitivity), pitch from dy
    (positive looks down), yaw from dx (positive turns right);
  while a GUI is open the mouse moves a cursor, not the view: no camera action;
  some recordings start with attack reported held although it is not (``newButtons == [0]``
    on the first line): attack is ignored until it is pressed again;
  keys: w forward, s back, a left, d right, space jump, left shift sneak, left control sprint;
  use (place a block): button 1 held while no GUI is open.
Frames (640x360) are squeezed to a square, as VPT's agents see them. VPT has no rewards and
no ends: rewards are 0, nothing terminates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from far_world.data.episodes import Episode
from far_world.data.loaders.base import LoaderError
from far_world.data.loaders.minecraft_actions import (
    MinecraftInputLoader,
    MinecraftInputs,
    map_inputs,
)
from far_world.data.loaders.video import read_video

CAMERA_DEGREES_PER_PIXEL = 360.0 / 2400.0
ATTACK_BUTTON = 0
USE_BUTTON = 1
KEYS = {
    "key.keyboard.w": "forward",
    "key.keyboard.s": "back",
    "key.keyboard.a": "left",
    "key.keyboard.d": "right",
    "key.keyboard.space": "jump",
    "key.keyboard.left.shift": "sneak",
    "key.keyboard.left.control": "sprint",
}
POSE_FIELDS = ("xpos", "ypos", "zpos", "pitch", "yaw")


class VPTLoader(MinecraftInputLoader):
    """Reads VPT ``.mp4`` + ``.jsonl`` pairs; actions mapped as in :mod:`.minecraft_actions`."""

    name = "vpt"
    world = "vpt"
    policy = "human contractors (VPT)"
    extras = ("pose",)

    def find(self, src: Path) -> list[Path]:
        """The ``.jsonl`` files under ``src`` (each with its ``.mp4`` beside it)."""
        if src.is_file():
            return [src]
        return sorted(p for p in src.rglob("*.jsonl") if not p.name.startswith("."))

    def load(self, item: Path) -> Episode:
        """Convert one recording, given by its ``.jsonl`` path (see the module doc)."""
        records = read_jsonl(item)
        frames = read_video(item.with_suffix(".mp4"), (self.resolution, self.resolution))
        count = min(len(records), len(frames))
        if count < 2:
            raise LoaderError(f"{item}: {len(frames)} frames and {len(records)} lines make no step")
        records, frames = records[:count], frames[:count]
        inputs = records_to_inputs(records[:-1])
        steps = count - 1
        return Episode(
            frames=frames,
            actions=map_inputs(inputs, self.actions, self.camera_threshold),
            rewards=np.zeros(steps, np.float32),
            terminated=np.zeros(steps, np.bool_),
            extras={"pose": records_to_poses(records)},
        )



def read_jsonl(path: Path) -> list[dict]:
    """The records of a ``.jsonl`` file; a broken last line is dropped, a broken earlier one is an error."""
    if not path.is_file():
        raise LoaderError(f"{path}: no such file")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a recording cut off mid-write
                break
            raise LoaderError(f"{path}:{number}: invalid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise LoaderError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def records_to_poses(records: list[dict]) -> np.ndarray:
    """Player pose per record, float32 (N, 5) of :data:`POSE_FIELDS`; NaN where a field is absent."""
    poses = np.full((len(records), len(POSE_FIELDS)), np.nan, np.float32)
    for t, record in enumerate(records):
        for k, name in enumerate(POSE_FIELDS):
            if isinstance(record.get(name), (int, float)):
                poses[t, k] = record[name]
    return poses


def records_to_inputs(records: list[dict]) -> MinecraftInputs:
    """Per-tick VPT records -> :class:`MinecraftInputs` (T = len(records))."""
    steps = len(records)
    held = {name: np.zeros(steps, bool) for name in (*KEYS.values(), "attack", "use")}
    camera = np.zeros((steps, 2), np.float32)
    attack_stuck = False
    for t, record in enumerate(records):
        mouse = record.get("mouse") or {}
        keyboard = record.get("keyboard") or {}
        new_buttons = mouse.get("newButtons") or []
        if t == 0:
            attack_stuck = new_buttons == [ATTACK_BUTTON]
        elif attack_stuck and ATTACK_BUTTON in new_buttons:
            attack_stuck = False
        held["attack"][t] = ATTACK_BUTTON in (mouse.get("buttons") or []) and not attack_stuck
        # The use button in a GUI moves items around; in the world it places a block.
        held["use"][t] = USE_BUTTON in (mouse.get("buttons") or []) and not record.get("isGuiOpen", False)
        for key in keyboard.get("keys") or []:
            if key in KEYS:
                held[KEYS[key]][t] = True
        if not record.get("isGuiOpen", False):
            camera[t] = (
                float(mouse.get("dy", 0.0)) * CAMERA_DEGREES_PER_PIXEL,
                float(mouse.get("dx", 0.0)) * CAMERA_DEGREES_PER_PIXEL,
            )
    return MinecraftInputs(camera=camera, **held)
