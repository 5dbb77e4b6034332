"""The on-disk episode format: one uncompressed ``.npz`` per episode, ``meta.json`` per dataset.

An episode of T steps holds
  frames      uint8   (T+1, H, W, 3)   frames[t] is seen before actions[t] is taken
  actions     int64   (T,) or (T, K)   actions[t] leads from frames[t] to frames[t+1]
  rewards     float32 (T,)
  terminated  bool    (T,)
and optional per-frame extras (``extra_<name>``, leading dim T+1), e.g. the maze agent's pose.

Files are uncompressed so that :func:`load_episode` can memory-map them: a dataset larger
than RAM is read a clip at a time. Writes are atomic (temporary file, then rename), so a
crash never leaves a half-written episode under its final name.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from far_world.action_spaces import action_count, nvec_from_spec
from far_world.files import atomic_write, write_json

EXTRA_PREFIX = "extra_"
REQUIRED_KEYS = ("frames", "actions", "rewards", "terminated")
SPLITS = ("train", "test")
# meta.json's world for frames a world model generated: "imagined:maze" (see check_real_data).
IMAGINED_PREFIX = "imagined:"


class EpisodeError(ValueError):
    """An episode file that is missing, corrupt, truncated or of the wrong shape."""


@dataclass
class Episode:
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_episode(self)

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def validate_episode(ep: Episode, resolution: tuple[int, int] | None = None) -> None:
    """Raise :class:`EpisodeError` unless shapes and dtypes follow the format."""
    f = ep.frames
    if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
        raise EpisodeError(f"frames must be uint8 (T+1,H,W,3), got {f.dtype} {f.shape}")
    if len(f) < 1:
        raise EpisodeError("an episode needs at least one frame")
    steps = len(f) - 1
    if resolution is not None and tuple(f.shape[1:3]) != tuple(resolution):
        raise EpisodeError(f"frames are {f.shape[1]}x{f.shape[2]}, expected {resolution[0]}x{resolution[1]}")
    if not np.issubdtype(ep.actions.dtype, np.integer) or ep.actions.ndim not in (1, 2):
        raise EpisodeError(f"actions must be integer (T,) or (T,K), got {ep.actions.dtype} {ep.actions.shape}")
    for name, arr, dtype in (
        ("actions", ep.actions, None),
        ("rewards", ep.rewards, np.float32),
        ("terminated", ep.terminated, np.bool_),
    ):
        # ndim first: len() of a 0-d array raises TypeError, which would escape iter_episodes.
        if arr.ndim == 0 or len(arr) != steps:
            raise EpisodeError(f"{name} has shape {arr.shape}, frames imply {steps} steps")
        if dtype is not None and (arr.dtype != dtype or arr.ndim != 1):
            raise EpisodeError(f"{name} must be {np.dtype(dtype).name} (T,), got {arr.dtype} {arr.shape}")
    for name, arr in ep.extras.items():
        if arr.ndim == 0 or len(arr) != steps + 1:
            raise EpisodeError(f"extra '{name}' has shape {arr.shape}, expected one row per frame ({steps + 1})")


def save_episode(path: str | os.PathLike, ep: Episode) -> Path:
    """Write ``ep`` atomically to ``path`` (a ``.npz``)."""
    path = Path(path)
    arrays = {
        "frames": np.ascontiguousarray(ep.frames, dtype=np.uint8),
        "actions": np.ascontiguousarray(ep.actions, dtype=np.int64),
        "rewards": np.ascontiguousarray(ep.rewards, dtype=np.float32),
        "terminated": np.ascontiguousarray(ep.terminated, dtype=np.bool_),
    }
    arrays.update({EXTRA_PREFIX + k: np.ascontiguousarray(v) for k, v in ep.extras.items()})
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def _mmap_npz_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    """Memory-map one stored (uncompressed) ``.npy`` member of a ``.npz``."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local_header = fh.read(30)
        if local_header[:4] != b"PK\x03\x04":
            raise EpisodeError(f"bad zip header for {info.filename}")
        name_len = int.from_bytes(local_header[26:28], "little")
        extra_len = int.from_bytes(local_header[28:30], "little")
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if fortran or dtype.hasobject:
        raise EpisodeError(f"{info.filename}: unsupported array layout")
    if offset + int(np.prod(shape)) * dtype.itemsize > info.header_offset + 30 + name_len + extra_len + info.file_size:
        raise EpisodeError(f"{info.filename}: truncated")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def load_episode(path: str | os.PathLike, mmap: bool = False, resolution: tuple[int, int] | None = None) -> Episode:
    """Read and validate one episode; raises :class:`EpisodeError` on any defect.

    With ``mmap=True`` the arrays are memory-mapped (files written by :func:`save_episode`
    are uncompressed); compressed files fall back to a normal read.
    """
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(f"{path}: no such episode file")
    try:
        arrays: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip() if not mmap else None
            if bad is not None:
                raise EpisodeError(f"{path}: corrupt member {bad}")
            for info in zf.infolist():
                key = info.filename.removesuffix(".npy")
                if mmap and info.compress_type == zipfile.ZIP_STORED:
                    arrays[key] = _mmap_npz_member(path, info)
                else:
                    with zf.open(info) as member:
                        arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except EpisodeError:
        raise
    except Exception as exc:  # zipfile/numpy raise many types for damaged files
        raise EpisodeError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise EpisodeError(f"{path}: missing arrays {missing}")
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}
    try:
        ep = Episode(arrays["frames"], arrays["actions"], arrays["rewards"], arrays["terminated"], extras)
        validate_episode(ep, resolution)
    except EpisodeError as exc:
        raise EpisodeError(f"{path}: {exc}") from None
    return ep


