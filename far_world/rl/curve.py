"""Learning-curve points of a training run, kept in ``curve.jsonl`` so that a resumed run extends them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRAIN = "train"  # mean return of the training episodes that ended in one rollout
REAL_EVAL = "real_eval"  # a periodic evaluation in the real world, with its confidence interval


class CurveLog:
    """Append-only JSON lines ``{"kind", "steps", ...}``; a reader keeps the last row per (kind, steps)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, kind: str, steps: int, **values: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"kind": kind, "steps": int(steps), **values}) + "\n")

    def truncate(self, max_steps: int) -> None:
        """Forget points past ``max_steps``: a run resumed from there will produce them again."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["steps"] <= max_steps]
        self.path.write_text("".join(line + "\n" for line in kept))


def read_curve(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``curve.jsonl`` by kind, sorted by steps; an absent file reads as no rows."""
    path = Path(path)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            latest[(row["kind"], row["steps"])] = row
    curves: dict[str, list[dict[str, Any]]] = {}
    for (kind, _), row in sorted(latest.items(), key=lambda item: item[0][1]):
        curves.setdefault(kind, []).append(row)
    return curves
