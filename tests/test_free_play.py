"""The free-play figures: sharpness against real frames, colour drift, and per-window summaries."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from far_world.evaluation.free_play import colour_error, save_strip, summary, wins_needed
from far_world.evaluation.metrics import highlight_share, sobel_energy


def _script(name: str):
    """A train/ script imported as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "train" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _textured(seed: int = 0, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    return np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_NEAREST) for f in base])


def test_flat_frames_have_no_edges_and_blur_removes_them():
    flat = np.full((2, 64, 64, 3), 90, np.uint8)
    assert np.all(sobel_energy(flat) == 0)
    frames = _textured()
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames])
    sharp, soft = sobel_energy(frames), sobel_energy(blurred)
    assert sharp.shape == (3,) and np.all(soft < 0.6 * sharp)


def test_smoothing_discounts_pixel_grain_more_than_edges():
    """One-pixel noise looks sharp to plain Sobel; after smoothing it counts far less than real edges."""
    frames = _textured(1)
    rng = np.random.default_rng(2)
    grain = np.clip(np.full_like(frames, 128) + rng.normal(0, 40, frames.shape), 0, 255).astype(np.uint8)
    plain_ratio = sobel_energy(grain).mean() / sobel_energy(frames).mean()
    smooth_ratio = sobel_energy(grain, 1.0).mean() / sobel_energy(frames, 1.0).mean()
    assert smooth_ratio < 0.5 * plain_ratio


def test_colour_error_sees_a_tint_not_a_moved_wall():
    frames = _textured(3)
    tinted = frames.astype(np.int16)
    tinted[..., 2] += 30
    tinted = np.clip(tinted, 0, 255).astype(np.uint8)
    err = colour_error(frames, tinted)
    assert err.shape == (3,) and np.all((err > 5) & (err <= 10))
    np.testing.assert_allclose(colour_error(frames, np.roll(frames, 8, axis=2)), 0.0, atol=1e-9)


def test_light_pixels_count_a_small_light_thing_that_a_blur_smears_away():
    """A medkit-sized white square on a dark-green floor: 16 of 4096 pixels, gone once blurred."""
    floor = np.zeros((2, 64, 64, 3), np.uint8)
    floor[..., 1] = 90
    frames = floor.copy()
    frames[0, 40:44, 20:24] = 230
    share = highlight_share(frames)
    assert share.shape == (2,) and share[0] == 16 / 4096 and share[1] == 0
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames])
    assert highlight_share(blurred)[0] == 0


def test_summary_counts_windows_won_with_ties_as_half():
    s = summary(np.array([3.0, 1.0, 2.0, 5.0]), np.array([1.0, 2.0, 2.0, 4.0]))
    assert s["mean"] == 2.75 and s["median"] == 2.5
    assert s["win_rate"] == (2 + 0.5) / 4 and s["median_gain"] == 0.5
    lower = summary(np.array([1.0, 3.0]), np.array([2.0, 2.0]), higher_is_better=False)
    assert lower["win_rate"] == 0.5
    assert "win_rate" not in summary(np.array([1.0]))


def test_strip_has_a_row_per_video_and_window(tmp_path):
    truth = np.zeros((2, 8, 64, 64, 3), np.uint8)
    videos = {"real": truth, "autoencoder": truth + 100, "model": truth + 200}
    path = save_strip(videos, tmp_path / "strip.png", every=4, rows=2, scale=1)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    # A header, then per window a real, an autoencoder and a model row of 64 px (4 px between
    # windows); 2 columns of 65 px after the 84 px labels.
    assert image.shape[0] == 14 + 2 * 3 * 64 + 4 and image.shape[1] == 84 + 2 * 65
    rows_in_order = [int(image[14 + k * 64 + 32, 84 + 32, 0]) for k in range(3)]
    assert rows_in_order == [0, 100, 200]


def test_strip_windows_are_spread_over_the_set(tmp_path):
    truth = np.zeros((9, 4, 8, 8, 3), np.uint8)
    predicted = np.arange(9, dtype=np.uint8)[:, None, None, None, None] * np.ones((9, 4, 8, 8, 3), np.uint8)
    path = save_strip({"real": truth, "model": predicted}, tmp_path / "s.png", rows=3)
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    # Model rows sit below each real row: header 14, then per window 8 + 8 px and a 4 px gap.
    shown = [int(image[14 + k * 20 + 8 + 4, 84 + 4, 0]) for k in range(3)]
    assert shown == [0, 4, 8]


def _free_play_metrics(path, psnr, sharpness, sources=("a@0", "b@0")):
    per_window = {"psnr": psnr, "sharpness_ratio": sharpness, "colour_error_late": [1.0] * len(psnr)}
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"freeplay": {"sources": list(sources), "per_window": {"model": per_window}, "fvd": {}}}))
    return path


def test_compare_evals_counts_windows_won_against_the_baseline(tmp_path):
    compare = _script("compare_evals")
    base = _free_play_metrics(tmp_path / "base" / "metrics.json", [10.0, 12.0], [0.5, 0.6])
    variant = _free_play_metrics(tmp_path / "variant" / "metrics.json", [11.0, 11.0], [0.9, 1.3])
    text = compare.main([str(base), str(variant)])
    row = text.splitlines()[-1]
    # PSNR: one window up, one down; sharpness: 0.9 and 1.3 are both closer to 1 than 0.5 and 0.6.
    assert row.startswith("| variant | 11.000 / 11.000 (wins 0.50) | – | 1.100 / 1.100 (wins 1.00)")
    other = _free_play_metrics(tmp_path / "other" / "metrics.json", [1.0, 1.0], [1.0, 1.0], sources=("c@0", "d@0"))
    with pytest.raises(SystemExit, match="other windows"):
        compare.main([str(base), str(other)])
    with pytest.raises(SystemExit, match="no such file"):
        compare.main([str(base), str(tmp_path / "unfinished" / "metrics.json")])


