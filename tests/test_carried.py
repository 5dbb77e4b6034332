"""Carried game variables: the heads, their fitting, the world and envs that keep them, and
train/tune_carried.py end to end."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from conftest import make_tiny_world_checkpoint, random_far_model

import far_world  # noqa: F401  (registers FARWorld-v0)
from far_world.checkpoint import load_world_checkpoint, save_world_checkpoint
from far_world.data.episodes import Episode, save_episode
from far_world.envs.context import ContextSource
from far_world.model.config import FARConfig
from far_world.model.heads import CLOCK_CAP, Carried, FrameHeads
from far_world.training.carried_heads import FeatureBank, bank_report, drawn_windows, fit_carried_heads
from far_world.world import WorldModel

TUNE = Path(__file__).resolve().parents[1] / "train" / "tune_carried.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def load_tune():
    spec = importlib.util.spec_from_file_location("tune_carried", TUNE)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    return tune


def test_carried_heads_start_by_holding_the_values_and_need_them():
    heads = FrameHeads(16, hidden=8, carried_scale=(100.0,))
    features, before = torch.randn(3, 5, 16), Carried(torch.full((3, 5, 1), 70.0), torch.full((3, 5, 1), 4.0))
    out = heads(features, before)
    assert torch.allclose(out.carried.values, before.values) and out.termination_logit.shape == (3, 5)
    assert (out.carried.since_fall == 5.0).all()  # no fall: the clocks tick
    with pytest.raises(ValueError, match="carries 1 variable"):
        heads(features)
    assert FrameHeads(16, hidden=8)(features).carried is None


def test_fall_clocks_time_the_drops_not_the_rises():
    # Health 92 for 3 frames, a fall to 84, a medkit to 100, then nothing for long.
    history = torch.tensor([92.0, 92, 92, 84, 84, 100] + [100] * 40)[:, None]
    state = Carried.along(history, torch.tensor([100.0]))
    assert state.since_fall[:6, 0].tolist() == [0, 1, 2, 0, 1, 2]  # a rise is no fall
    assert state.since_fall[-1, 0] == CLOCK_CAP
    last = Carried.from_history(history[None], torch.tensor([100.0]))
    assert last.values.tolist() == [[100.0]] and last.since_fall.tolist() == [[CLOCK_CAP]]


def test_the_config_checks_and_keeps_its_carried_variables():
    cfg = FARConfig(depth=1, width=32, heads=2, carried=("health",), carried_scale=(100.0,), carried_start=(92.0,))
    assert FARConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="one entry per carried variable"):
        FARConfig(depth=1, width=32, heads=2, carried=("health",))
    with pytest.raises(ValueError, match="positive"):
        FARConfig(depth=1, width=32, heads=2, carried=("health",), carried_scale=(0.0,), carried_start=(1.0,))
    # Old checkpoints have no carried fields: none is carried.
    old = {k: v for k, v in cfg.to_dict().items() if not k.startswith("carried")}
    assert FARConfig.from_dict(old).carried == ()


def test_training_refuses_a_world_whose_carried_heads_are_fitted_apart():
    model = random_far_model(carried=("health",), carried_scale=(100.0,), carried_start=(92.0,))
    latents = torch.randn(2, 5, 4, 8, 8)
    with pytest.raises(ValueError, match="tune_carried"):
        model.training_loss(latents, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool))


def test_fitting_learns_the_change_and_the_end_from_features():
    # Health falls by 2 each transition and rises by 25 where feature 0 is high (a medkit); an
    # episode ends where it reaches 0. Holding the value errs by 2 or 25; the fitted head should not.
    g = torch.Generator().manual_seed(0)
    n, d = 4000, 8
    medkit = torch.rand(n, generator=g) < 0.15
    features = 0.3 * torch.randn(n, d, generator=g)
    features[:, 0] = torch.where(medkit, 3.0, -3.0)
    before = torch.randint(1, 100, (n, 1), generator=g).float()
    after = before + torch.where(medkit, 25.0, -2.0)[:, None]
    ended = (after[:, 0] <= 0) | (before[:, 0] <= 2)
    bank = FeatureBank(features, before, torch.zeros(n, 1), after, ended, torch.zeros(n, dtype=torch.bool))
    heads = FrameHeads(d, hidden=32, carried_scale=(100.0,))
    losses = fit_carried_heads(heads, bank, steps=400, batch_size=128, lr=3e-3)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    report = bank_report(heads, bank, ["health"])
    assert report["health_mae"] < 0.3 * report["health_mae_holding"]
    # A quarter of each batch ends, against 2% of the bank: the head fires too often until the
    # tool sets its threshold, but far above the base rate.
    assert report["ends"] / report["transitions"] < 0.03
    assert report["recall"] > 0.8 and report["precision"] > 0.2


def test_fitting_needs_carried_heads_and_ends():
    ones, no = torch.ones(4, 1), torch.zeros(4, dtype=torch.bool)
    bank = FeatureBank(torch.randn(4, 8), ones, ones, ones, no, no)
    with pytest.raises(ValueError, match="no variables"):
        fit_carried_heads(FrameHeads(8), bank, 1, 2, 1e-3)
    with pytest.raises(ValueError, match="no transition"):
        fit_carried_heads(FrameHeads(8, carried_scale=(1.0,)), bank, 1, 2, 1e-3)


def test_drawn_windows_reach_each_long_enough_episode_end():
    episodes = [type("E", (), {"latents": torch.zeros(n)})() for n in (30, 10, 24)]
    windows = drawn_windows(episodes, context=8, horizon=4, rng=np.random.default_rng(0))
    assert (0, 26) in windows and (2, 20) in windows  # drawn frames 26..29 and 20..23: the last ones
    assert all(i != 1 for i, _ in windows)  # 10 frames hold no 8 + 4
    assert all(8 <= s <= len(episodes[i].latents) - 4 for i, s in windows)


@pytest.fixture(scope="module")
def carried_ckpt(tmp_path_factory) -> str:
    """The tiny world carrying a health that its heads lower by 3 a frame."""
    path = tmp_path_factory.mktemp("carried") / "carried.pt"
    ckpt = load_tune().with_carried_heads(make_tiny_world_checkpoint(path), ["health"], [100.0], [92.0])
    far_state = dict(ckpt.far_state)
    far_state["heads.carried.3.bias"] = torch.tensor([-0.03])
    save_world_checkpoint(path, dataclasses.replace(ckpt, far_state=far_state))
    return str(path)


def test_the_world_carries_its_values_from_reset_through_steps(carried_ckpt):
    world = WorldModel.load(carried_ckpt, batch_size=2)
    assert world.carried_names == ["health"]
    frames, actions = world.prompt_frames[:2], world.prompt_actions[:2]
    world.reset(frames, actions, seed=0)
    np.testing.assert_allclose(world.carried, [[92.0], [92.0]])  # the start values
    world.reset(frames, actions, seed=0, carried=np.array([[50.0], [10.0]]))
    for _ in range(2):
        out = world.step(np.array([1, 2]))
    np.testing.assert_allclose(out.carried, [[44.0], [4.0]], atol=1e-4)
    world.reset_rows(np.array([False, True]), frames[:1], actions[:1], carried=np.array([[80.0]]))
    np.testing.assert_allclose(world.carried, [[44.0], [80.0]], atol=1e-4)
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        world.reset(frames, actions, carried=np.array([50.0, 10.0]))
    with pytest.raises(ValueError, match="finite"):
        world.reset(frames, actions, carried=np.array([[np.nan], [1.0]]))


def _episodes_with_health(folder: Path, count: int, seed: int, length: int = 12) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        frames = rng.integers(0, 256, (length + 1, 64, 64, 3), dtype=np.uint8)
        health = np.maximum(100.0 - 10.0 * np.arange(length + 1), 0.0).astype(np.float32)
        terminated = np.zeros(length, bool)
        terminated[-1] = True
        episode = Episode(frames, rng.integers(0, 6, length), np.zeros(length, np.float32), terminated, {"health": health})
        save_episode(folder / f"ep_{i:06d}.npz", episode)


def test_the_envs_start_from_the_recorded_values_and_report_them(carried_ckpt, tmp_path):
    _episodes_with_health(tmp_path / "eps", 2, seed=0)
    world = WorldModel.load(carried_ckpt)
    source = ContextSource.from_spec(str(tmp_path / "eps"), world, length=4)
    np.testing.assert_allclose(source.carried[:, :, 0], [[100.0, 90.0, 80.0, 70.0]] * 2)  # the values at each context frame
    env = gymnasium.make("FARWorld-v0", ckpt=carried_ckpt, context=str(tmp_path / "eps"))
    _, info = env.reset(seed=0)
    assert info["health"] == pytest.approx(70.0)
    _, _, _, _, info = env.step(1)
    assert info["health"] == pytest.approx(67.0, abs=1e-4)
    vector = gymnasium.make_vec("FARWorld-v0", num_envs=2, vectorization_mode="vector_entry_point", ckpt=carried_ckpt)
    _, info = vector.reset(seed=0)
    np.testing.assert_allclose(info["health"], [92.0, 92.0])  # bundled prompts bring no values
    assert info["_health"].all()
    # A caller's own context brings its own values, to the single and the vector env alike.
    frames = world.prompt_frames[:2]
    _, info = env.reset(seed=0, options={"frames": frames[0], "carried": [33.0]})
    assert info["health"] == pytest.approx(33.0)
    _, info = vector.reset(seed=0, options={"frames": frames, "carried": np.array([[20.0], [40.0]])})
    np.testing.assert_allclose(info["health"], [20.0, 40.0])


def test_a_caller_sets_the_values_of_a_drawn_context(carried_ckpt):
    env = gymnasium.make("FARWorld-v0", ckpt=carried_ckpt)
    _, info = env.reset(seed=0, options={"carried": [33.0]})
    assert info["health"] == pytest.approx(33.0)
    vector = gymnasium.make_vec("FARWorld-v0", num_envs=2, vectorization_mode="vector_entry_point", ckpt=carried_ckpt)
    _, info = vector.reset(seed=0, options={"carried": np.array([[20.0], [40.0]])})
    np.testing.assert_allclose(info["health"], [20.0, 40.0])
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        vector.reset(seed=0, options={"carried": np.array([20.0, 40.0, 60.0])})


def test_tuning_writes_a_world_with_carried_heads_that_plays(tiny_ckpt, tmp_path):
    _episodes_with_health(tmp_path / "data" / "train", 5, seed=0)
    _episodes_with_health(tmp_path / "data" / "test", 2, seed=1)
    out = tmp_path / "carried.pt"
    argv = ["--ckpt", tiny_ckpt, "--data", str(tmp_path / "data"), "--carried", "health", "--out", str(out),
            "--steps", "3", "--batch-size", "8", "--context", "4", "--horizon", "2"]  # fmt: skip
    tuning = load_tune().main(argv)
    before, after = load_world_checkpoint(tiny_ckpt), load_world_checkpoint(out)
    assert after.far_config.carried == ("health",) and after.far_config.carried_start == (100.0,)
    assert after.summary["carried_heads"]["validation_episodes"] == 1
    assert tuning["test_imagined_episodes"]["episodes"] == 2 and out.with_suffix(".replay.png").is_file()
    kept = {k for k in before.far_state if not k.startswith("heads.termination.")}
    assert all(torch.equal(before.far_state[k], after.far_state[k]) for k in kept)
    assert any(k.startswith("heads.carried.") for k in after.far_state)
    world = WorldModel(after)
    world.reset(world.prompt_frames[:1], world.prompt_actions[:1], seed=0)
    assert world.step(np.array([1])).carried.shape == (1, 1)
    with pytest.raises(SystemExit, match="records no"):
        load_tune().main([*argv[:5], "mana", *argv[6:]])
    # Kept features give the same fit without reading the world again.
    kept = ["--features", str(tmp_path / "features")]
    first = load_tune().main([*argv, *kept])
    assert len(list((tmp_path / "features").glob("*.pt"))) == 3
    assert load_tune().main([*argv, *kept])["final_loss"] == first["final_loss"]


def test_the_heads_protocol_scores_the_carried_values_given_the_true_ones(carried_ckpt, tmp_path):
    from far_world.evaluation.heads import evaluate_heads

    _episodes_with_health(tmp_path / "eps", 2, seed=0)
    report = evaluate_heads(WorldModel.load(carried_ckpt), tmp_path / "eps")
    # Health 100, 90, ..., 0, 0, 0: holding errs by 10 on 10 transitions of 12; the heads lower it by 3.
    assert report.carried_mae_holding["health"] == pytest.approx(100 / 12)
    assert report.carried_mae["health"] == pytest.approx((10 * 7 + 2 * 3) / 12, abs=1e-3)
    plain = tmp_path / "plain"  # a dataset that did not record the health
    plain.mkdir()
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    save_episode(plain / "ep_000000.npz", Episode(frames, np.zeros(2, np.int64), np.zeros(2, np.float32), np.zeros(2, bool)))
    with pytest.raises(ValueError, match="do not record"):
        evaluate_heads(WorldModel.load(carried_ckpt), plain)


@pytest.mark.parametrize("termination_bias, verdict", [(20.0, "imagined_end_early"), (-20.0, "imagined_end_late_or_never")])
def test_the_replay_sets_imagined_ends_against_real_ones(carried_ckpt, tmp_path, termination_bias, verdict):
    ckpt = load_world_checkpoint(carried_ckpt)
    far_state = dict(ckpt.far_state)
    far_state["heads.termination.3.bias"] = torch.tensor([termination_bias])
    path = tmp_path / "world.pt"
    save_world_checkpoint(path, dataclasses.replace(ckpt, far_state=far_state))
    _episodes_with_health(tmp_path / "data" / "test", 2, seed=0)
    replay = importlib.util.spec_from_file_location("carried_replay", TUNE.parent / "carried_replay.py")
    module = importlib.util.module_from_spec(replay)
    replay.loader.exec_module(module)
    summary = module.main(["--ckpt", str(path), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--context", "2"])
    # 12 steps, 2 context frames: the real end is 11 steps after the context; every frame ends (+20)
    # at step 1, 10 early, or none does (-20).
    assert summary["episodes"] == 2 and summary["real_end_steps_median"] == 11
    assert summary[verdict] == 1.0
    # The context ends at health 90; 8 steps on the world says 90 - 8 * 3, the game 100 - 10 * 9.
    assert summary["health_mae_step8"] == pytest.approx(abs((90 - 8 * 3) - (100 - 10 * 9)), abs=1e-3)
    assert (tmp_path / "out" / "replay.png").stat().st_size > 1000


def test_a_drawn_share_fits_the_change_to_the_drawn_frames():
    # Real frames lose 5 a step and drawn ones gain 5, with the same features: drawn rows only
    # teach +5; the whole bank (one drawn row in four) teaches the mix.
    n = 2000
    drawn = torch.arange(n) % 4 == 0
    after = torch.where(drawn, 55.0, 45.0)[:, None]
    ended = torch.zeros(n, dtype=torch.bool)
    ended[::50] = True
    bank = FeatureBank(torch.ones(n, 8), torch.full((n, 1), 50.0), torch.zeros(n, 1), after, ended, drawn)
    changes = {}
    for share in (None, 1.0):
        heads = FrameHeads(8, hidden=16, carried_scale=(100.0,))
        fit_carried_heads(heads, bank, steps=300, batch_size=64, lr=1e-2, drawn_share=share)
        with torch.no_grad():
            after = heads(bank.features[:1], Carried(bank.before[:1], bank.since_fall[:1])).carried.values
        changes[share] = float(after) - 50.0
    assert changes[1.0] == pytest.approx(5.0, abs=1.0) and changes[None] == pytest.approx(-2.5, abs=1.0)
    with pytest.raises(ValueError, match="drawn_share"):
        fit_carried_heads(FrameHeads(8, carried_scale=(100.0,)), bank, 1, 8, 1e-3, drawn_share=1.5)
