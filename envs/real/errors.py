"""Errors a user can act on: a world spec that names nothing, or a world whose package is missing."""

from __future__ import annotations

WORLDS_EXTRA_HINT = 'pip install -e ".[worlds]"'


class UnknownWorldError(ValueError):
    """A world spec that names no world (or a scenario / environment that does not exist)."""


class MissingWorldPackageError(ImportError):
    """A known world whose Python package is not installed."""

    def __init__(self, world: str, package: str, hint: str = WORLDS_EXTRA_HINT) -> None:
        super().__init__(f"world '{world}' needs the package '{package}', which is not installed: {hint}")
        self.world = world
        self.package = package
