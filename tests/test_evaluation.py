"""Evaluation: rollouts, revisits, inverse dynamics, extrapolation buckets, and train/evaluate.py end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.data.episodes import DatasetMeta, Episode, save_episode, write_meta
from far_world.evaluation.action_following import shuffled_actions
from far_world.evaluation.extrapolation import bucket_edges, bucket_means, training_clip_length
from far_world.evaluation.inverse_dynamics import accuracy, chance_accuracy, rollout_pairs, train_idm
from far_world.evaluation.memory import find_revisits
from far_world.evaluation.metrics import psnr
from far_world.evaluation.one_step import action_labels, evaluate_one_step
from far_world.evaluation.report import markdown_report
from far_world.evaluation.rollouts import EvalWindows, load_windows, null_actions, rollout, rollout_contexts
from far_world.evaluation.teco_protocol import TecoProtocol
from far_world.world import WorldModel

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
ACTIONS = ["noop", "forward", "left", "right", "forward+left", "forward+right"]


def write_maze_like(folder: Path, episodes: int = 3, steps: int = 40, seed: int = 0) -> Path:
    """Small maze-like episodes in train/ and test/: a random texture that actions shift sideways,
    and an agent that turns in place, 45 degrees a frame, so that it faces every heading again
    8 frames later (a revisit a model with more than 8 frames of context could remember)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for i in range(episodes):
            actions = rng.integers(0, 6, steps)
            texture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            shifts = np.concatenate([[0], np.cumsum(actions - 2)])
            frames = np.stack([np.roll(texture, 3 * s, axis=1) for s in shifts])
            angle = np.arange(steps + 1) * (2 * np.pi / 8)
            extras = {
                "agent_pos": np.ones((steps + 1, 2), np.float32),
                "agent_dir": np.stack([np.cos(angle), np.sin(angle)], 1).astype(np.float32),
            }
            episode = Episode(frames, actions, np.zeros(steps, np.float32), np.zeros(steps, bool), extras)
            save_episode(folder / split / f"ep{i:03d}.npz", episode)
    write_meta(folder, DatasetMeta("maze", ACTIONS, {"type": "discrete", "n": 6}, [64, 64], extras=["agent_pos", "agent_dir"]))
    return folder


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory) -> Path:
    return write_maze_like(tmp_path_factory.mktemp("maze"))


@pytest.fixture(scope="module")
def windows(maze_data) -> EvalWindows:
    return load_windows(maze_data / "test", context=6, horizon=5, max_windows=3)


# ----- rollouts -----


def test_one_step_groups_every_window_under_its_action(tiny_ckpt, maze_data):
    world = WorldModel.load(tiny_ckpt)
    w = load_windows(maze_data / "test", context=4, horizon=1, max_windows=12, per_episode=4)
    report, frames = evaluate_one_step(world, w, batch_size=4)
    groups = report.by_action
    assert report.labels == action_labels(w.future_actions[:, 0], ACTIONS)
    assert set(frames) == {"truth", "model", "copy_last_frame", "autoencoder_ceiling"}
    assert all(f.shape == (12, 64, 64, 3) for f in frames.values())
    labels = action_labels(w.future_actions[:, 0], ACTIONS)
    assert groups["all"]["count"] == len(w) == 12
    assert {k: g["count"] for k, g in groups.items() if k != "all"} == {a: labels.count(a) for a in set(labels)}
    # Every window of the group counts once, and its copy-last-frame PSNR is the real one.
    for name, g in groups.items():
        rows = np.arange(len(w)) if name == "all" else np.flatnonzero(np.array(labels) == name)
        assert g["psnr_copy"] == pytest.approx(float(np.median(psnr(w.future_frames[rows, 0], w.context_frames[rows, -1]))))
        assert 0.0 <= g["wins_over_copy"] <= 1.0


def test_action_labels_name_one_component_actions_and_join_several():
    assert action_labels(np.array([0, 2, 1]), ["noop", "left", "right"]) == ["noop", "right", "left"]
    assert action_labels(np.array([[1, 0], [2, 1]]), ["a", "b", "c"]) == ["1,0", "2,1"]
    # Names that do not cover the actions (a stale list) fall back to indices rather than fail.
    assert action_labels(np.array([3]), ["a"]) == ["3"]


