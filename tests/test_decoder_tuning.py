"""The decoder fine-tuned on the model's own latents, and train/tune_decoder.py end to end."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.checkpoint import load_world_checkpoint
from far_world.data.episodes import Episode, save_episode
from far_world.evaluation.rollouts import load_windows
from far_world.training.decoder_tuning import DecoderPairs, DecoderTuner, draw_pairs
from far_world.world import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")

TUNE = Path(__file__).resolve().parents[1] / "train" / "tune_decoder.py"


def _episodes(folder: Path, count: int, seed: int, steps: int = 9) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        frames = rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8)
        episode = Episode(frames, rng.integers(0, 6, steps), np.zeros(steps, np.float32), np.zeros(steps, bool))
        save_episode(folder / f"ep_{i:06d}.npz", episode)


def test_pairs_hold_the_latents_the_world_drew_beside_the_true_frames(tiny_ckpt, tmp_path):
    _episodes(tmp_path / "eps", 3, seed=0)
    windows = load_windows(tmp_path / "eps", context=4, horizon=3, max_windows=3)
    world = WorldModel.load(tiny_ckpt)
    pairs = draw_pairs(world, windows, batch_size=2, seed=5)
    assert len(pairs) == 9 and pairs.latents.shape == (9, 4, 8, 8)
    # batches of 2 then 1 window, each stepped 3 times: rows are (step, window) in that order
    assert pairs.horizons.tolist() == [1, 1, 2, 2, 3, 3, 1, 2, 3]
    assert np.array_equal(pairs.frames[:2], windows.future_frames[:2, 0])
    assert np.array_equal(pairs.frames[6:], windows.future_frames[2])
    # the latents are what the world's frames decode: a rollout of the same seed draws them again
    batch = world.with_batch(2)
    batch.reset(windows.context_frames[:2], windows.context_actions[:2], seed=5)
    step = batch.step(windows.future_actions[:2, 0])
    assert np.array_equal(step.latents, pairs.latents[:2])
    decoded = world.autoencoder.decode(torch.from_numpy(step.latents)).numpy()
    assert np.array_equal(decoded, step.frames)


def _fixed_pairs(world: WorldModel, count: int = 4) -> tuple[DecoderPairs, np.ndarray]:
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((count, 4, 8, 8)).astype(np.float32)
    # one flat colour: a target a tiny decoder can learn in a few steps (noise it could not)
    frames = np.full((count, 64, 64, 3), (230, 40, 200), np.uint8)
    return DecoderPairs(latents, frames, np.ones(count, np.int64)), frames


def test_tuning_moves_the_decoder_towards_the_truth_and_leaves_the_encoder(tiny_ckpt):
    world = WorldModel.load(tiny_ckpt)
    ae = world.autoencoder
    encoder = {k: v.clone() for k, v in ae.encoder.state_dict().items()}
    stats = ae.latent_mean.clone(), ae.latent_std.clone()
    pairs, real = _fixed_pairs(world)
    tuner = DecoderTuner(ae, pairs, real, steps=60, lr=3e-3, batch_size=4, real_share=0.5, warmup_steps=1)
    losses = [tuner.train_step()["drawn_loss"] for _ in range(60)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(torch.equal(v, ae.encoder.state_dict()[k]) for k, v in encoder.items())
    assert torch.equal(ae.latent_mean, stats[0]) and torch.equal(ae.latent_std, stats[1])


def test_a_step_batch_is_a_function_of_the_step(tiny_ckpt):
    world = WorldModel.load(tiny_ckpt)
    pairs, real = _fixed_pairs(world, count=16)
    tuner = DecoderTuner(world.autoencoder, pairs, real, steps=4, batch_size=3, real_share=1.0)
    first = tuner._batch()
    assert first[0].shape == (6, 4, 8, 8) and first[1].shape == (6, 3, 64, 64)
    tuner.step = 1
    assert not torch.equal(tuner._batch()[0], first[0])
    tuner.step = 0
    assert all(torch.equal(a, b) for a, b in zip(tuner._batch(), first))
    with pytest.raises(ValueError, match="no pairs"):
        DecoderTuner(world.autoencoder, DecoderPairs(pairs.latents[:0], pairs.frames[:0], pairs.horizons[:0]), real, steps=1)


def test_the_critic_learns_beside_the_decoder_and_both_resume_exactly(tiny_ckpt):
    pairs, real = _fixed_pairs(WorldModel.load(tiny_ckpt), count=8)

    def tuner() -> DecoderTuner:
        ae = WorldModel.load(tiny_ckpt).autoencoder
        return DecoderTuner(ae, pairs, real, steps=6, batch_size=4, drawn_weight=0.0, adversarial_weight=0.1, warmup_steps=1)

    first = tuner()
    critic_before = {k: v.clone() for k, v in first.critic.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in first.ae.decoder.state_dict().items()}
    metrics = [first.train_step() for _ in range(3)]
    assert {"adversarial", "critic", "critic_accuracy"} <= set(metrics[0]) and metrics[0]["drawn_loss"] > 0
    assert any(not torch.equal(v, first.critic.state_dict()[k]) for k, v in critic_before.items())
    assert any(not torch.equal(v, first.ae.decoder.state_dict()[k]) for k, v in decoder_before.items())
    # a second tuner given the first one's weights and state (copied, as a file would) takes the same next step
    second = tuner()
    second.ae.load_state_dict(first.ae.state_dict())
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.step == 3
    assert first.train_step() == second.train_step()
    assert all(torch.equal(v, second.ae.state_dict()[k]) for k, v in first.ae.state_dict().items())
    with pytest.raises(ValueError, match="real frames"):
        DecoderTuner(first.ae, pairs, real[:0], steps=1, adversarial_weight=0.1)


def _tune_module():
    spec = importlib.util.spec_from_file_location("tune_decoder", TUNE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_a_world_that_differs_only_in_its_decoder_and_resumes(tiny_ckpt, tmp_path):
    _episodes(tmp_path / "data" / "train", 3, seed=0)
    _episodes(tmp_path / "data" / "test", 2, seed=1)
    tune = _tune_module()
    out = tmp_path / "run"
    argv = [
        "--ckpt", tiny_ckpt, "--data", str(tmp_path / "data"), "--out", str(out), "--windows", "3",
        "--test-windows", "2", "--context", "4", "--horizon", "2", "--steps", "4", "--batch-size", "2",
        "--ckpt-every", "2", "--batch-rollouts", "2", "--adversarial-weight", "0.1",
    ]  # fmt: skip
    tuning = tune.main(argv)
    before, after = load_world_checkpoint(tiny_ckpt), load_world_checkpoint(out / "world.pt")
    assert after.summary["decoder_tuning"] == tuning
    assert tuning["train_pairs"] == 6 and tuning["test_pairs"] == 4
    assert set(tuning["test_after"]) >= {"drawn_psnr_all", "drawn_sharpness_all", "reconstruction_psnr"}
    changed = {k for k in before.ae_state if not torch.equal(before.ae_state[k], after.ae_state[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
    assert all(torch.equal(before.far_state[k], after.far_state[k]) for k in before.far_state)
    # a rerun finds the finished state and the drawn pairs, and writes the same world
    again = tune.main(argv)
    assert again["test_after"] == tuning["test_after"]
    assert all(torch.equal(after.ae_state[k], load_world_checkpoint(out / "world.pt").ae_state[k]) for k in after.ae_state)
    tuned = WorldModel.load(out / "world.pt")
    tuned.reset(tuned.prompt_frames[:1], tuned.prompt_actions[:1])
    assert tuned.step(np.array([1])).frames.shape == (1, 64, 64, 3)


def test_the_script_refuses_bad_arguments(tiny_ckpt, tmp_path):
    with pytest.raises(SystemExit):
        _tune_module().main(["--ckpt", tiny_ckpt, "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--steps", "0"])
    with pytest.raises(SystemExit):
        _tune_module().main(["--ckpt", tiny_ckpt, "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--adversarial-weight", "-1"])
    with pytest.raises(SystemExit):  # no train/ or test/ split
        _tune_module().main(["--ckpt", tiny_ckpt, "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_pairs_drawn_otherwise_are_refused(tiny_ckpt, tmp_path):
    _episodes(tmp_path / "data" / "train", 2, seed=0)
    _episodes(tmp_path / "data" / "test", 1, seed=1)
    argv = ["--ckpt", tiny_ckpt, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--windows", "2",
            "--test-windows", "1", "--context", "4", "--horizon", "2", "--steps", "1"]  # fmt: skip
    _tune_module().main(argv)
    with pytest.raises(SystemExit, match="drawn otherwise"):
        _tune_module().main([*argv, "--horizon", "3"])