def test_compare_evals_adds_action_following_from_the_run_or_its_actions_folder(tmp_path):
    compare = _script("compare_evals")
    base = _free_play_metrics(tmp_path / "base" / "metrics.json", [10.0, 12.0], [0.5, 0.6])
    gaps = [1.0] * 4 + [3.0] * 4 + [100.0] * 8  # horizons past 8 must not count
    actions = {"psnr_gap_shuffled": gaps, "idm_accuracy": {"model_true": 0.4, "real": 0.5}}
    (tmp_path / "base_actions").mkdir()
    (tmp_path / "base_actions" / "metrics.json").write_text(json.dumps({"actions": actions}))
    no_actions = _free_play_metrics(tmp_path / "variant" / "metrics.json", [11.0, 11.0], [0.9, 1.3])
    lines = compare.main([str(base), str(no_actions)]).splitlines()
    assert "| gap 1..8 (dB) | IDM, generated pairs | release rule |" in lines[0]
    assert lines[2].endswith("| – | 2.00 | 0.400 (real 0.500) |  |")
    assert "| – | – | fails" in lines[3]
    # Without any action protocol the table keeps its free-play columns only.
    other = _free_play_metrics(tmp_path / "other" / "metrics.json", [11.0, 11.0], [0.9, 1.3])
    assert "gap" not in compare.main([str(other), str(no_actions)]).splitlines()[0]


def test_wins_needed_is_the_one_sided_sign_test_threshold():
    assert wins_needed(48) == 31  # P(>= 31 of 48) = 0.030, P(>= 30 of 48) = 0.056
    assert wins_needed(5) == 5 and wins_needed(4) == 5  # 4 windows cannot reject a coin at 0.05
    with pytest.raises(ValueError):
        wins_needed(0)


def test_release_verdict_names_what_fails(tmp_path):
    compare = _script("compare_evals")
    all_won = {figure: 48.0 for figure in compare.FIGURES}
    assert compare.release_verdict(all_won, 48, 300.0, 329.0) == "passes"
    verdict = compare.release_verdict({**all_won, "psnr": 28.0}, 48, 331.0, 329.0)
    assert verdict == "fails (needs 31/48): psnr 28/48, FVD 331 > 329"
    assert "no st_lpips" in compare.release_verdict({"psnr": 40.0}, 48, 1.0, 2.0)
    # Through the script: a variant that wins every window of two still fails, as 2 windows prove nothing.
    base = _free_play_metrics(tmp_path / "base" / "metrics.json", [10.0, 12.0], [0.5, 0.6])
    variant = _free_play_metrics(tmp_path / "variant" / "metrics.json", [11.0, 13.0], [0.9, 1.0])
    row = compare.main([str(base), str(variant)]).splitlines()[-1]
    assert row.endswith("| fails (needs 3/2): psnr 2/2, sharpness_ratio 2/2, colour_error_late 1/2, no st_lpips, no FVD |")


def test_compare_evals_plots_psnr_and_fvd_against_sharpness(tmp_path):
    compare = _script("compare_evals")
    base = _free_play_metrics(tmp_path / "base" / "metrics.json", [10.0, 12.0], [0.5, 0.7])
    variant = _free_play_metrics(tmp_path / "variant" / "metrics.json", [9.0, 11.0], [0.9, 1.1])
    points = compare.tradeoff_points([base, variant])
    assert points["variant"] == {"psnr": 10.0, "sharpness": 1.0, "fvd": None}  # means over windows
    compare.main([str(base), str(variant), "--plot", str(tmp_path / "tradeoff.png")])
    image = cv2.imread(str(tmp_path / "tradeoff.png"))
    assert image is not None and image.shape[1] > image.shape[0]  # two panels side by side


def test_the_report_names_the_steps_where_the_model_is_not_ahead_of_copying():
    from far_world.evaluation.report import _horizons_ahead_of_copy

    ahead = {"per_horizon": {"model": {"psnr_median_gain_over_copy": [0.5] * 20}}}
    assert "ahead at every one" in _horizons_ahead_of_copy(ahead)
    behind = {"per_horizon": {"model": {"psnr_median_gain_over_copy": [0.5, -0.1, 0.2, 0.0] + [1.0] * 16}}}
    line = _horizons_ahead_of_copy(behind)
    assert "steps 2, 4 " in line and "-0.10 dB" in line
    assert _horizons_ahead_of_copy({"per_horizon": {}}) == ""


def test_the_report_and_the_comparison_give_light_pixels_beside_the_real_frames(tmp_path):
    from far_world.evaluation.report import _highlights

    compare = _script("compare_evals")
    base = _free_play_metrics(tmp_path / "base" / "metrics.json", [10.0, 12.0], [0.5, 0.6])
    metrics = json.loads(base.read_text())
    metrics["freeplay"]["per_window"]["model"]["highlight_share"] = [0.0, 0.002]
    metrics["freeplay"]["real"] = {"highlight_share": [0.01, 0.03]}
    base.write_text(json.dumps(metrics))
    lines = compare.main([str(base), str(base)]).splitlines()
    assert "light pixels, % (real 2.000)" in lines[0] and "| 0.100 |" in lines[2]
    summary_ = {"model": {"highlight_share": {"mean": 0.001}}, "copy_last_frame": {"psnr": {"mean": 1.0}}}
    line = _highlights({"real": {"highlight_share": [0.01, 0.03]}, "summary": summary_})
    assert "real 2.000%, model 0.100%." in line
    assert _highlights({"summary": summary_}) == ""  # evaluations from before the measure