def test_rollout_reproduces_world_model_steps(tiny_ckpt, windows):
    world = WorldModel.load(tiny_ckpt, batch_size=len(windows))
    world.reset(windows.context_frames, windows.context_actions, seed=5)
    stepped = np.stack([world.step(windows.future_actions[:, t]).frames for t in range(3)], axis=1)
    future = windows.future_actions[:, :3]
    np.testing.assert_array_equal(rollout(world, windows, future, seed=5, batch_size=len(windows)), stepped)


def test_null_actions_roll_out_and_change_the_frames(tiny_ckpt, windows):
    world = WorldModel.load(tiny_ckpt)
    null = null_actions(world, len(windows), 2)
    assert (null == 6).all() and null.shape == (len(windows), 2)
    true_frames = rollout(world, windows, windows.future_actions[:, :2])
    assert not np.array_equal(rollout(world, windows, null), true_frames)


def test_short_window_mode_sees_only_the_short_window(tiny_ckpt, windows):
    world = WorldModel.load(tiny_ckpt)
    keep = world.far.cfg.short_window - 1  # tiny: 3 context frames fit the short window
    future = windows.future_actions
    # Frames older than the window do not matter to it, and do matter with long-term context.
    garbled = EvalWindows(windows.context_frames.copy(), windows.context_actions, windows.future_frames, future, windows.sources)
    garbled.context_frames[:, :-keep] = 255 - garbled.context_frames[:, :-keep]
    np.testing.assert_array_equal(rollout(world, garbled, long_context=False), rollout(world, windows, long_context=False))
    assert not np.array_equal(rollout(world, garbled), rollout(world, windows))
    # From a context that fits the window the two modes agree until a frame leaves it.
    contexts = [(f[-keep:], a[-(keep - 1) :]) for f, a in windows.contexts]
    short = rollout_contexts(world, contexts, future, long_context=False)
    cached = rollout_contexts(world, contexts, future)
    np.testing.assert_array_equal(short[:, 0], cached[:, 0])
    assert not np.array_equal(short[:, 1:], cached[:, 1:])


def test_rollout_rows_of_different_lengths_and_contexts(tiny_ckpt, windows):
    world = WorldModel.load(tiny_ckpt)
    full, short = windows.contexts[0], (windows.context_frames[1, :2], windows.context_actions[1, :1])
    contexts = [full, short]
    out = rollout_contexts(world, contexts, windows.future_actions[:2, :4], lengths=np.array([4, 2]))
    assert out.shape == (2, 4, 64, 64, 3)
    assert out[1, 2:].max() == 0 and out[1, :2].max() > 0 and out[0].max() > 0


def test_shuffled_actions_give_every_window_another_ones():
    actions = np.arange(10)[:, None] * np.ones((1, 4), np.int64)
    shuffled = shuffled_actions(actions, seed=3)
    assert sorted(shuffled[:, 0]) == list(range(10)) and (shuffled[:, 0] != np.arange(10)).all()


# ----- revisits -----


def test_find_revisits_on_an_out_and_back_trace():
    # East 10 frames, turn round in place (4 frames), back west, turn round again: at frame 28 the
    # agent is where it was at frame 0, facing east again, after being 5 cells away.
    east, west = np.array([1.0, 0.0]), np.array([-1.0, 0.0])
    turn = [np.array([np.cos(a), np.sin(a)]) for a in np.linspace(0, np.pi, 6)[1:-1]]
    xs = np.concatenate([np.arange(11) * 0.5, [5.0] * 4, 5.0 - np.arange(1, 11) * 0.5, [0.0] * 4])
    dirs = [east] * 11 + turn + [west] * 10 + turn[::-1]
    dirs = np.array(dirs + [east] * (len(xs) - len(dirs)))
    pos = np.stack([xs, np.zeros_like(xs)], 1)
    pos, dirs = np.concatenate([pos, pos[-1:]]), np.concatenate([dirs, [east]])
    revisits = find_revisits(pos, dirs, min_gap=8)
    assert revisits == [(len(pos) - 1, 1)] or revisits[0][1] in (0, 1)
    r, e = revisits[0]
    assert np.linalg.norm(pos[r] - pos[e]) <= 0.5 and r - e > 8
    assert find_revisits(pos, dirs, min_gap=8, max_gap=20) == []  # too far back for a short cache


