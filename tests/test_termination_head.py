"""The termination head retrained alone, its threshold, and train/tune_termination.py end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.checkpoint import load_world_checkpoint
from far_world.data.episodes import Episode, save_episode
from far_world.training.termination_head import best_logit_shift

TUNE = Path(__file__).resolve().parents[1] / "train" / "tune_termination.py"


def test_the_logit_shift_puts_the_decision_where_it_catches_ends_best():
    # Ends read 0.2 and 0.3, other transitions 0.01 and 0.25: at p > 0.5 nothing fires. Raising
    # the logits by more than 0.85 catches the 0.3 end (F1 0.67), by more than 1.10 also the false
    # 0.25 (F1 0.5), by more than 1.39 both ends and that false one (F1 0.8), by more than 4.6 all.
    probs = np.array([0.2, 0.3, 0.01, 0.25])
    ended = np.array([True, True, False, False])
    shift, f1 = best_logit_shift(probs, ended)
    assert f1 == pytest.approx(0.8)
    assert 1.39 < shift <= 1.5  # the smallest shift of the grid (steps of 0.25) that gets there
    with pytest.raises(ValueError, match="no episode ends"):
        best_logit_shift(probs, np.zeros(4, bool))


def test_a_recall_floor_moves_the_decision_to_catch_more_ends():
    # Ends read 0.3 and 0.01, other transitions 0.2, 0.1, 0.05 and 0.04. F1 alone catches the 0.3
    # end only (shift in (0.85, 1.39], F1 0.67, recall 0.5); catching both ends needs a shift
    # above 4.60, where every false one fires too (F1 0.5).
    probs = np.array([0.3, 0.01, 0.2, 0.1, 0.05, 0.04])
    ended = np.array([True, True, False, False, False, False])
    shift, f1 = best_logit_shift(probs, ended)
    assert 0.85 < shift <= 1.39 and f1 == pytest.approx(2 / 3)
    shift, f1 = best_logit_shift(probs, ended, min_recall=0.6)
    assert 4.60 < shift <= 4.75 and f1 == pytest.approx(0.5)
    # a floor no shift can meet keeps the F1-best decision
    assert best_logit_shift(probs, ended, min_recall=1.01) == best_logit_shift(probs, ended)


def _episodes(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        frames = rng.integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
        frames[-1] = frames[-2]  # a game over repeats its last frame
        terminated = np.zeros(6, bool)
        terminated[-1] = True
        save_episode(folder / f"ep_{i:06d}.npz", Episode(frames, rng.integers(0, 6, 6), np.zeros(6, np.float32), terminated))


def test_tuning_writes_a_world_that_differs_only_in_its_termination_head(tiny_ckpt, tmp_path, one_thread):
    _episodes(tmp_path / "data" / "train", 5, seed=0)
    _episodes(tmp_path / "data" / "test", 2, seed=1)
    spec = importlib.util.spec_from_file_location("tune_termination", TUNE)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    out = tmp_path / "tuned.pt"
    argv = ["--ckpt", tiny_ckpt, "--data", str(tmp_path / "data"), "--out", str(out), "--steps", "3", "--batch-size", "4"]
    tuning = tune.main(argv)
    before, after = load_world_checkpoint(tiny_ckpt), load_world_checkpoint(out)
    assert after.summary["termination_head_tuning"] == tuning
    assert tuning["validation_episodes"] == 1 and tuning["episodes"] == 4
    changed = {k for k in before.far_state if not torch.equal(before.far_state[k], after.far_state[k])}
    assert changed and all(k.startswith("heads.termination.") for k in changed)
    assert {k: v.dtype for k, v in after.far_state.items()} == {k: v.dtype for k, v in before.far_state.items()}
