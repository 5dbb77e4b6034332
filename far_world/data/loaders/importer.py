"""Convert a public dataset into ``out/{train,test}/*.npz`` + ``out/meta.json``, resumably.

The split: when the source already has one (a ``train`` or ``test`` folder on an item's
path, as TECO's sets do, whose test set is the one FAR is scored on) it is kept; otherwise
a seeded shuffle puts ``test_fraction`` of the items in ``test``. An item whose output file
already exists is not converted again, so an interrupted import resumes; a broken item is
skipped with a warning naming it.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from far_world.data.episodes import DatasetMeta, EpisodeError, read_meta, save_episode, write_meta
from far_world.data.loaders.base import DatasetLoader, LoaderError

# What a broken source item raises; anything else is a bug and should stop the import.
_BROKEN_ITEM_ERRORS = (LoaderError, EpisodeError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclass
class ImportSummary:
    """Counts of one import run (``skipped`` names the broken source items)."""

    train: int = 0
    test: int = 0
    already_done: int = 0
    skipped: list[str] = field(default_factory=list)


def output_name(item: Path, src: Path) -> str:
    """A file name unique within its split: the item's path under ``src``, split folder left out."""
    relative = item.relative_to(src) if item != src else Path(item.name)
    parts = [p for p in relative.with_suffix("").parts if p not in ("train", "test")]
    return "_".join(parts or [relative.stem]) + ".npz"


def assign_splits(items: list[Path], src: Path, test_fraction: float, seed: int) -> list[str]:
    """``"train"`` or ``"test"`` for each item: the source's own split if it has one, else a seeded draw."""
    own = []
    for item in items:
        parts = item.relative_to(src).parts if item != src else ()
        own.append("test" if "test" in parts else "train" if "train" in parts else None)
    if any(split is not None for split in own):
        return [split or "train" for split in own]
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * len(items)))
    if test_fraction > 0 and len(items) > 1:
        n_test = min(max(n_test, 1), len(items) - 1)  # a split that was asked for is never empty
    test = set(np.random.default_rng(seed).permutation(len(items))[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(len(items))]


def import_dataset(
    loader: DatasetLoader,
    src: str | os.PathLike,
    out: str | os.PathLike,
    test_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> ImportSummary:
    """Convert every item ``loader`` finds under ``src`` into episodes under ``out`` (see the module doc)."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"no source dataset at {src}")
    meta = loader.meta()
    _check_compatible_meta(out, meta)
    items = loader.find(src)[:limit]
    if not items:
        raise LoaderError(f"no {loader.name} source files found under {src}")
    splits = assign_splits(items, src, test_fraction, seed)
    meta.seed = seed
    meta.info = {**meta.info, "source": str(src.resolve()), "test_fraction": test_fraction}
    write_meta(out, meta)  # first, so that the episodes of an interrupted import are usable
    summary = ImportSummary()
    for item, split in tqdm(list(zip(items, splits)), desc=f"import {loader.name}", unit="ep", disable=not progress):
        target = out / split / output_name(item, src)
        if target.is_file():
            summary.already_done += 1
            continue
        try:
            episode = loader.load(item)
        except _BROKEN_ITEM_ERRORS as exc:
            warnings.warn(f"skipping {item}: {exc}", stacklevel=2)
            summary.skipped.append(str(item))
            continue
        save_episode(target, episode)
        setattr(summary, split, getattr(summary, split) + 1)
    return summary


def _check_compatible_meta(out: Path, meta: DatasetMeta) -> None:
    """Refuse to mix two datasets (other world or action space) in one output folder."""
    if not (out / "meta.json").is_file():
        return
    existing = read_meta(out)
    if (existing.world, existing.action_space, existing.resolution) != (meta.world, meta.action_space, meta.resolution):
        raise ValueError(
            f"{out} already holds {existing.world} {json.dumps(existing.action_space)} {existing.resolution}; "
            f"importing {meta.world} {json.dumps(meta.action_space)} {meta.resolution} there would mix them"
        )