def test_no_revisit_without_leaving_or_within_the_short_window():
    still = np.zeros((40, 2))
    heading = np.tile([1.0, 0.0], (40, 1))
    assert find_revisits(still, heading, min_gap=8) == []  # never away from the pose
    spin = np.stack([np.cos(np.arange(40) * np.pi / 4), np.sin(np.arange(40) * np.pi / 4)], 1)
    # The pose returns every 8 frames: 8 is not more than min_gap 8, and 16 is beyond max_gap.
    assert find_revisits(still, spin, min_gap=8, max_gap=15) == []
    assert find_revisits(still, spin, min_gap=8)[0] == (16, 0)
    # One revisit per return: the next is looked for min_gap frames later.
    found = find_revisits(still, spin, min_gap=7)
    assert found[:2] == [(8, 0), (15, 7)] and all(b[0] - a[0] >= 7 for a, b in zip(found, found[1:]))


# ----- inverse dynamics -----


def _shift_episodes(folder: Path, episodes: int = 4, steps: int = 60, seed: int = 0) -> Path:
    """A bright square on a dark frame moved by the action: 0 right, 1 left, 2 down, 3 up (4 px)."""
    rng = np.random.default_rng(seed)
    moves = [(0, 4), (0, -4), (4, 0), (-4, 0)]
    for i in range(episodes):
        actions = rng.integers(0, 4, steps)
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[:8, :8] = 255
        frames = [np.roll(frame, tuple(rng.integers(0, 32, 2)), axis=(0, 1))]
        for a in actions:
            frames.append(np.roll(frames[-1], moves[a], axis=(0, 1)))
        save_episode(folder / f"ep{i}.npz", Episode(np.stack(frames), actions, np.zeros(steps, np.float32), np.zeros(steps, bool)))
    return folder


def test_inverse_dynamics_learns_a_trivial_world(tmp_path):
    train = _shift_episodes(tmp_path / "train")
    test = _shift_episodes(tmp_path / "test", episodes=1, seed=1)
    idm, training = train_idm(train, (4,), steps=120, batch_size=32)
    assert training.steps == 120
    ep = np.load(test / "ep0.npz")
    frames, actions = ep["frames"], ep["actions"]
    assert accuracy(idm, frames[:-1], frames[1:], actions) > 0.9
    assert chance_accuracy(actions, 1) < 0.5


def test_rollout_pairs_start_at_the_last_context_frame():
    ctx = np.arange(2 * 3).reshape(2, 3, 1, 1, 1).astype(np.uint8)
    gen = 100 + np.arange(2 * 4).reshape(2, 4, 1, 1, 1).astype(np.uint8)
    before, after = rollout_pairs(ctx, gen)
    assert before.shape == after.shape == (8, 1, 1, 1)
    assert before[0, 0, 0, 0] == 2 and after[0, 0, 0, 0] == 100 and before[1, 0, 0, 0] == 100


# ----- extrapolation and the TECO protocol -----


def test_bucket_edges_and_means():
    assert bucket_edges(10, 160) == [(0, 10), (10, 20), (20, 40), (40, 80), (80, 160)]
    assert bucket_edges(10, 35) == [(0, 10), (10, 20), (20, 35)]
    curve = np.tile(np.arange(1, 31, dtype=float), (2, 1))  # positions 1..30 carry their own value
    means = bucket_means(curve, first_position=1, edges=bucket_edges(10, 30))
    assert means == [5.5, 15.5, 25.5]


def test_training_clip_length_from_the_summary(tiny_ckpt):
    world = WorldModel.load(tiny_ckpt)
    assert training_clip_length(world) is None
    world.checkpoint.summary["config"] = {"max_clip_frames": 24}
    assert training_clip_length(world) == 24


