"""Whether a saved run may be continued under the config asked for now."""

from __future__ import annotations

from typing import Any

# Fields that change how a run reports or where it runs, never what it computes.
RUNTIME_FIELDS = frozenset({"log_every", "ckpt_every", "device"})


def config_differences(saved: dict[str, Any], requested: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ (runtime fields ignored)."""
    diffs = []
    for key in sorted(set(saved) | set(requested)):
        if not prefix and key in RUNTIME_FIELDS:
            continue
        a, b = saved.get(key), requested.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: saved {a!r}, requested {b!r}")
    return diffs


def check_resumable(saved: dict[str, Any], requested: dict[str, Any]) -> None:
    """Raise ValueError when the run folder's saved config differs from the requested one.

    ``steps`` may grow (training longer; the cosine then stretches from the resume point on),
    anything else must match: a resumed run that silently changed its model or data would
    neither be the old run nor a clean new one.
    """
    diffs = [d for d in config_differences(saved, requested) if not d.startswith("steps:")]
    if diffs:
        listing = "\n  ".join(diffs)
        raise ValueError(
            f"the run folder holds a run with another config; use a new --out or the same settings:\n  {listing}"
        )
