"""The released world checkpoints that ship inside the package, found with importlib.resources.

``checkpoints/*.pt`` in the repository installs as package data of ``far_world.checkpoints``,
so ``gymnasium.make("FARWorld-v0")`` works after a plain wheel install, from any folder.
A checkpoint argument names a file; where no such file exists and the argument looks like a
released world (``maze``, ``maze.pt`` or ``checkpoints/maze.pt``), the bundled copy is used:
the commands in the docs then work from any folder, not only from the repository root.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from importlib import resources
from pathlib import Path

BUNDLE_PACKAGE = "far_world.checkpoints"
DEFAULT_WORLD = "maze.pt"
CHECKPOINT_ENV_VAR = "FAR_WORLD_CKPT"
SUFFIX = ".pt"

# Keeps files extracted from a zipped install alive until exit (a no-op for installs on disk).
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def released_checkpoints() -> dict[str, Path]:
    """The bundled checkpoints by file name (``{"maze.pt": Path, ...}``); empty if none ship."""
    try:
        root = resources.files(BUNDLE_PACKAGE)
    except ModuleNotFoundError:
        return {}
    found = {}
    for entry in root.iterdir():
        if entry.name.endswith(SUFFIX) and entry.is_file():
            found[entry.name] = entry if isinstance(entry, Path) else _extracted.enter_context(resources.as_file(entry))
    return dict(sorted(found.items()))


def default_checkpoint_path() -> Path:
    """The released default world (``maze.pt``), or ``$FAR_WORLD_CKPT`` when set."""
    chosen = os.environ.get(CHECKPOINT_ENV_VAR)
    if chosen:
        return resolve_checkpoint(chosen)
    return released_checkpoints().get(DEFAULT_WORLD, Path("checkpoints") / DEFAULT_WORLD)


def released_name(path: str | os.PathLike) -> str | None:
    """The bundled file name that ``path`` refers to (``maze``, ``maze.pt``, ``checkpoints/maze.pt``), else None."""
    p = Path(path)
    if p.is_absolute() or p.parent.as_posix() not in (".", "checkpoints"):
        return None
    return p.name if p.name.endswith(SUFFIX) else p.name + SUFFIX


def resolve_checkpoint(path: str | os.PathLike | None) -> Path:
    """A checkpoint argument as a file: the file itself when it exists, else the released world it names.

    ``None`` is the default world. A path that is neither an existing file nor a released name
    comes back unchanged, so that the loader reports it missing under the name the caller gave.
    """
    if path is None:
        return default_checkpoint_path()
    p = Path(path)
    if p.exists():
        return p
    name = released_name(p)
    bundled = released_checkpoints()
    return bundled[name] if name in bundled else p