def episode_paths(folder: str | os.PathLike) -> list[Path]:
    """Episode files in ``folder`` (sorted; temporary files of interrupted writes excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no episode folder at {folder}")
    return sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))


def iter_episodes(
    folder: str | os.PathLike, mmap: bool = False, resolution: tuple[int, int] | None = None
) -> Iterator[tuple[Path, Episode]]:
    """Yield the valid episodes of ``folder``; each bad file is skipped with a warning naming it."""
    for path in episode_paths(folder):
        try:
            yield path, load_episode(path, mmap=mmap, resolution=resolution)
        except EpisodeError as exc:
            warnings.warn(f"skipping episode: {exc}", stacklevel=2)


@dataclass
class DatasetMeta:
    """What ``meta.json`` records about a folder of episodes."""

    world: str
    action_names: list[str]
    action_space: dict[str, Any]  # {"type": "discrete", "n": 6} or {"type": "multi_discrete", "nvec": [...]}
    resolution: list[int]  # [H, W]
    frame_skip: int = 1
    policy: str = ""
    seed: int = 0
    extras: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_actions(self) -> int:
        return action_count(self.action_space)

    @property
    def imagined(self) -> bool:
        """Frames a world model generated (play.py without --side-by-side), not a real world's."""
        return self.world.startswith(IMAGINED_PREFIX)


def write_meta(folder: str | os.PathLike, meta: DatasetMeta) -> Path:
    return write_json(Path(folder) / "meta.json", asdict(meta))


class ImaginedDataError(ValueError):
    """Training data that a world model imagined, refused unless the caller allows it."""


def check_real_data(folder: str | os.PathLike, allow_imagined: bool = False) -> None:
    """Refuse (or, when allowed, warn about) a folder whose meta.json labels it imagined.

    A model trained on its own output learns its own errors back: imagined episodes enter
    training only on request. A folder without meta.json passes (nothing says it is imagined).
    """
    try:
        meta = read_meta(folder)
    except FileNotFoundError:
        return
    if not meta.imagined:
        return
    message = (
        f"{folder} holds frames imagined by a world model (world '{meta.world}', policy '{meta.policy}'), "
        "not a real world's: training on them feeds a model its own errors"
    )
    if not allow_imagined:
        raise ImaginedDataError(message + "; pass --allow-imagined (allow_imagined=True) to use them anyway")
    warnings.warn(message, stacklevel=2)


def check_same_actions(folder: str | os.PathLike, action_names: list[str], action_space: dict[str, Any]) -> None:
    """Raise ValueError when ``folder``'s meta.json names other actions than a checkpoint's.

    Action indices mean nothing across worlds: a maze model fed a Doom dataset's actions would be
    scored on the wrong actions, silently. A folder without meta.json is let through with a warning.
    """
    try:
        meta = read_meta(folder)
    except FileNotFoundError:
        warnings.warn(f"no meta.json for {folder}: cannot check that its actions are the checkpoint's", stacklevel=2)
        return
    same_names = list(meta.action_names) == list(action_names)
    if not same_names or nvec_from_spec(meta.action_space) != nvec_from_spec(action_space):
        raise ValueError(
            f"{folder} holds episodes of world '{meta.world}' with actions {meta.action_names} "
            f"({meta.action_space}); the checkpoint's actions are {list(action_names)} ({action_space})"
        )


def read_meta(folder: str | os.PathLike) -> DatasetMeta:
    """Read ``meta.json`` from ``folder`` or, for a split folder, its parent."""
    folder = Path(folder)
    for candidate in (folder / "meta.json", folder.parent / "meta.json"):
        if candidate.is_file():
            try:
                return DatasetMeta(**json.loads(candidate.read_text()))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{candidate}: invalid meta.json ({exc})") from exc
    raise FileNotFoundError(f"no meta.json in {folder} or its parent")