def test_action_report_states_the_gap_over_the_first_eight_horizons():
    def actions(horizon: int) -> dict:
        scores = {name: {"psnr": [20.0] * horizon, "mean_psnr": 20.0, "mean_ssim": 0.5} for name in ("true", "shuffled")}
        gaps = [1.0] * 4 + [2.0] * 4 + [50.0] * (horizon - 8)  # horizons past 8 must not count
        return {"horizon": horizon, "windows": 2, "scores": scores, "psnr_gap_shuffled": gaps[:horizon],
                "mean_psnr_gap_shuffled": float(np.mean(gaps[:horizon])), "psnr_gap_null": [0.0] * horizon,
                "mean_psnr_gap_null": 0.0}  # fmt: skip

    sampling = {"sampling_steps": 3, "guidance": 1.0, "flex_rope_slope": 0.0}
    settings = {"data": {"test": "data/x/test"}, "sampling": sampling, "fvd": False, "lpips": False}
    page = markdown_report({"checkpoint": "w.pt", "settings": settings, "command": "c", "actions": actions(16)})
    assert "mean over horizons 1..8: 1.50 dB." in page
    short = markdown_report({"checkpoint": "w.pt", "settings": settings, "command": "c", "actions": actions(6)})
    assert "horizons 1..8" not in short  # a quick run's 6 horizons cannot give it


def test_teco_protocol_lengths():
    p = TecoProtocol()
    assert p.frames == 300 and p.context + p.predicted == 300 and p.fvd_context + p.fvd_generated == 300
    small = p.scaled(0.04)
    assert small.frames < 20 and small.fvd_context >= 2


# ----- the script -----


