"""The latent cache: every frame of a folder of episodes encoded once by the autoencoder.

FAR trains on latents, and encoding the same frames again every epoch would cost more than
the transformer step on a CPU. The cache folder holds
  cache.json               fingerprint (the autoencoder's identity), latent shape, per-channel
                           latent mean/std over the whole cache, whether the build finished
  meta.json                the source folder's DatasetMeta, so the cache describes itself
  <stem>.latents.npy       float16 (T+1, C, h, w): float16 halves the disk and the page cache
                           that memory-mapped training reads through; latents are O(1) numbers
                           whose float16 rounding (~1e-3 relative) is far below the flow noise
  <stem>.steps.npz         actions, rewards, terminated, extra_* as in the episode, plus the
                           source file's size and mtime and the episode's latent moments
Each entry is written atomically, latents first, so an entry is complete exactly when its
``.steps.npz`` exists: an interrupted build resumes where it stopped. An entry is re-encoded
when its source episode changed (size or mtime); the whole cache is rebuilt when the
fingerprint changes, since latents of another autoencoder are meaningless to this one.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from far_world.files import atomic_write, exclusive_lock, write_json
from far_world.data.episodes import EXTRA_PREFIX, Episode, EpisodeError, check_real_data, episode_paths, load_episode

CACHE_FILE = "cache.json"
LOCK_FILE = ".build.lock"  # held by the one process building the cache
LATENTS_SUFFIX = ".latents.npy"
STEPS_SUFFIX = ".steps.npz"
CACHE_VERSION = 1

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CachedEpisode:
    """One cached episode: ``latents`` float16 (T+1,C,h,w) (memory-mapped), the rest as in :class:`Episode`."""

    latents: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def is_latent_cache(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CACHE_FILE).is_file()


def read_cache_info(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The cache's ``cache.json`` (fingerprint, latent_shape, latent_mean, latent_std, complete, ...)."""
    path = Path(cache_dir) / CACHE_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no latent cache at {cache_dir} (missing {CACHE_FILE})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(info, dict) or info.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: not a version {CACHE_VERSION} latent cache")
    return info


def cached_stems(cache_dir: str | os.PathLike) -> list[str]:
    """Names of the complete entries of a cache, sorted."""
    return sorted(p.name.removesuffix(STEPS_SUFFIX) for p in Path(cache_dir).glob("*" + STEPS_SUFFIX))


def load_cached_episode(cache_dir: str | os.PathLike, stem: str) -> CachedEpisode:
    """One entry, latents memory-mapped; raises :class:`EpisodeError` when it is damaged."""
    cache_dir = Path(cache_dir)
    try:
        latents = np.load(cache_dir / (stem + LATENTS_SUFFIX), mmap_mode="r")
        with np.load(cache_dir / (stem + STEPS_SUFFIX), allow_pickle=False) as steps:
            arrays = {key: steps[key] for key in steps.keys()}
    except Exception as exc:  # numpy and zipfile raise many types for damaged files
        raise EpisodeError(f"{cache_dir / stem}: unreadable cache entry ({type(exc).__name__}: {exc})") from exc
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in arrays.items() if k.startswith(EXTRA_PREFIX)}
    missing = [k for k in ("actions", "rewards", "terminated") if k not in arrays]
    if missing or latents.ndim != 4 or len(latents) != len(arrays.get("actions", ())) + 1:
        raise EpisodeError(f"{cache_dir / stem}: inconsistent cache entry (latents {latents.shape}, missing {missing})")
    return CachedEpisode(latents, arrays["actions"], arrays["rewards"], arrays["terminated"], extras)


def build_latent_cache(
    episode_folder: str | os.PathLike,
    cache_dir: str | os.PathLike,
    encode_fn: EncodeFn,
    fingerprint: str,
    batch_size: int = 256,
    progress: bool = True,
    allow_imagined: bool = False,
) -> Path:
    """Encode every valid episode of ``episode_folder`` into ``cache_dir``; returns ``cache_dir``.

    ``encode_fn``: uint8 frames (N,H,W,3) -> float latents (N,C,h,w), called under
    ``torch.inference_mode`` on CPU tensors (move them to a device inside it). ``fingerprint``
    identifies the autoencoder (e.g. a hash of its weights); entries of another fingerprint are
    deleted. Entries already encoded with this fingerprint are kept, bad episodes skipped with a
    warning, entries whose source episode is gone removed. Builders of one cache take turns (two
    runs started at once on the same data): the later one finds the earlier one's entries current.
    """
    source, cache_dir = Path(episode_folder), Path(cache_dir)
    check_real_data(source, allow_imagined)  # before any encoding work: imagined data needs consent
    paths = episode_paths(source)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / LOCK_FILE):
        return _build(source, paths, cache_dir, encode_fn, fingerprint, batch_size, progress)


