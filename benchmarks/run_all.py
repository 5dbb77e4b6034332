"""Run every benchmark in benchmarks/ and write docs/BENCHMARKS.md: each figure beside the command
that produced it, and the hardware it ran on.

    python benchmarks/run_all.py [--quick] [--only play_speed inference_cost] [--out docs/BENCHMARKS.md]

Each benchmarks/*.py (this file excepted) runs as its own process, with the arguments listed in
COMMANDS (a script not listed there runs without arguments; --quick uses QUICK_COMMANDS). A
benchmark that fails or times out is reported as such with the end of its output; the others
still run. Every line a benchmark prints is a figure: JSON lines are shown as key = value.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from far_world.files import atomic_write

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# Arguments per benchmark: the full measurements, and a few-minute version of each.
COMMANDS: dict[str, list[str]] = {
    "collect_speed": [],
    "play_speed": [],
    "train_speed": [],
    "inference_cost": [],
    "shape_speed": [],
    "guidance_cost": ["--ckpt", "minecraft"],
}
QUICK_COMMANDS: dict[str, list[str]] = {
    "collect_speed": ["--worlds", "doom", "--workers", "1"],
    "play_speed": ["--steps", "20", "--vector", "4", "--long-steps", "1101"],
    "train_speed": ["--presets", "tiny", "--steps", "2"],
    "inference_cost": ["--preset", "tiny", "--lengths", "16,64", "--steps", "3"],
    "shape_speed": ["--steps", "20", "--vector", "4", "--shapes", "depth=6 width=256 heads=4"],
    "guidance_cost": ["--steps", "10", "--rounds", "1", "--vector", "4"],
}


def discover(bench_dir: Path) -> list[str]:
    """Benchmark names: every ``*.py`` of ``bench_dir`` but this runner and private modules."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))


def run_one(bench_dir: Path, name: str, args: list[str], timeout: float) -> dict:
    """Run one benchmark; returns its command, exit status, seconds and output lines."""
    rel = bench_dir / f"{name}.py"
    command = ["python", os.path.relpath(rel, REPO) if rel.is_relative_to(REPO) else str(rel), *args]
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=timeout)
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status, stdout, stderr = "timeout", _text(exc.stdout), _text(exc.stderr)
    return {
        "name": name,
        "command": shlex.join(command),
        "status": status,
        "seconds": round(time.perf_counter() - start, 1),
        "lines": [line for line in stdout.splitlines() if line.strip()],
        "stderr_tail": stderr.strip().splitlines()[-8:],
    }


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def figure(line: str) -> str:
    """A printed line as a table cell: JSON objects as ``key = value`` pairs."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return line.replace("|", "\\|")
    if isinstance(obj, dict):
        return "; ".join(f"{k} = {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in obj.items()).replace("|", "\\|")
    return line


def markdown(results: list[dict], hardware: dict, peak_gflop_s: float, quick: bool) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        f"Written by `python benchmarks/run_all.py{' --quick' if quick else ''}` on {stamp}.",
        "Hardware: " + ", ".join(f"{k} {v}" for k, v in hardware.items())
        + f"; fp32 matmul peak measured {peak_gflop_s:.1f} GFLOP/s.",
    ]
    for r in results:
        ok = r["status"] == 0
        outcome = "ok" if ok else f"FAILED ({r['status']})"
        head = f"## {r['name']}\n\n`{r['command']}`: {outcome} in {r['seconds']} s"
        rows = [f"| {figure(line)} | `{r['command']}` |" for line in r["lines"]]
        body = "\n".join(["| figure | command |", "| --- | --- |", *rows]) if rows else "(no output)"
        if not ok:
            body += "\n\nEnd of its error output:\n\n```\n" + "\n".join(r["stderr_tail"]) + "\n```"
        parts.append(f"{head}\n\n{body}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the few-minute version of each benchmark")
    p.add_argument("--only", nargs="+", default=None, help="benchmark names (default: all)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    p.add_argument("--bench-dir", type=Path, default=BENCH_DIR)
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per benchmark")
    args = p.parse_args(argv)

    # Imported here so that --help works before torch is loaded.
    from far_world.hardware import describe_hardware, measure_matmul_peak

    names = [n for n in discover(args.bench_dir) if args.only is None or n in args.only]
    table = QUICK_COMMANDS if args.quick else COMMANDS
    hardware, peak = describe_hardware(), measure_matmul_peak()
    results = []
    for name in names:
        print(f"running {name} ...", flush=True)
        results.append(run_one(args.bench_dir, name, table.get(name, []), args.timeout))
        print(f"  {results[-1]['status']} in {results[-1]['seconds']} s", flush=True)
    report = markdown(results, hardware, peak, args.quick)
    atomic_write(args.out, lambda fh: fh.write(report.encode()))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
