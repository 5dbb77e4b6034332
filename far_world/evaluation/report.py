"""metrics.json -> results.md (Markdown tables) and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from far_world.evaluation.action_following import GAP_HORIZONS, early_gap

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit to import
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[Any]], digits: int = 2) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def shown_horizons(horizon: int) -> list[int]:
    """Horizons worth a column: 1, 2, 4, 8, ... and the last one."""
    out, h = [], 1
    while h < horizon:
        out.append(h)
        h *= 2
    return out + [horizon]


def _distance(x: float | None) -> str | None:
    """ST-LPIPS and LPIPS are small numbers: four decimals."""
    return None if x is None else f"{x:.4f}"


def _fidelity(m: dict) -> str:
    hs = shown_horizons(m["horizon"])
    scores = m["scores"].values()
    perceptual = [(k, label) for k, label in (("mean_st_lpips", "mean ST-LPIPS"), ("mean_lpips", "mean LPIPS"))
                  if any(k in s for s in scores)]  # fmt: skip
    fvd_videos = m.get("fvd_videos", 0)
    header = ["predictor", *[f"PSNR@{h}" for h in hs], "mean PSNR", "mean SSIM", *[label for _, label in perceptual],
              f"FVD ({fvd_videos} clips)" if fvd_videos else "FVD"]  # fmt: skip
    rows = [
        [name, *[s["psnr"][h - 1] for h in hs], s["mean_psnr"], s["mean_ssim"], *[_distance(s.get(k)) for k, _ in perceptual],
         m["fvd"].get(name)]
        for name, s in m["scores"].items()
    ]  # fmt: skip
    text = f"{m['windows']} windows, {m['context']} context frames, horizons 1..{m['horizon']} (PSNR in dB)."
    if fvd_videos:
        text += (
            f" FVD between {fvd_videos} true and {fvd_videos} predicted clips of the first {m['fvd_frames']} "
            f"predicted frames ({m['fvd_network']}); FVD from so few clips is biased upwards, so compare it "
            "only at equal clip counts."
        )
    return text + "\n\n" + _table(header, rows) + _notes(m.get("notes", []))


def _actions(m: dict) -> str:
    hs = shown_horizons(m["horizon"])
    header = ["future actions", *[f"PSNR@{h}" for h in hs], "mean PSNR", "mean SSIM"]
    rows = [[name, *[s["psnr"][h - 1] for h in hs], s["mean_psnr"], s["mean_ssim"]] for name, s in m["scores"].items()]
    rows.append(["gap true - shuffled", *[m["psnr_gap_shuffled"][h - 1] for h in hs], m["mean_psnr_gap_shuffled"], None])
    rows.append(["gap true - null", *[m["psnr_gap_null"][h - 1] for h in hs], m["mean_psnr_gap_null"], None])
    text = _table(header, rows)
    if m["horizon"] >= GAP_HORIZONS:
        text += f"\n\nGap true - shuffled, mean over horizons 1..{GAP_HORIZONS}: {early_gap(m):.2f} dB."
    if m.get("idm_accuracy"):
        acc = m["idm_accuracy"]
        idm_rows = [[k, v] for k, v in acc.items()]
        if "idm_real_test_accuracy" in m:
            idm_rows.insert(0, ["real test pairs (random)", m["idm_real_test_accuracy"]])
        t = m.get("idm_training", {})
        text += (
            f"\n\nInverse-dynamics model ({t.get('steps')} steps, {_fmt(t.get('seconds'), 0)} s): accuracy "
            "on the frame pairs of each source, against the actions they were made with.\n\n"
        )
        text += _table(["frame pairs", "IDM accuracy"], idm_rows, 3)
    elif "idm_skipped" in m:
        text += f"\n\nInverse dynamics skipped: {m['idm_skipped']}"
    return text


def _memory(m: dict) -> str:
    header = ["variant", "revisits", "PSNR long", "PSNR short", "gain (dB)", "± s.e.",
              "SSIM long", "SSIM short", "long better", "PSNR earlier view"]  # fmt: skip
    rows = []
    for name in ("open_loop", "teacher_forced"):
        if name in m:
            v = m[name]
            rows.append([name, v["revisits"], v["psnr_long"], v["psnr_short"], v["psnr_gain"], v["psnr_gain_stderr"],
                         v["ssim_long"], v["ssim_short"], v["long_better_share"], v["psnr_earlier_view"]])  # fmt: skip
    text = (
        f"Revisit frames generated with long-term context (long) and with the short window of {m['short_window']} "
        f"frames only (short); the cache reaches {m['cache_reach']} frames back, open-loop rollouts start {m['span']} "
        f"frames before the revisit (or at the episode start). Long-term context off: {m['long_context_off']}.\n\n"
    )
    return text + _table(header, rows)


def _extrapolation(m: dict) -> str:
    header = ["setting", "slope", *[f"PSNR {b}" for b in m["buckets"]]]
    rows = [[name, m["slopes"][name], *vals] for name, vals in m["psnr_per_bucket"].items()]
    text = (
        f"{m['windows']} windows, {m['context']} context frames, generated to position {m['context'] + m['horizon']}; "
        f"training clips of {m['train_len']} frames. Buckets are frame positions (lo, hi].\n\n"
    )
    text += _table(header, rows)
    if m["sweep_psnr_beyond_train_len"]:
        sweep = ", ".join(f"{k}: {v:.2f}" for k, v in m["sweep_psnr_beyond_train_len"].items())
        text += (
            f"\n\nFlexRoPE sweep on {m['tuned_on']} (mean PSNR beyond position {m['train_len']}): {sweep}; "
            f"chosen {m['tuned_slope']}."
        )
    return text + _notes(m.get("notes", []))


def _teco(m: dict) -> str:
    p = m["protocol"]
    network = f" ({m['fvd_network']})" if m.get("fvd_network") else ""
    text = (
        f"{m['videos']} videos; PSNR/SSIM/ST-LPIPS/LPIPS on {p['predicted']} frames predicted from {p['context']}, "
        f"FVD on all frames with {p['fvd_context']} context and {p['fvd_generated']} generated{network}.\n\n"
    )
    fvd_header = f"FVD ({m['fvd_videos']} videos)" if m.get("fvd_videos") else "FVD"
    table = _table(
        ["PSNR", "SSIM", "ST-LPIPS", "LPIPS", fvd_header],
        [[m["psnr"], m["ssim"], _distance(m.get("st_lpips")), _distance(m["lpips"]), m["fvd"]]],
        3,
    )
    return text + table + _notes(m.get("notes", []))


def _heads(m: dict) -> str:
    text = (
        f"{m['episodes']} held-out episodes, {m['transitions']} transitions read with the real frames as "
        "context (teacher forcing); termination predicted where its probability > 0.5.\n\n"
    )
    table = _table(
        ["reward MAE", "reward RMSE", "constant MAE", "constant RMSE", "ends", "predicted ends", "precision", "recall",
         "mean p at ends", "mean p elsewhere"],
        [[m["reward_mae"], m["reward_rmse"], m["constant_reward_mae"], m["constant_reward_rmse"], m["terminations"],
          m["predicted_terminations"], m["termination_precision"], m["termination_recall"],
          m["mean_probability_at_end"], m["mean_probability_elsewhere"]]],
        3,
    )  # fmt: skip
    return text + table + "\n\nThe constant predictor says the mean reward of these transitions every step."


def _free_play(m: dict) -> str:
    text = (
        f"{m['windows']} windows: {m['context']} real context frames, then {m['horizon']} steps with the "
        "real game's actions. Each figure is per window, then mean / median over windows; \"wins\" is the "
        f"share of windows where the predictor beats copy-last-frame. Colour error over steps "
        f"{m['late_from']}..{m['horizon']} (0-255 scale); sharpness ratio 1.0 = as sharp as the real frames.\n\n"
    )
    perceptual = any("st_lpips" in s for s in m["summary"].values())
    fvd = m.get("fvd") or {}
    header = ["predictor", "PSNR mean", "PSNR median", "PSNR wins", "SSIM mean", "SSIM wins",
              "sharpness mean", "sharpness median", "smoothed sharpness", "colour error mean", "colour error median"]  # fmt: skip
    if perceptual:
        header += ["ST-LPIPS mean", "ST-LPIPS median", "ST-LPIPS wins"]
    if fvd:
        header.append(f"FVD, last {m['fvd_frames']} steps ({m['windows']} clips)")
    rows = []
    for name, s in m["summary"].items():
        row = [
            name, s["psnr"]["mean"], s["psnr"]["median"], s["psnr"].get("win_rate"), s["ssim"]["mean"],
            s["ssim"].get("win_rate"), s["sharpness_ratio"]["mean"], s["sharpness_ratio"]["median"],
            s["smoothed_sharpness_ratio"]["median"], s["colour_error_late"]["mean"], s["colour_error_late"]["median"],
        ]  # fmt: skip
        if perceptual:
            lp = s.get("st_lpips", {})
            row += [_distance(lp.get("mean")), _distance(lp.get("median")), lp.get("win_rate")]
        if fvd:
            row.append(fvd.get(name))
        rows.append(row)
    return text + _table(header, rows, 3) + _highlights(m) + _horizons_ahead_of_copy(m) + _notes(m.get("notes", []))


def _highlights(m: dict) -> str:
    """One line: the share of light pixels (doom's medkits) in the real frames and in each predictor's."""
    real = m.get("real", {}).get("highlight_share")
    if real is None:
        return ""
    shares = ", ".join(
        f"{name} {100 * s['highlight_share']['mean']:.3f}%" for name, s in m["summary"].items() if "highlight_share" in s
    )
    return (
        f"\nLight pixels (every channel >= 120; small light things such as doom's medkits), share of the "
        f"frames, mean over windows: real {100 * float(np.mean(real)):.3f}%, {shares}.\n"
    )


def _horizons_ahead_of_copy(m: dict, up_to: int = 16) -> str:
    """One line: at which of the first ``up_to`` steps the model is not ahead of copy-last-frame
    by the median over windows of its PSNR margin (the verdict a few easy windows cannot carry)."""
    gains = m.get("per_horizon", {}).get("model", {}).get("psnr_median_gain_over_copy")
    if gains is None:
        return ""
    gains = gains[:up_to]
    behind = [str(h + 1) for h, g in enumerate(gains) if g <= 0]
    verdict = "ahead at every one" if not behind else "behind or level at steps " + ", ".join(behind)
    return (
        f"\nModel against copy-last-frame, PSNR difference per window, median at each of steps 1..{len(gains)}: "
        f"{verdict} (smallest margin {min(gains):+.2f} dB).\n"
    )


def _one_step(m: dict) -> str:
    text = (
        f"{m['windows']} windows: {m['context']} real context frames, then one step with the real "
        "game's action, grouped by that action. Medians over the group's windows; \"margin\" is the "
        "model's PSNR minus copy-last-frame's, window by window, and \"wins\" the share of windows where "
        "the model is ahead; the ceiling is the autoencoder's reconstruction of the true frame.\n\n"
    )
    header = ["action", "windows", "PSNR model", "PSNR copy", "margin over copy", "wins over copy",
              "ceiling margin", "sharpness ratio"]  # fmt: skip
    rows = [
        [name, g["count"], g["psnr_model"], g["psnr_copy"], g["margin_over_copy"], g["wins_over_copy"],
         g["ceiling_margin_over_copy"], g["sharpness_ratio"]]
        for name, g in m["by_action"].items()
    ]  # fmt: skip
    picture = (
        f"\n\n`onestep_frames.png`: windows of the commonest action ({m['most_common_action']}): last frame, "
        "truth, autoencoder, model."
    )
    return text + _table(header, rows, 2) + picture


def _notes(notes: list[str]) -> str:
    return "".join(f"\n\n- {n}" if i == 0 else f"\n- {n}" for i, n in enumerate(notes))


SECTIONS = {
    "fidelity": ("Fidelity per horizon", _fidelity),
    "actions": ("Action following", _actions),
    "memory": ("Long-context memory (revisits)", _memory),
    "extrapolation": ("Extrapolation", _extrapolation),
    "teco": ("FAR/TECO protocol", _teco),
    "heads": ("Reward and termination heads", _heads),
    "freeplay": ("Free play against the real game", _free_play),
    "onestep": ("One step from real context, by action", _one_step),
}


def _guidance_detail(sampling: dict) -> str:
    """Which branch guidance drops and on which Euler steps (older metrics files lack both)."""
    steps = sampling.get("guided_steps")
    return f"scope {sampling.get('guidance_scope', 'all')}, " + ("every step" if steps is None else f"first {steps} steps")


def markdown_report(metrics: dict) -> str:
    """The Markdown page of a metrics dict (train/evaluate.py's results.md)."""
    s = metrics["settings"]
    sampling = s["sampling"]
    parts = [
        f"# Evaluation of `{metrics['checkpoint']}`",
        f"Data: `{s['data']['test']}`. Sampling: {sampling['sampling_steps']} Euler steps, guidance "
        f"{sampling['guidance']} ({_guidance_detail(sampling)}), FlexRoPE slope {sampling['flex_rope_slope']}. FVD: "
        f"{'on' if s['fvd'] else 'off (the metrics extra)'}; ST-LPIPS: "
        f"{'on' if s.get('st_lpips') else 'off (the metrics extra)'}; LPIPS: {'on' if s['lpips'] else 'off (no weights)'}.",
    ]
    for key, (title, render) in SECTIONS.items():
        if key not in metrics:
            continue
        body = f"Skipped: {metrics[key]['skipped']}" if "skipped" in metrics[key] else render(metrics[key])
        parts.append(f"## {title}\n\n{body}")
    if metrics.get("notes"):
        parts.append("## Notes" + _notes(metrics["notes"]))
    timing = metrics.get("timing", {})
    if timing:
        rows = [[k, v["seconds"], v["estimated_seconds"]] for k, v in timing.items()]
        parts.append("## Time\n\n" + _table(["protocol", "seconds", "estimated"], rows, 1))
    parts.append(f"Command: `{metrics['command']}`")
    return "\n\n".join(parts) + "\n"


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_per_horizon(axes, curves_by_predictor: dict[str, dict[str, list[float]]], keys: tuple[str, ...]) -> None:
    """One line per predictor on each axis: ``keys[i]`` against the horizon on ``axes[i]``."""
    for name, curves in curves_by_predictor.items():
        horizons = range(1, len(curves[keys[0]]) + 1)
        for ax, key in zip(axes, keys):
            ax.plot(horizons, curves[key], label=name)


def save_tradeoff_plot(runs: dict[str, dict[str, float]], path: str | Path, sharp_band: tuple[float, float] = (0.85, 1.15)) -> Path:
    """Free play of several runs on the same windows, one point each: PSNR and FVD against the
    sharpness ratio (means over windows), the issue's sharpness band shaded. It shows at a glance
    whether a run bought its detail with PSNR or FVD. ``runs``: name -> {"psnr", "sharpness", "fvd"},
    the first the baseline; a missing FVD leaves the run off the right panel."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in zip(axes, ("psnr", "fvd"), ("free-play PSNR, mean (dB)", "FVD, last 16 steps")):
        ax.axvspan(*sharp_band, color="tab:green", alpha=0.12, label=f"sharpness floor {sharp_band[0]}-{sharp_band[1]}")
        for i, (name, run) in enumerate(runs.items()):
            if run.get(key) is None:
                continue
            ax.scatter(run["sharpness"], run[key], color="black" if i == 0 else "tab:blue", zorder=3)
            # Labels staggered in three rows: runs close on both axes would print over each other.
            ax.annotate(name, (run["sharpness"], run[key]), fontsize=7, xytext=(4, 3 - 9 * (i % 3)), textcoords="offset points")
        ax.set(xlabel="sharpness ratio, mean (1 = as sharp as the real frames)", ylabel=label)
    axes[0].set_title("higher is better", fontsize=9)
    axes[1].set_title("lower is better", fontsize=9)
    axes[0].legend(fontsize=7, loc="lower left")
    return _save(fig, Path(path))


def save_plots(metrics: dict, out: str | Path) -> list[Path]:
    """One PNG per protocol that ran; returns their paths."""
    out = Path(out)
    paths = []
    if "scores" in metrics.get("fidelity", {}):
        m = metrics["fidelity"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        _plot_per_horizon(axes, m["scores"], ("psnr", "ssim"))
        axes[0].set(xlabel="horizon (frames)", ylabel="PSNR (dB)", title="fidelity")
        axes[1].set(xlabel="horizon (frames)", ylabel="SSIM")
        axes[0].legend(fontsize=8)
        paths.append(_save(fig, out / "fidelity.png"))
    if "scores" in metrics.get("actions", {}):
        m = metrics["actions"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for name, s in m["scores"].items():
            axes[0].plot(range(1, len(s["psnr"]) + 1), s["psnr"], label=f"{name} actions")
        axes[0].set(xlabel="horizon (frames)", ylabel="PSNR (dB)", title="action following")
        axes[0].legend(fontsize=8)
        acc = m.get("idm_accuracy", {})
        if acc:
            axes[1].bar(list(acc), list(acc.values()))
            axes[1].set(ylabel="IDM accuracy", ylim=(0, 1), title="inverse dynamics")
            axes[1].tick_params(axis="x", labelrotation=30, labelsize=8)
        else:
            axes[1].axis("off")
        paths.append(_save(fig, out / "actions.png"))
    if "short_window" in metrics.get("memory", {}):
        m = metrics["memory"]
        names = [n for n in ("open_loop", "teacher_forced") if n in m]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [m[n]["psnr_long"] for n in names], 0.4, label="long-term context")
        ax.bar([i + 0.2 for i in x], [m[n]["psnr_short"] for n in names], 0.4, label="short window only")
        ax.set_xticks(list(x), names)
        ax.set(ylabel="PSNR at the revisit (dB)", title="memory")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "memory.png"))
    if "psnr_per_position" in metrics.get("extrapolation", {}):
        m = metrics["extrapolation"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, curve in m["psnr_per_position"].items():
            ax.plot(range(m["context"] + 1, m["context"] + 1 + len(curve)), curve, label=f"{name} ({m['slopes'][name]})")
        ax.axvline(m["train_len"], color="grey", linestyle="--", label="training clip length")
        ax.set(xlabel="frame position", ylabel="PSNR (dB)", title="extrapolation")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "extrapolation.png"))
    if "psnr_per_frame" in metrics.get("teco", {}):
        m = metrics["teco"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        first = m["protocol"]["context"] + 1
        ax.plot(range(first, first + len(m["psnr_per_frame"])), m["psnr_per_frame"])
        ax.set(xlabel="frame", ylabel="PSNR (dB)", title="FAR/TECO protocol, predicted frames")
        paths.append(_save(fig, out / "teco.png"))
    if "per_horizon" in metrics.get("freeplay", {}):
        m = metrics["freeplay"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        _plot_per_horizon(axes, m["per_horizon"], ("psnr", "sharpness_ratio", "colour_error"))
        axes[0].set(xlabel="free-play step", ylabel="PSNR (dB)", title="free play")
        axes[1].axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
        axes[1].set(xlabel="free-play step", ylabel="sharpness ratio (model / real)")
        axes[2].set(xlabel="free-play step", ylabel="colour error (0-255)")
        axes[0].legend(fontsize=8)
        paths.append(_save(fig, out / "freeplay.png"))
    if "by_action" in metrics.get("onestep", {}):
        groups = metrics["onestep"]["by_action"]
        names = list(groups)
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.3 * len(names)))
        y = np.arange(len(names))
        ax.barh(y, [groups[n]["margin_over_copy"] for n in names], label="model")
        ceiling = [groups[n]["ceiling_margin_over_copy"] for n in names]
        ax.scatter(ceiling, y, marker="|", s=120, color="black", label="autoencoder ceiling")
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_yticks(y, [f"{n} ({groups[n]['count']})" for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set(xlabel="PSNR margin over copy-last-frame, median (dB)", title="one step from real context, by action")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "onestep.png"))
    return paths
