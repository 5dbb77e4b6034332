"""What a training run writes as it goes: TensorBoard scalars and a ``metrics.jsonl``.

Only the main rank writes. After a resume from step k, TensorBoard events past k from the
killed run are purged (``purge_step``) and the JSON lines keep growing: a reader takes the
last line written for a step.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLog:
    def __init__(self, out_dir: str | Path, enabled: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._writer: SummaryWriter | None = None
        self._jsonl = None
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=start_step or None)
            self._jsonl = open(self.out_dir / "metrics.jsonl", "a")

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        """Log ``values`` for ``step`` (the number of completed optimizer steps)."""
        if not self.enabled:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", value, step)
        self._jsonl.write(json.dumps({"step": step, "split": prefix, **values}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._writer.close()
            self._jsonl.close()


def read_metrics(path: str | Path, split: str = "train") -> dict[int, dict[str, float]]:
    """Metrics by step from a ``metrics.jsonl`` (the last line written for a step wins)."""
    rows: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        if row.get("split") == split:
            rows[int(row.pop("step"))] = row
    return rows
