"""What every public-dataset loader provides: find source items, convert one, describe the result."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from far_world.data.episodes import DatasetMeta, Episode


class LoaderError(ValueError):
    """A source file or folder that cannot be converted (missing keys, bad shapes, unreadable video)."""


class DatasetLoader(Protocol):
    """Converts one public dataset's files into episodes of our format.

    ``find`` lists the source items under a folder (files or demo folders, sorted so that
    imports are reproducible); ``load`` converts one item, raising :class:`LoaderError`
    (or an OS/zip error) for a broken one; ``meta`` describes the converted dataset.
    """

    name: str

    def find(self, src: Path) -> list[Path]: ...

    def load(self, item: Path) -> Episode: ...

    def meta(self) -> DatasetMeta: ...