def _build(
    source: Path, paths: list[Path], cache_dir: Path, encode_fn: EncodeFn, fingerprint: str, batch_size: int,
    progress: bool,
) -> Path:
    """build_latent_cache's work, done while holding the cache's lock."""
    _start_build(cache_dir, source, fingerprint)
    for meta_path in (source / "meta.json", source.parent / "meta.json"):
        if meta_path.is_file():
            meta_bytes = meta_path.read_bytes()
            atomic_write(cache_dir / "meta.json", lambda fh: fh.write(meta_bytes))
            break
    moments = _Moments()
    kept: set[str] = set()
    for path in tqdm(paths, desc="latent cache", unit="ep", disable=not progress):
        steps_path = cache_dir / (path.stem + STEPS_SUFFIX)
        if not _entry_is_current(steps_path, path):
            try:
                episode = load_episode(path, mmap=True)
            except EpisodeError as exc:
                warnings.warn(f"skipping episode: {exc}", stacklevel=2)
                continue
            _encode_entry(cache_dir, path, episode, encode_fn, batch_size)
        kept.add(path.stem)
        with np.load(steps_path, allow_pickle=False) as steps:
            moments.add(steps["latent_sum"], steps["latent_sq_sum"], int(steps["latent_count"]))
    _remove_entries(cache_dir, keep=kept)
    if not kept:
        raise ValueError(f"no valid episodes in {source} to cache")
    shape = np.load(cache_dir / (sorted(kept)[0] + LATENTS_SUFFIX), mmap_mode="r").shape[1:]
    info = read_cache_info(cache_dir)
    mean, std = moments.mean_std()
    info.update(complete=True, episodes=len(kept), latent_shape=list(shape), latent_mean=mean, latent_std=std)
    write_json(cache_dir / CACHE_FILE, info)
    return cache_dir


def _start_build(cache_dir: Path, source: Path, fingerprint: str) -> None:
    """Record the fingerprint before encoding; a different one wipes the old entries first."""
    try:
        previous = read_cache_info(cache_dir).get("fingerprint")
    except (FileNotFoundError, ValueError):
        previous = None
    if previous != fingerprint:
        _remove_entries(cache_dir, keep=set())
    for tmp in cache_dir.glob(".*.tmp"):  # left by a write that was killed
        if any(marker in tmp.name for marker in (LATENTS_SUFFIX, STEPS_SUFFIX, CACHE_FILE)):
            tmp.unlink()
    info = {"version": CACHE_VERSION, "fingerprint": fingerprint, "source": str(source.resolve()),
            "dtype": "float16", "complete": False}  # fmt: skip
    write_json(cache_dir / CACHE_FILE, info)


def _entry_is_current(steps_path: Path, source_path: Path) -> bool:
    """Whether a complete entry exists and was made from the source file as it is now."""
    if not steps_path.is_file():
        return False
    stat = source_path.stat()
    try:
        with np.load(steps_path, allow_pickle=False) as steps:
            return int(steps["source_size"]) == stat.st_size and int(steps["source_mtime_ns"]) == stat.st_mtime_ns
    except Exception:  # a damaged entry is simply rebuilt
        return False


def _encode_entry(cache_dir: Path, path: Path, episode: Episode, encode_fn: EncodeFn, batch_size: int) -> None:
    """Encode one episode's frames in batches and write its two files (latents first)."""
    chunks = []
    with torch.inference_mode():
        for lo in range(0, len(episode.frames), batch_size):
            frames = torch.from_numpy(np.array(episode.frames[lo : lo + batch_size]))  # copy: memmaps are read-only
            latents = encode_fn(frames)
            if latents.ndim != 4 or latents.shape[0] != len(frames):
                shape = tuple(latents.shape)
                raise ValueError(f"encode_fn returned {shape} for {len(frames)} frames; expected (N,C,h,w)")
            chunks.append(latents.detach().float().cpu().numpy())
    latents = np.concatenate(chunks)
    largest = float(np.abs(latents).max())
    if not np.isfinite(largest) or largest > float(np.finfo(np.float16).max):
        raise ValueError(f"{path}: latents are not finite or overflow float16 (max |z| {largest:.3g})")
    stat = path.stat()
    steps = {
        "actions": np.asarray(episode.actions, np.int64),
        "rewards": np.asarray(episode.rewards, np.float32),
        "terminated": np.asarray(episode.terminated, np.bool_),
        **{EXTRA_PREFIX + k: np.asarray(v) for k, v in episode.extras.items()},
        "source_size": np.int64(stat.st_size),
        "source_mtime_ns": np.int64(stat.st_mtime_ns),
        "latent_sum": latents.sum(axis=(0, 2, 3), dtype=np.float64),
        "latent_sq_sum": np.square(latents, dtype=np.float64).sum(axis=(0, 2, 3)),
        "latent_count": np.int64(latents.shape[0] * latents.shape[2] * latents.shape[3]),
    }
    atomic_write(cache_dir / (path.stem + LATENTS_SUFFIX), lambda fh: np.save(fh, latents.astype(np.float16)))
    atomic_write(cache_dir / (path.stem + STEPS_SUFFIX), lambda fh: np.savez(fh, **steps))


class _Moments:
    """Per-channel running sums of latents, for the cache's mean and std."""

    def __init__(self) -> None:
        self.total = self.squares = None
        self.count = 0

    def add(self, total: np.ndarray, squares: np.ndarray, count: int) -> None:
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += count

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / self.count
        var = np.maximum(self.squares / self.count - mean**2, 0.0)
        return mean.tolist(), np.sqrt(var).tolist()


def _remove_entries(cache_dir: Path, keep: set[str]) -> None:
    """Delete the cache's own entry files (never anything else) except those in ``keep``."""
    for suffix in (STEPS_SUFFIX, LATENTS_SUFFIX):  # steps first: an entry never looks complete half-deleted
        for path in cache_dir.glob("*" + suffix):
            if path.name.removesuffix(suffix) not in keep:
                path.unlink()
