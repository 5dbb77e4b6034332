"""Checkpoint files: the released one-file world model, and training states for exact resume.

Both are written with ``torch.save`` from plain tensors, dicts, lists, strings and numbers
only, and read back with ``torch.load(weights_only=True)``: opening a checkpoint never runs
arbitrary pickled code. Writes are atomic (temporary file, fsync, rename), so a run killed
mid-save leaves the previous file intact. Every defect a reader can meet (missing, truncated,
corrupt, foreign, too new, incomplete) raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from far_world.files import atomic_write
from far_world.model.autoencoder import AEConfig, FrameAutoencoder
from far_world.model.config import FARConfig

FORMAT_VERSION = 1
# The value under this key says what a file is; a file without it is not ours.
KIND_KEY = "far_world"
WORLD_KIND = "world"
AUTOENCODER_KIND = "autoencoder"
TRAINING_KIND = "training_state"

WORLD_KEYS = (
    "far_config", "ae_config", "ae_state", "far_state", "action_names", "action_space",
    "prompt_frames", "prompt_actions", "summary", "world",
)  # fmt: skip
AUTOENCODER_KEYS = ("ae_config", "ae_state", "summary")
TRAINING_KEYS = ("step", "model", "ema", "optimizer", "rng", "config", "extra")


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable, foreign, of another format version or incomplete."""


@dataclass
class WorldCheckpoint:
    """Everything a released world model needs, in one file.

    ``prompt_frames`` uint8 (P, T, H, W, 3) are a few context clips for ``reset``;
    ``prompt_actions`` (P, T) or (P, T, K) int64 follow the model's convention: entry t is the
    action that led *into* frame t, and the first frame of an episode has the null action
    (index = number of classes of that component). The latent statistics live in ``ae_state``
    (buffers ``latent_mean``/``latent_std``).
    """

    far_config: FARConfig
    ae_config: AEConfig
    ae_state: dict[str, torch.Tensor]
    far_state: dict[str, torch.Tensor]
    action_names: list[str]
    action_space: dict[str, Any]
    prompt_frames: torch.Tensor
    prompt_actions: torch.Tensor
    summary: dict[str, Any] = field(default_factory=dict)
    world: str = ""
    # The real world's settings that shaped the training frames (e.g. doom's ``hud``): scoring in
    # the real game, or playing beside it, must build it the same way. Absent from older files.
    world_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def latent_mean(self) -> torch.Tensor:
        return self.ae_state["latent_mean"]

    @property
    def latent_std(self) -> torch.Tensor:
        return self.ae_state["latent_std"]


