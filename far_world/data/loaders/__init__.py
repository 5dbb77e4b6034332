"""Loaders that convert public datasets into our episode format (see docs/datasets.md)."""

from __future__ import annotations

from far_world.data.loaders.base import DatasetLoader, LoaderError
from far_world.data.loaders.importer import ImportSummary, import_dataset
from far_world.data.loaders.minecraft_actions import DEFAULT_CAMERA_THRESHOLD, ActionKind
from far_world.data.loaders.minerl import MineRLLoader
from far_world.data.loaders.teco import TecoLoader
from far_world.data.loaders.vpt import VPTLoader

FORMATS = ("teco-dmlab", "teco-minecraft", "minerl", "vpt")


def make_loader(
    fmt: str,
    resolution: int | None = None,
    actions: ActionKind = "discrete",
    camera_threshold: float = DEFAULT_CAMERA_THRESHOLD,
) -> DatasetLoader:
    """The loader of one of :data:`FORMATS`.

    ``resolution``: square side of the converted frames; ``None`` keeps TECO's native size and
    gives 64 for MineRL and VPT. ``actions`` and ``camera_threshold`` (degrees) apply to the
    Minecraft recordings (MineRL, VPT), whose inputs are mapped to our action space.
    """
    if fmt in ("teco-dmlab", "teco-minecraft"):
        return TecoLoader(fmt.removeprefix("teco-"), resolution)  # type: ignore[arg-type]
    if fmt in ("minerl", "vpt"):
        cls = MineRLLoader if fmt == "minerl" else VPTLoader
        return cls(actions=actions, camera_threshold=camera_threshold, resolution=resolution or 64)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "DatasetLoader",
    "ImportSummary",
    "LoaderError",
    "MineRLLoader",
    "TecoLoader",
    "VPTLoader",
    "import_dataset",
    "make_loader",
]
