"""Compare free-play evaluations of several checkpoints on the same windows: one Markdown row each.

    python train/compare_evals.py runs/eval/base/metrics.json runs/eval/variant/metrics.json ...

The first file is the baseline. Each row gives a run's free-play figures (mean and median over
windows) and, window by window against the baseline, the share of windows it wins: higher PSNR,
lower ST-LPIPS, a sharpness ratio closer to 1, a lower colour error. The runs must have scored
the same windows (same data, --seed and sizes); the script refuses otherwise.

The last column applies the free-play half of the release rule (docs/decisions.md, "The maze
release rule"): a run passes when it wins at least as many windows on each figure as a one-sided
sign test asks (31 of 48) and its FVD is no higher than the baseline's. Play speed is the other
half: benchmarks/play_speed.py. ``--plot PATH`` also draws each run's PSNR and FVD against its
sharpness ratio, to see whether detail was bought with either.

Where a run was also scored by the action protocol, two columns join the table: the
true-vs-shuffled PSNR gap over horizons 1..8 and the inverse-dynamics accuracy on generated pairs
(with that on real pairs). They are read from the same metrics.json (``--protocol freeplay
actions``) or from the folder beside it named with ``_actions`` (``runs/eval/NAME_actions``, for
an action protocol run on its own). Where the baseline's evaluation counted light pixels (small
light things such as doom's medkits; far_world/evaluation/metrics.py), a column gives each run's
share beside the real frames'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from far_world.evaluation.action_following import GAP_HORIZONS, early_gap
from far_world.evaluation.free_play import summary, wins_needed
from far_world.evaluation.report import save_tradeoff_plot

# figure -> how a window is won against the baseline (values mapped so that higher is better).
FIGURES = {
    "psnr": lambda v: v,
    "st_lpips": lambda v: -v,
    "sharpness_ratio": lambda v: -np.abs(v - 1.0),
    "colour_error_late": lambda v: -v,
}


def read_metrics(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (train/evaluate.py writes OUT/metrics.json when it finishes)")
    return json.loads(path.read_text())


def load_free_play(path: Path, metrics: dict | None = None) -> dict:
    """The free-play section of ``path``'s metrics (``metrics``: the file, if already read)."""
    metrics = read_metrics(path) if metrics is None else metrics
    if "sources" not in metrics.get("freeplay", {}):
        raise SystemExit(f"{path}: no free-play protocol in it (evaluate with --protocol freeplay)")
    return metrics["freeplay"]


def load_action_following(path: Path, metrics: dict) -> dict | None:
    """The action protocol's metrics of the run scored in ``path`` (read as ``metrics``), if there
    are any: in the same file, or in the ``_actions`` folder beside its own."""
    if "actions" in metrics:
        return metrics["actions"]
    beside = path.parent.with_name(path.parent.name + "_actions") / path.name
    if beside.is_file():
        return json.loads(beside.read_text()).get("actions")
    return None


def action_cells(actions: dict | None) -> list[str]:
    """The gap over the first horizons and the IDM's accuracy on generated and real pairs."""
    if actions is None:
        return ["–", "–"]
    idm = actions.get("idm_accuracy", {})
    idm_cell = f"{idm['model_true']:.3f} (real {idm['real']:.3f})" if "model_true" in idm and "real" in idm else "–"
    return [f"{early_gap(actions):.2f}", idm_cell]


def table(paths: list[Path]) -> list[list[str]]:
    """The header, then one row a run; the action columns only where some run has them."""
    files = [read_metrics(path) for path in paths]
    runs = [load_free_play(path, metrics) for path, metrics in zip(paths, files)]
    actions = [load_action_following(path, metrics) for path, metrics in zip(paths, files)]
    with_actions = any(a is not None for a in actions)
    header = ["run", "PSNR", "ST-LPIPS", "sharpness ratio", "colour error 33-64", "FVD (last 16 steps)"]
    real_light = runs[0].get("real", {}).get("highlight_share")
    if real_light is not None:
        header.append(f"light pixels, % (real {100 * np.mean(real_light):.3f})")
    if with_actions:
        header += [f"gap 1..{GAP_HORIZONS} (dB)", "IDM, generated pairs"]
    base = runs[0]
    out = [header + ["release rule"]]
    for path, run, run_actions in zip(paths, runs, actions):
        if run["sources"] != base["sources"]:
            raise SystemExit(f"{path}: scored other windows than {paths[0]}; compare runs on the same windows")
        model, reference = run["per_window"]["model"], base["per_window"]["model"]
        row, wins = [path.parent.name], {}
        for figure, better in FIGURES.items():
            if figure not in model or figure not in reference:
                row.append("–")
                continue
            values = np.array(model[figure])
            s = summary(better(values), better(np.array(reference[figure])))
            wins[figure] = s["win_rate"] * len(values)
            cell = f"{values.mean():.3f} / {np.median(values):.3f}"
            row.append(cell if path == paths[0] else f"{cell} (wins {s['win_rate']:.2f})")
        fvd = run.get("fvd", {}).get("model")
        row.append("–" if fvd is None else f"{fvd:.0f}")
        if real_light is not None:
            light = model.get("highlight_share")
            row.append("–" if light is None else f"{100 * np.mean(light):.3f}")
        if with_actions:
            row += action_cells(run_actions)
        row.append("" if path == paths[0] else release_verdict(wins, len(base["sources"]), fvd, base.get("fvd", {}).get("model")))
        out.append(row)
    return out


def release_verdict(wins: dict[str, float], windows: int, fvd: float | None, base_fvd: float | None) -> str:
    """"passes", or what fails: figures won in too few windows (ties count half), a higher FVD,
    or a figure missing from either run (a verdict needs all of them)."""
    needed = wins_needed(windows)
    failures = [f"{figure} {wins[figure]:g}/{windows}" for figure in FIGURES if figure in wins and wins[figure] < needed]
    failures += [f"no {figure}" for figure in FIGURES if figure not in wins]
    if fvd is None or base_fvd is None:
        failures.append("no FVD")
    elif fvd > base_fvd:
        failures.append(f"FVD {fvd:.0f} > {base_fvd:.0f}")
    return "passes" if not failures else f"fails (needs {needed}/{windows}): " + ", ".join(failures)


def tradeoff_points(paths: list[Path]) -> dict[str, dict[str, float | None]]:
    """Each run's mean free-play PSNR and sharpness ratio and its FVD, by run folder name."""
    points = {}
    for path in paths:
        run = load_free_play(path)
        model = run["per_window"]["model"]
        if "sharpness_ratio" not in model:
            raise SystemExit(f"{path}: no sharpness ratio to plot (an evaluation from before it existed)")
        fvd = run.get("fvd", {}).get("model")
        points[path.parent.name] = {
            "psnr": float(np.mean(model["psnr"])), "sharpness": float(np.mean(model["sharpness_ratio"])),
            "fvd": None if fvd is None else float(fvd),
        }  # fmt: skip
    return points


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json files; the first is the baseline")
    parser.add_argument("--plot", type=Path, default=None, help="PNG: PSNR and FVD against the sharpness ratio, a point a run")
    args = parser.parse_args(argv)
    header, *runs = table(args.metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in runs]
    text = "\n".join(lines)
    print(text)
    if args.plot is not None:
        print(f"wrote {save_tradeoff_plot(tradeoff_points(args.metrics), args.plot)}")
    return text


if __name__ == "__main__":
    main()
