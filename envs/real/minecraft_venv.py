"""The Minecraft world's own interpreter: where it lives, what it holds, and how to make it.

The game (``minecraft-python``, a port of Minecraft Indev) needs numpy<2 and CPython 3.10 or
3.11 on Linux x86-64, while the project uses numpy 2; so it gets a virtual environment of its
own, outside the repository, shared by every checkout of the user:

    python -m far_world.envs.real.minecraft_venv   # what `bash install.sh --minecraft` runs

Its place is ``$FAR_WORLD_MINECRAFT_VENV``, else ``$XDG_DATA_HOME/far-world/minecraft-venv``
(``~/.local/share/...``). far-world ships none of the game's files: its textures are Mojang's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Exactly this build: an unpinned install picks '161348', a pre-classic version whose number
# sorts higher. Its wheel declares no dependencies; these are the ones it imports.
REQUIREMENTS = (
    "minecraft-python==0.31.20100130",
    "numpy<2",
    "pyglet>=1.5.29,<2",
    "pillow",
    "nbtlib",
)
VENV_VARIABLE = "FAR_WORLD_MINECRAFT_VENV"
INSTALL_HINT = "bash install.sh --minecraft"
SUPPORTED_PYTHONS = ("3.11", "3.10")  # the game ships wheels for these only


def venv_dir() -> Path:
    """Where the game's virtual environment is (or will be made)."""
    if os.environ.get(VENV_VARIABLE):
        return Path(os.environ[VENV_VARIABLE]).expanduser()
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "far-world" / "minecraft-venv"


def game_python() -> Path | None:
    """The game interpreter, or None when the environment is missing or lacks the game."""
    python = venv_dir() / "bin" / "python"
    if not python.is_file():
        return None
    package = next((venv_dir() / "lib").glob("python3.*/site-packages/mc/net/minecraft/client/Minecraft.py"), None)
    return python if package is not None else None


def _base_python() -> str:
    """A CPython that the game has wheels for: this one, or python3.11/3.10 on the PATH."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" in SUPPORTED_PYTHONS:
        return sys.executable
    for version in SUPPORTED_PYTHONS:
        found = shutil.which(f"python{version}")
        if found:
            return found
    raise SystemExit(f"the Minecraft world needs CPython {' or '.join(SUPPORTED_PYTHONS)}; none found on the PATH")


def create(venv: Path, quiet: bool = True) -> Path:
    """Make (or complete) the game's environment at ``venv``; returns its interpreter."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", *(["-q"] if quiet else []), *REQUIREMENTS], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=None, help=f"where to make it (default: {venv_dir()})")
    args = parser.parse_args(argv)
    python = create(args.venv or venv_dir())
    print(f"Minecraft world: game interpreter {python}")
    if args.venv is not None and args.venv != venv_dir():
        print(f"export {VENV_VARIABLE}={args.venv}  # so that far-world finds it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
