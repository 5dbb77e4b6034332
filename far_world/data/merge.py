"""One dataset from several of the same world: a training mixture without copying episodes.

Episodes are hard-linked (copied where the folders sit on different file systems) under names
that say where they came from (``s1_ep_000004.npz``: the second source's ``ep_000004``), so the
merged folder trains, caches latents and splits exactly as a collected one does, and a source
episode's split is kept. Sources must agree on the world, the actions, the frame size and the
frame skip: anything else would mix actions or pixels that mean different things.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path

from far_world.data.episodes import DatasetMeta, episode_paths, read_meta, write_meta

SPLITS = ("train", "test")
# Fields that must be equal across sources: what an action index and a pixel mean.
_SHARED_FIELDS = ("world", "action_names", "action_space", "resolution", "frame_skip")


def merged_name(source_index: int, episode_file: str) -> str:
    return f"s{source_index}_{episode_file}"


def merge_meta(metas: list[DatasetMeta], sources: list[Path]) -> DatasetMeta:
    """The merged folder's meta.json: the shared fields, the policies joined with '+', and each
    source's own meta under ``info['sources']`` so that the mixture stays traceable."""
    if not metas:
        raise ValueError("merging needs at least one source dataset")
    first = asdict(metas[0])
    for meta, source in zip(metas[1:], sources[1:], strict=True):
        other = asdict(meta)
        for name in _SHARED_FIELDS:
            if other[name] != first[name]:
                raise ValueError(
                    f"{source} differs from {sources[0]} in {name}: {other[name]!r} against {first[name]!r}; "
                    "only datasets of one world with the same actions and frames can be merged"
                )
    policies = "+".join(dict.fromkeys(m.policy for m in metas))
    return DatasetMeta(
        **{name: first[name] for name in _SHARED_FIELDS},
        policy=policies,
        seed=metas[0].seed,
        extras=sorted(set.intersection(*(set(m.extras) for m in metas))),
        info={"sources": [{"path": str(s), **asdict(m)} for s, m in zip(sources, metas, strict=True)]},
    )


def merge_datasets(sources: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, int]:
    """Merge episode folders into ``out``; returns the episode count per split.

    Rerunning the same merge is a no-op for links already there; an ``out`` that holds another
    merge's meta.json is refused rather than mixed into.
    """
    source_paths = [Path(s) for s in sources]
    meta = merge_meta([read_meta(s) for s in source_paths], source_paths)
    out = Path(out)
    if (out / "meta.json").is_file() and read_meta(out) != meta:
        raise ValueError(f"{out} already holds another dataset; choose a new --out")
    counts = dict.fromkeys(SPLITS, 0)
    for index, source in enumerate(source_paths):
        for split in SPLITS:
            if not (source / split).is_dir():
                continue
            (out / split).mkdir(parents=True, exist_ok=True)
            for path in episode_paths(source / split):
                _link_or_copy(path, out / split / merged_name(index, path.name))
                counts[split] += 1
    write_meta(out, meta)
    return counts


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