def test_evaluate_quick_end_to_end(tiny_ckpt, maze_data, tmp_path):
    sys.path.insert(0, str(REPO / "train"))
    try:
        import evaluate
    finally:
        sys.path.remove(str(REPO / "train"))
    out = tmp_path / "eval"
    metrics = evaluate.main(["--ckpt", tiny_ckpt, "--data", str(maze_data), "--quick", "--out", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("fidelity", "actions", "memory", "extrapolation", "teco", "heads", "freeplay", "onestep"):
        assert key in saved and "skipped" not in saved[key], key
    heads = saved["heads"]
    assert heads["episodes"] >= 1 and heads["transitions"] > heads["episodes"]
    assert heads["reward_mae"] >= 0 and heads["constant_reward_mae"] >= 0
    assert set(saved["fidelity"]["scores"]) == {"model", "copy_last_frame", "autoencoder_ceiling"}
    assert saved["memory"]["open_loop"]["revisits"] >= 1
    assert 0.0 <= saved["actions"]["idm_accuracy"]["real"] <= 1.0
    text = (out / "results.md").read_text()
    assert "LPIPS skipped" in text and "## Long-context memory" in text
    # Fidelity's quick horizon (6) is shorter than I3D's 9 frames; without the metrics extra, a line names it.
    assert "FVD skipped" in text or "the metrics extra brings" in text
    assert "## Reward and termination heads" in text
    for png in ("fidelity", "actions", "memory", "extrapolation", "teco"):
        assert (out / f"{png}.png").stat().st_size > 1000
    free = saved["freeplay"]["summary"]
    assert set(free) == {"model", "copy_last_frame", "autoencoder_ceiling"}
    assert 0.0 <= free["model"]["psnr"]["win_rate"] <= 1.0 and free["model"]["sharpness_ratio"]["median"] >= 0
    assert (out / "freeplay.png").stat().st_size > 1000 and (out / "freeplay_strip.png").stat().st_size > 1000
    assert "## Free play against the real game" in text
    gains = saved["freeplay"]["per_horizon"]["model"]["psnr_median_gain_over_copy"]
    assert len(gains) == saved["freeplay"]["horizon"] and "copy_last_frame" not in [
        name for name, figures in saved["freeplay"]["per_horizon"].items() if "psnr_median_gain_over_copy" in figures
    ]
    assert "median at each of steps 1.." in text
    one_step = saved["onestep"]["by_action"]
    assert one_step["all"]["count"] == saved["onestep"]["windows"]
    assert "## One step from real context, by action" in text and (out / "onestep.png").stat().st_size > 1000
    assert (out / "onestep_frames.png").stat().st_size > 1000
    assert metrics["command"].startswith("python train/evaluate.py")


def test_head_report_counts_hits_against_the_episodes(tiny_ckpt, tmp_path, monkeypatch):
    """Precision and recall come from the heads' readings against the episodes' own ends."""
    from far_world.evaluation import heads as heads_module

    world = WorldModel.load(tiny_ckpt)
    rng = np.random.default_rng(0)
    for i, n in enumerate((5, 3)):
        frames = rng.integers(0, 255, (n + 1, 64, 64, 3), dtype=np.uint8)
        terminated = np.zeros(n, bool)
        terminated[-1] = i == 0  # the first episode ends, the second is cut
        save_episode(tmp_path / f"ep_{i:06d}.npz", Episode(frames, np.zeros(n, np.int64), np.ones(n, np.float32), terminated))
    # The heads say "ended" on the last reading of every row: one hit, one false alarm.
    def fake_read(world, episodes, bar=None):
        return [
            heads_module.TeacherForced(
                np.full(e.num_steps, 2.0), (np.arange(e.num_steps) == e.num_steps - 1).astype(float), torch.zeros(e.num_steps, 1), None
            )
            for e in episodes
        ]

    monkeypatch.setattr(heads_module, "read_heads", fake_read)
    report = heads_module.evaluate_heads(world, tmp_path)
    assert (report.episodes, report.transitions, report.terminations) == (2, 8, 1)
    assert report.reward_mae == pytest.approx(1.0) and report.constant_reward_mae == pytest.approx(0.0)
    assert report.termination_precision == pytest.approx(0.5) and report.termination_recall == pytest.approx(1.0)


def test_reading_the_heads_keeps_each_episode_length(tiny_ckpt, maze_data):
    from far_world.data.episodes import iter_episodes
    from far_world.evaluation.heads import read_heads

    world = WorldModel.load(tiny_ckpt)
    episodes = [e for _, e in iter_episodes(maze_data / "test")][:2]
    readings = read_heads(world, episodes)
    assert [len(r.rewards) for r in readings] == [len(r.features) for r in readings] == [e.num_steps for e in episodes]
    assert all(((r.termination_probs >= 0) & (r.termination_probs <= 1)).all() and r.carried is None for r in readings)


def test_the_termination_probe_sees_frozen_last_frames_and_samples_endings(tmp_path):
    import importlib.util

    from far_world.training.termination_head import ending_batch, endings

    path = Path(__file__).resolve().parents[1] / "train" / "probe_termination.py"
    spec = importlib.util.spec_from_file_location("probe_termination", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    rng = np.random.default_rng(0)
    for i, ends in enumerate((True, False)):
        frames = rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
        terminated = np.zeros(8, bool)
        if ends:  # the game shows no new screen once it is over: the last frame repeats
            frames[-1] = frames[-2]
            terminated[-1] = True
        save_episode(tmp_path / f"ep_{i:06d}.npz", Episode(frames, np.zeros(8, np.int64), np.zeros(8, np.float32), terminated))
    ending, other = probe.frame_change(str(tmp_path))
    assert ending.tolist() == [0.0] and len(other) == 15 and other.min() > 50

    latents = [torch.randn(n, 4, 8, 8) for n in (9, 30)]
    episodes = [(lat, torch.zeros(len(lat), 1, dtype=torch.long), torch.zeros(len(lat), dtype=torch.bool)) for lat in latents]
    episodes[0][2][-1] = True
    clips, actions, ended = ending_batch(episodes, endings(episodes), np.random.default_rng(1), 8, 12)
    assert clips.shape[:2] == actions.shape[:2] and clips.shape[0] == 8 and 4 <= clips.shape[1] <= 12
    assert ended[:2].tolist() == [1.0, 1.0]  # a quarter of the batch ends an episode...
    for clip in clips[:2]:
        assert torch.equal(clip[-1], latents[0][-1])  # ...at its last frame