@dataclass
class TrainingState:
    """A training run at a step boundary: enough to continue it bit for bit.

    ``step`` counts completed optimizer steps; the data sampler is a pure function of the step,
    so it is also the data position, and the learning rate is a pure function of the step, so
    no scheduler state is needed. ``rng`` comes from :func:`capture_rng_state`.
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    config: dict[str, Any]
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# -- plain-data checks and atomic writes ---------------------------------------------------------
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError unless ``obj`` is built only of what ``weights_only=True`` loads back."""
    if isinstance(obj, (torch.Tensor, *_PLAIN_SCALARS)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not str or int")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not a plain tensor/dict/list/str/number")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`far_world.files.atomic_write`: a killed save keeps the old file."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _load_payload(path: str | os.PathLike, kind: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Read a checkpoint of ``kind`` and check its identity, version and keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zips, bad pickles and refused globals raise many types
        raise CheckpointError(
            f"{path}: unreadable checkpoint (corrupt, truncated or holding non-plain objects): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(payload, dict) or KIND_KEY not in payload:
        raise CheckpointError(f"{path}: not a far-world checkpoint")
    if payload[KIND_KEY] != kind:
        raise CheckpointError(f"{path}: a far-world '{payload[KIND_KEY]}' checkpoint, expected '{kind}'")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version}, this far-world reads version {FORMAT_VERSION}")
    missing = [k for k in keys if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return payload


# -- the released world-model file ---------------------------------------------------------------
def save_world_checkpoint(path: str | os.PathLike, ckpt: WorldCheckpoint) -> Path:
    """Write ``ckpt`` atomically as one file; raises TypeError if any field is not plain data."""
    if ckpt.prompt_frames.dtype != torch.uint8 or ckpt.prompt_frames.ndim != 5:
        got = f"{ckpt.prompt_frames.dtype} {tuple(ckpt.prompt_frames.shape)}"
        raise ValueError(f"prompt_frames must be uint8 (P,T,H,W,3), got {got}")
    if tuple(ckpt.prompt_actions.shape[:2]) != tuple(ckpt.prompt_frames.shape[:2]):
        raise ValueError("prompt_actions must have one action per prompt frame")
    payload = {
        KIND_KEY: WORLD_KIND,
        "format_version": FORMAT_VERSION,
        "far_config": ckpt.far_config.to_dict(),
        "ae_config": ckpt.ae_config.to_dict(),
        "ae_state": {k: v.detach().cpu() for k, v in ckpt.ae_state.items()},
        "far_state": {k: v.detach().cpu() for k, v in ckpt.far_state.items()},
        "action_names": list(ckpt.action_names),
        "action_space": dict(ckpt.action_space),
        "prompt_frames": ckpt.prompt_frames.cpu(),
        "prompt_actions": ckpt.prompt_actions.to(torch.int64).cpu(),
        "summary": dict(ckpt.summary),
        "world": ckpt.world,
        "world_kwargs": dict(ckpt.world_kwargs),
    }
    _check_plain(payload)
    return atomic_torch_save(payload, path)


def load_world_checkpoint(path: str | os.PathLike) -> WorldCheckpoint:
    """Read a released world-model file; raises :class:`CheckpointError` on any defect."""
    p = _load_payload(path, WORLD_KIND, WORLD_KEYS)
    try:
        far_config = FARConfig.from_dict(p["far_config"])
        ae_config = AEConfig.from_dict(p["ae_config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({exc})") from exc
    for key in ("latent_mean", "latent_std"):
        if key not in p["ae_state"]:
            raise CheckpointError(f"{path}: autoencoder weights lack the latent statistics '{key}'")
    return WorldCheckpoint(
        far_config=far_config,
        ae_config=ae_config,
        ae_state=p["ae_state"],
        far_state=p["far_state"],
        action_names=list(p["action_names"]),
        action_space=dict(p["action_space"]),
        prompt_frames=p["prompt_frames"],
        prompt_actions=p["prompt_actions"],
        summary=dict(p["summary"]),
        world=str(p["world"]),
        world_kwargs=dict(p.get("world_kwargs", {})),
    )


def with_half_precision_weights(ckpt: WorldCheckpoint) -> WorldCheckpoint:
    """A copy whose floating-point FAR weights are stored as float16, halving a released file.

    Loading casts them back into the model's float32 parameters; the autoencoder (small, and
    its latent statistics set the scale of everything) keeps float32.
    """
    half = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.far_state.items()}
    return dataclasses.replace(ckpt, far_state=half)


# -- the trained autoencoder on its own (train_ae's output, train_far's input) -------------------
def save_autoencoder(path: str | os.PathLike, ae: FrameAutoencoder, summary: dict[str, Any] | None = None) -> Path:
    """Write an autoencoder (config, weights with latent statistics, summary) atomically."""
    payload = {
        KIND_KEY: AUTOENCODER_KIND,
        "format_version": FORMAT_VERSION,
        "ae_config": ae.cfg.to_dict(),
        "ae_state": {k: v.detach().cpu() for k, v in ae.state_dict().items()},
        "summary": dict(summary or {}),
    }
    _check_plain(payload)
    return atomic_torch_save(payload, path)


def load_autoencoder(path: str | os.PathLike) -> tuple[FrameAutoencoder, dict[str, Any]]:
    """Read an autoencoder file, or the autoencoder inside a world checkpoint (a new world trained
    on the same latents is then compared with that one on equal terms) -> (model in eval mode on
    CPU, its training summary)."""
    try:
        p = _load_payload(path, AUTOENCODER_KIND, AUTOENCODER_KEYS)
        config, state, summary = p["ae_config"], p["ae_state"], p["summary"]
    except CheckpointError:
        if _kind_of(path) != WORLD_KIND:
            raise
        world = load_world_checkpoint(path)
        config, state, summary = world.ae_config.to_dict(), world.ae_state, world.summary.get("autoencoder", {})
    try:
        ae = FrameAutoencoder(AEConfig.from_dict(config))
        ae.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: autoencoder config and weights do not fit ({exc})") from exc
    return ae.eval(), dict(summary)


def _kind_of(path: str | os.PathLike) -> str | None:
    """The far-world kind a readable checkpoint file declares, else None."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: the caller's own error says why
        return None
    return payload.get(KIND_KEY) if isinstance(payload, dict) else None


# -- training states ----------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """The python, numpy and torch (CPU and CUDA) generator states, as tensors and numbers."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss),
        },  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write a training state atomically; raises TypeError if any part is not plain data."""
    payload = {
        KIND_KEY: TRAINING_KIND,
        "format_version": FORMAT_VERSION,
        "step": int(state.step),
        "model": state.model,
        "ema": state.ema,
        "optimizer": state.optimizer,
        "rng": state.rng,
        "config": state.config,
        "extra": state.extra,
    }
    _check_plain(payload)
    return atomic_torch_save(payload, path)


def load_training_state(path: str | os.PathLike) -> TrainingState:
    """Read a training state; raises :class:`CheckpointError` on any defect."""
    p = _load_payload(path, TRAINING_KIND, TRAINING_KEYS)
    return TrainingState(**{k: p[k] for k in TRAINING_KEYS})
