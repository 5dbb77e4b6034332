"""MineRL human demonstrations (the published v0 layout) into episodes, without the ``minerl`` package.

A demo is a folder holding
  recording.mp4   the agent's view (64x64 at 20 fps)
  rendered.npz    flat arrays whose keys use ``$`` for nesting: ``action$forward``,
                  ``action$back``, ``action$left``, ``action$right``, ``action$jump``,
                  ``action$attack``, ``action$sneak``, ``action$sprint`` (0/1, (T,)),
                  ``action$camera`` float (T,2) degrees (pitch, yaw), ``action$place``
                  (the block placed, or 'none': our ``use``), ``reward`` (T,), and
                  observations and other actions (craft, equip, ...) that we do not use
  metadata.json   e.g. ``success``, ``duration_steps``
with one action fewer than frames: ``action[t]`` follows frame t, our convention already.
Some demos hold a frame or two more or fewer than that; the episode keeps the T steps that
have both (T = min(actions, frames - 1)). A button array missing from ``rendered.npz`` (an
environment without that button) counts as never pressed.

``terminated`` is set on the last step when ``metadata.json`` says ``success``: the task's
goal ends a MineRL episode, while a demo that stops otherwise was cut short, not ended.

Rendering MineRL's raw replays (``.mcpr`` files) needs the ``minerl`` package, which builds
Minecraft with Java; it cannot be installed here. Use the rendered v0 data with this loader.
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

MINERL_MISSING_MESSAGE = (
    "{src} holds MineRL raw replays (.mcpr) but no rendered demos (recording.mp4 + rendered.npz). "
    "Rendering replays needs the 'minerl' package (pip install 'far-world[minerl]'), which requires "
    "JDK 8 and downloads and builds Minecraft at install time, so it is not part of far-world. "
    "Render them where minerl runs, or download the already rendered MineRL v0 data, then point "
    "--src at it."
)
_BUTTONS = ("forward", "back", "left", "right", "jump", "attack", "sneak", "sprint")


class MineRLLoader(MinecraftInputLoader):
    """Reads MineRL v0 demo folders; actions mapped as in :mod:`.minecraft_actions`."""

    name = "minerl"
    world = "minerl"
    policy = "human demonstrations (MineRL)"

    def find(self, src: Path) -> list[Path]:
        """Demo folders under ``src`` (``src`` itself, ``<demo>/`` or ``<environment>/<demo>/``)."""
        demos = sorted({p.parent for p in src.rglob("rendered.npz")} | {p.parent for p in src.rglob("recording.mp4")})
        if not demos and any(src.rglob("*.mcpr")):
            raise LoaderError(MINERL_MISSING_MESSAGE.format(src=src))
        return demos

    def load(self, item: Path) -> Episode:
        """Convert one demo folder (see the module doc for alignment and termination)."""
        npz_path = item / "rendered.npz"
        if not npz_path.is_file():
            raise LoaderError(f"{item}: no rendered.npz")
        inputs, rewards = _read_rendered(npz_path)
        frames = read_video(item / "recording.mp4", (self.resolution, self.resolution))
        steps = min(len(inputs), len(frames) - 1)
        if steps < 1:
            raise LoaderError(f"{item}: {len(frames)} frames and {len(inputs)} actions make no step")
        terminated = np.zeros(steps, np.bool_)
        terminated[-1] = bool(_read_metadata(item / "metadata.json").get("success", False))
        return Episode(
            frames=frames[: steps + 1],
            actions=map_inputs(inputs[:steps], self.actions, self.camera_threshold),
            rewards=rewards[:steps],
            terminated=terminated,
        )



def _read_rendered(path: Path) -> tuple[MinecraftInputs, np.ndarray]:
    """The button and camera arrays of ``rendered.npz`` and its rewards float32 (T,)."""
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.keys())
        if "action$camera" not in keys:
            raise LoaderError(f"{path}: no 'action$camera' (keys: {sorted(keys)[:12]}...)")
        camera = np.asarray(data["action$camera"], np.float32)
        if camera.ndim != 2 or camera.shape[1] != 2:
            raise LoaderError(f"{path}: action$camera must be (T,2), got {camera.shape}")
        steps = len(camera)
        buttons = {}
        for name in _BUTTONS:
            key = f"action${name}"
            values = np.asarray(data[key]) if key in keys else np.zeros(steps)
            if values.shape != (steps,):
                raise LoaderError(f"{path}: {key} has shape {values.shape}, camera has {steps} steps")
            buttons[name] = values.astype(bool)
        buttons["use"] = _read_use(data, keys, steps, path)
        rewards = np.asarray(data["reward"], np.float32) if "reward" in keys else np.zeros(steps, np.float32)
    if rewards.shape != (steps,):
        raise LoaderError(f"{path}: reward has shape {rewards.shape}, actions have {steps} steps")
    return MinecraftInputs(camera=camera, **buttons), rewards


def _read_use(data: np.lib.npyio.NpzFile, keys: set[str], steps: int, path: Path) -> np.ndarray:
    """Placing a block, bool (T,): MineRL 1.0's ``action$use`` button, else v0's ``action$place``
    enum (the block's name, or 'none'; stored as text or as its index, 0 being 'none')."""
    key = "action$use" if "action$use" in keys else "action$place" if "action$place" in keys else None
    if key is None:
        return np.zeros(steps, bool)
    values = np.asarray(data[key])
    if values.shape != (steps,):
        raise LoaderError(f"{path}: {key} has shape {values.shape}, camera has {steps} steps")
    if values.dtype.kind in "US":
        return ~np.isin(np.char.lower(values.astype(str)), ["none", ""])
    return values.astype(bool)


def _read_metadata(path: Path) -> dict:
    """``metadata.json`` as a dict; a missing one is empty (only ``success`` is read from it)."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LoaderError(f"{path}: invalid JSON ({exc})") from exc
    return meta if isinstance(meta, dict) else {}
