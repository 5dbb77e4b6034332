import importlib.util
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.checkpoint import load_training_state, load_world_checkpoint, save_autoencoder, save_training_state
from far_world.data.clips import ClipDataset, FrameDataset
from far_world.data.episodes import DatasetMeta, Episode, save_episode, write_meta
from far_world.data.latents import build_latent_cache
from far_world.model.autoencoder import AEConfig, FrameAutoencoder
from far_world.training.ae_trainer import AETrainer
from far_world.training.distributed import DistInfo
from far_world.training.ema import EMA
from far_world.training.far_trainer import FARTrainer, clip_length, clip_tokens, parameter_groups
from far_world.training.presets import (
    AE_PRESETS,
    FAR_PRESETS,
    AETrainConfig,
    FARTrainConfig,
    apply_overrides,
    preset,
)
from far_world.training.resume import check_resumable, config_differences
from far_world.training.run_log import read_metrics
from far_world.training.schedule import lr_at

REPO = Path(__file__).resolve().parents[1]
NUM_ACTIONS = 4
SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine waiting OpenMP threads
    make a step 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- synthetic data (also used by test_ddp.py) ---------------------------------------------------
def write_episodes(data: Path, n_train: int = 3, n_test: int = 1, steps: int = 20, seed: int = 0) -> Path:
    """A dataset of squares that move with the actions: data/{train,test}/*.npz + meta.json."""
    rng = np.random.default_rng(seed)
    moves = np.array([[0, 0], [0, 4], [4, 0], [-4, -4]])
    for i in range(n_train + n_test):
        pos = rng.integers(8, 48, size=2)
        actions = rng.integers(0, NUM_ACTIONS, size=steps)
        frames = np.zeros((steps + 1, 64, 64, 3), np.uint8)
        frames[..., 2] = np.linspace(0, 120, 64, dtype=np.uint8)[None, :, None]
        for t in range(steps + 1):
            y, x = pos
            frames[t, y : y + 8, x : x + 8] = (230, 180, 30)
            if t < steps:
                pos = np.clip(pos + moves[actions[t]], 0, 56)
        terminated = np.zeros(steps, bool)
        terminated[-1] = i % 2 == 0
        split = "train" if i < n_train else "test"
        episode = Episode(frames, actions, rng.normal(size=steps).astype(np.float32), terminated)
        save_episode(data / split / f"ep{i:03d}.npz", episode)
    names = ["noop", "right", "down", "up-left"]
    write_meta(data, DatasetMeta("squares", names, {"type": "discrete", "n": NUM_ACTIONS}, [64, 64]))
    return data


def pool_encode(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder: (N,64,64,3) uint8 -> (N,4,8,8), RGB and grey averaged over 8x8 patches."""
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    x = torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)
    return torch.nn.functional.avg_pool2d(x, 8)


def latent_cache(data: Path, cache: Path) -> Path:
    return build_latent_cache(data / "train", cache, pool_encode, fingerprint="pool", progress=False)


def tiny_far_config(**overrides: str) -> FARTrainConfig:
    cfg = preset(FAR_PRESETS, "tiny")
    return apply_overrides(cfg, [f"far.action_nvec={NUM_ACTIONS}", *(f"{k}={v}" for k, v in overrides.items())])


def tiny_clip_dataset(cache: Path, cfg: FARTrainConfig) -> ClipDataset:
    return ClipDataset(cache, clip_len=cfg.min_clip_frames, seed=cfg.seed, action_nvec=cfg.far.action_nvec)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> tuple[Path, Path]:
    data = write_episodes(tmp_path_factory.mktemp("squares"))
    return data, latent_cache(data, data / "cache")


# -- schedule, EMA, presets ------------------------------------------------------------------------
def test_lr_warmup_then_cosine_to_the_floor():
    lrs = [lr_at(s, 1.0, warmup_steps=4, total_steps=14, min_ratio=0.1) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[14] == pytest.approx(0.1) and lrs[19] == pytest.approx(0.1)


def test_ema_averages_with_a_ramped_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.state_dict()["weight"], torch.full((1, 2), 0.9))
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.state_dict()["weight"], torch.ones(1, 2), atol=1e-6)
    assert ema.decay == 0.9 and ema.updates == 201


def test_presets_round_trip_and_copy():
    for table, cls in ((FAR_PRESETS, FARTrainConfig), (AE_PRESETS, AETrainConfig)):
        for name in table:
            cfg = preset(table, name)
            assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
            assert cfg is not table[name]
    assert preset(FAR_PRESETS, "gpu").far.width == 768 and preset(FAR_PRESETS, "gpu").far.depth == 12
    with pytest.raises(ValueError, match="unknown preset"):
        preset(FAR_PRESETS, "huge")


def test_cpu_rollout_preset_is_the_cpu_one_plus_rollouts():
    # the ablation baseline (cpu) and its rollout variant differ in exactly one change
    with_rollouts, teacher_forced = preset(FAR_PRESETS, "cpu_rollout"), preset(FAR_PRESETS, "cpu")
    assert config_differences(teacher_forced.to_dict(), with_rollouts.to_dict()) == [
        "rollout_prob: saved 0.0, requested 0.5", "rollout_start_step: saved 0, requested 1200",
    ]
    assert 0 < with_rollouts.rollout_start_step < with_rollouts.steps


def test_overrides_parse_to_the_field_types():
    cfg = apply_overrides(
        preset(FAR_PRESETS, "tiny"),
        ["lr=1e-3", "far.depth=3", "far.action_nvec=3,2", "betas=0.8,0.95", "device=cpu", "far.extra={\"a\": 1}"],
    )
    assert cfg.lr == 1e-3 and cfg.far.depth == 3 and cfg.far.action_nvec == (3, 2)
    assert cfg.betas == (0.8, 0.95) and cfg.device == "cpu" and cfg.far.extra == {"a": 1}
    ae = apply_overrides(preset(AE_PRESETS, "tiny"), ["ae.channels=16,32", "ae.latent_noise=0.1"])
    assert ae.ae.channels == (16, 32) and ae.ae.latent_noise == 0.1
    for bad in ("nope=1", "far.nope=1", "far=1", "lr"):
        with pytest.raises(ValueError):
            apply_overrides(cfg, [bad])
    with pytest.raises(ValueError):  # FARConfig's own validation runs on overrides
        apply_overrides(cfg, ["far.heads=5"])
    # fields that must change together can: validation runs once all overrides are in
    wide = apply_overrides(cfg, ["far.width=96", "far.heads=3"])
    assert (wide.far.width, wide.far.heads) == (96, 3)


def test_resume_refuses_another_config_but_allows_more_steps():
    saved = preset(FAR_PRESETS, "tiny").to_dict()
    check_resumable(saved, {**saved, "steps": 999, "log_every": 7, "device": "cuda"})
    with pytest.raises(ValueError, match="far.depth"):
        check_resumable(saved, {**saved, "far": {**saved["far"], "depth": 9}})


def test_clip_lengths_are_a_function_of_the_step_within_bounds():
    cfg = tiny_far_config(min_clip_frames=3, max_clip_frames=8)
    lengths = [clip_length(cfg, s, longest=100) for s in range(200)]
    assert lengths == [clip_length(cfg, s, longest=100) for s in range(200)]
    assert min(lengths) == 3 and max(lengths) == 8
    assert max(clip_length(cfg, s, longest=5) for s in range(50)) == 5
    # 4 short frames of 16 tokens, 2 long frames of 4 tokens (tiny: patch 2 and 4 on an 8x8 latent)
    assert clip_tokens(cfg, 6) == 4 * 16 + 2 * 4


def test_weight_decay_spares_biases_and_embeddings():
    from far_world.model.far import FARModel

    model = FARModel(tiny_far_config().far)
    decay, keep = parameter_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    assert id(model.conditioner.action.weight) not in decayed
    assert id(model.embed_short.bias) not in decayed
    assert id(model.embed_short.weight) in decayed
    assert len(decay["params"]) + len(keep["params"]) == len(list(model.parameters()))


# -- exact resume ----------------------------------------------------------------------------------
def scramble_rngs() -> None:
    """What a fresh process looks like: any resumed state must not depend on the RNGs it finds."""
    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)


@pytest.mark.parametrize(
    "overrides",
    [
        {"far.context_noise": "0.1"},
        {"self_context_prob": "0.5", "rollout_prob": "0.5"},
        {"adversarial_weight": "0.5", "rollout_prob": "0.5", "critic_actions": "true"},
        {"distill_prob": "0.7", "distill_substeps": "2"},  # steps 0, 2 and 4 distill
        {"distill_prob": "0.7", "distill_substeps": "2", "distill_guidance": "2", "distill_guided_steps": "2"},
        {"distill_prob": "0.7", "distill_substeps": "2", "distill_from_step": "1"},
        {"revisit_prob": "0.5", "revisit_margin": "1.0"},
    ],
    ids=["context_noise", "own_frames", "adversarial", "distillation", "guided_distillation", "late_distillation", "revisits"],
)
def test_far_resume_after_step_k_is_exact(squares, tmp_path, overrides):
    _, cache = squares
    cfg = tiny_far_config(steps=6, **overrides)

    def fine_tuner() -> FARTrainer:
        """A new run; with distillation a fine-tune from its own initial weights (the teacher)."""
        trainer = FARTrainer(cfg, tiny_clip_dataset(cache, cfg), SINGLE)
        if cfg.distill_prob > 0:
            trainer.start_from({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return trainer

    reference = fine_tuner()
    ref_losses = [reference.train_step()["loss"] for _ in range(5)]

    first = fine_tuner()
    for _ in range(3):
        first.train_step()
    save_training_state(tmp_path / "state.pt", first.training_state())
    del first

    scramble_rngs()
    resumed = FARTrainer(cfg, tiny_clip_dataset(cache, cfg), SINGLE)
    resumed.load_training_state(load_training_state(tmp_path / "state.pt"))
    assert resumed.step == 3
    losses = [resumed.train_step()["loss"] for _ in range(2)]
    assert losses == pytest.approx(ref_losses[3:], abs=1e-6, rel=0)
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], value, atol=1e-6), name
    for name, value in reference.ema.state_dict().items():
        assert torch.allclose(resumed.ema.state_dict()[name], value, atol=1e-6), name
    if reference.adversarial is not None:
        for name, value in reference.adversarial.critic.state_dict().items():
            assert torch.allclose(resumed.adversarial.critic.state_dict()[name], value, atol=1e-6), name


def test_the_critic_judges_only_estimates_from_low_flow_times(squares, monkeypatch):
    """adversarial_max_time: the critic and the model's adversarial loss see the denoised frames
    (with a frame before them) drawn at flow times up to the limit, and no others."""
    from far_world.model.far import FARModel
    from far_world.training.adversarial import AdversarialTerm

    _, cache = squares
    cfg = tiny_far_config(steps=4, adversarial_weight="0.5", adversarial_max_time="0.6")
    expected, judged = [], []
    training_loss, update = FARModel.training_loss, AdversarialTerm.update

    def spy_loss(self, latents, *args, **kwargs):
        out = training_loss(self, latents, *args, **kwargs)
        first = latents.shape[1] - out["times"].shape[1]
        has_previous = torch.arange(first, latents.shape[1]) >= 1
        expected.append(int((out["denoised"] & (out["times"] <= 0.6) & has_previous).sum()))
        assert 0 < expected[-1] < int((out["denoised"] & has_previous).sum())  # some, not all
        return out

    def spy_update(self, pairs):
        judged.append(len(pairs.estimates))
        return update(self, pairs)

    monkeypatch.setattr(FARModel, "training_loss", spy_loss)
    monkeypatch.setattr(AdversarialTerm, "update", spy_update)
    trainer = FARTrainer(cfg, tiny_clip_dataset(cache, cfg), SINGLE)
    for _ in range(2):
        trainer.train_step()
    assert judged == expected and len(judged) == 2 * cfg.micro_batches
    with pytest.raises(ValueError, match="adversarial_max_time"):
        tiny_far_config(adversarial_max_time="0")


def test_rollouts_of_a_warm_start_world_start_warm_as_its_play_does(squares, monkeypatch):
    from far_world.training import far_trainer

    _, cache = squares
    cfg = tiny_far_config(steps=2, rollout_prob="1.0", min_clip_frames=4, max_clip_frames=4, **{"far.warm_start_time": "0.7"})
    starts = []
    own_rollouts = far_trainer.own_rollouts

    def spy(model, latents, actions, frames, settings, generator=None):
        starts.append(settings.start_time)
        return own_rollouts(model, latents, actions, frames, settings, generator)

    monkeypatch.setattr(far_trainer, "own_rollouts", spy)
    FARTrainer(cfg, tiny_clip_dataset(cache, cfg), SINGLE).train_step()
    assert starts and set(starts) == {0.7}
    with pytest.raises(ValueError, match="warm-start"):
        tiny_far_config(distill_prob="0.5", **{"far.warm_start_time": "0.7"})


def test_guided_distillation_needs_a_positive_weight_and_a_guided_step():
    with pytest.raises(ValueError, match="distill_guidance"):
        tiny_far_config(distill_prob="0.5", distill_guidance="0")
    with pytest.raises(ValueError, match="distill_guided_steps"):
        tiny_far_config(distill_prob="0.5", distill_guided_steps="0")


def test_distillation_must_teach_at_least_the_grids_last_step():
    with pytest.raises(ValueError, match="distill_from_step"):
        tiny_far_config(distill_prob="0.5", distill_steps="3", distill_from_step="3")
    assert tiny_far_config(distill_prob="0.5", distill_steps="3", distill_from_step="2").distill_from_step == 2


def test_change_prediction_refuses_the_objectives_that_estimate_whole_frames():
    assert tiny_far_config(**{"far.change_scale": "0.5", "rollout_prob": "0.5"}).far.change_scale == 0.5
    with pytest.raises(ValueError, match="change prediction"):
        tiny_far_config(distill_prob="0.5", **{"far.change_scale": "0.5"})
    with pytest.raises(ValueError, match="change prediction"):
        tiny_far_config(self_context_prob="0.5", **{"far.change_scale": "0.5"})


def test_far_training_reduces_the_loss(squares):
    _, cache = squares
    cfg = tiny_far_config(steps=40, lr=3e-3, min_clip_frames=4, max_clip_frames=4, batch_size=8)
    trainer = FARTrainer(cfg, tiny_clip_dataset(cache, cfg), SINGLE)
    losses = [trainer.train_step()["flow"] for _ in range(40)]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8]), losses


def test_autoencoder_resume_is_exact(squares, tmp_path):
    data, _ = squares
    # latent noise draws from the global torch RNG: resuming must restore it
    cfg = apply_overrides(preset(AE_PRESETS, "tiny"), ["ae.latent_noise=0.2", "steps=6"])
    dataset = FrameDataset(data / "train", seed=cfg.seed)
    reference = AETrainer(cfg, dataset, torch.device("cpu"))
    ref = [reference.train_step()["l1"] for _ in range(4)]
    first = AETrainer(cfg, dataset, torch.device("cpu"))
    for _ in range(2):
        first.train_step()
    save_training_state(tmp_path / "state.pt", first.training_state())
    scramble_rngs()
    resumed = AETrainer(cfg, dataset, torch.device("cpu"))
    resumed.load_training_state(load_training_state(tmp_path / "state.pt"))
    assert [resumed.train_step()["l1"] for _ in range(2)] == pytest.approx(ref[2:], abs=1e-6, rel=0)


def load_script(name: str):
    """A train/ script as a module: its ``main(argv)`` runs in this process (no torch start-up)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def far_args(data: Path, ae: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--ae", str(ae), "--out", str(out), "--preset", "tiny",
            "--cache", str(data / "cache_script"), *extra]  # fmt: skip


def untrained_ae(path: Path) -> Path:
    torch.manual_seed(0)
    return save_autoencoder(path, FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4)))


def compare_runs(whole: Path, resumed: Path, k: int, last: int) -> None:
    """Losses of every step after k, and the released EMA weights, match the uninterrupted run."""
    a, b = read_metrics(whole / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert b[k + 1]["loss"] == pytest.approx(a[k + 1]["loss"], abs=1e-6, rel=0)
    assert [b[s]["loss"] for s in range(k + 1, last + 1)] == pytest.approx(
        [a[s]["loss"] for s in range(k + 1, last + 1)], abs=1e-6, rel=0
    )
    wa = load_world_checkpoint(whole / "world.pt").far_state
    wb = load_world_checkpoint(resumed / "world.pt").far_state
    assert all(torch.allclose(wa[n], wb[n], atol=1e-6) for n in wa)


class Interrupted(Exception):
    pass


def test_train_far_interrupted_after_step_k_resumes_exactly(squares, tmp_path, monkeypatch, capsys):
    data, _ = squares
    train_far = load_script("train_far")
    ae = untrained_ae(tmp_path / "ae.pt")
    args = ("steps=10", "ckpt_every=3", "log_every=1")
    train_far.main(far_args(data, ae, tmp_path / "whole", *args))

    # Die during step 8: the last checkpoint is step 6, steps 7 and 8 are lost with the process.
    original = FARTrainer.train_step

    def dying_step(self):
        if self.step == 7:
            raise Interrupted
        return original(self)

    monkeypatch.setattr(FARTrainer, "train_step", dying_step)
    with pytest.raises(Interrupted):
        train_far.main(far_args(data, ae, tmp_path / "cut", *args))
    monkeypatch.undo()
    assert load_training_state(tmp_path / "cut" / "state.pt").step == 6

    capsys.readouterr()
    train_far.main(far_args(data, ae, tmp_path / "cut", *args))
    assert "at step 6" in capsys.readouterr().out
    compare_runs(tmp_path / "whole", tmp_path / "cut", k=6, last=10)


def test_sigterm_saves_the_step_it_stopped_at_and_the_run_continues_exactly(squares, tmp_path, monkeypatch, capsys):
    data, _ = squares
    train_far = load_script("train_far")
    ae = untrained_ae(tmp_path / "ae.pt")
    args = ("steps=10", "ckpt_every=100", "log_every=1")
    train_far.main(far_args(data, ae, tmp_path / "whole", *args))

    # SIGTERM during step 5, long before the first checkpoint: the stop itself saves step 5.
    original = FARTrainer.train_step

    def signalled_step(self):
        metrics = original(self)
        if self.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return metrics

    monkeypatch.setattr(FARTrainer, "train_step", signalled_step)
    assert train_far.main(far_args(data, ae, tmp_path / "cut", *args)) is None
    monkeypatch.undo()
    assert "the same command continues" in capsys.readouterr().out
    assert load_training_state(tmp_path / "cut" / "state.pt").step == 5 and not (tmp_path / "cut" / "world.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run

    train_far.main(far_args(data, ae, tmp_path / "cut", *args))
    assert "at step 5" in capsys.readouterr().out
    compare_runs(tmp_path / "whole", tmp_path / "cut", k=5, last=10)


def test_train_far_writes_config_summary_and_a_loadable_world(squares, tmp_path):
    data, _ = squares
    train_far = load_script("train_far")
    ae = untrained_ae(tmp_path / "ae.pt")
    summary = train_far.main(far_args(data, ae, tmp_path / "run", "steps=3", "num_prompts=2", "prompt_frames=5"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["steps"] == 3 and config["far"]["action_nvec"] == [NUM_ACTIONS]
    world = load_world_checkpoint(tmp_path / "run" / "world.pt")
    assert world.world == "squares" and world.action_names[1] == "right"
    assert world.prompt_frames.shape == (1, 5, 64, 64, 3)  # one test episode
    assert world.prompt_actions[0, 0] == NUM_ACTIONS  # the null action into an episode's first frame
    assert world.summary == summary and summary["steps"] == 3 and summary["tokens_seen"] > 0
    assert (tmp_path / "run" / "tb").is_dir()
    # a different config in the same folder is refused rather than silently mixed
    with pytest.raises(ValueError, match="another config"):
        train_far.main(far_args(data, ae, tmp_path / "run", "steps=3", "lr=0.5"))


def test_train_ae_script_reports_held_out_psnr_and_resumes(squares, tmp_path, capsys):
    data, _ = squares
    train_ae = load_script("train_ae")
    args = ["--data", str(data), "--out", str(tmp_path / "ae_run"), "--preset", "tiny"]
    summary = train_ae.main([*args, "--steps", "6"])
    assert "reconstruction PSNR" in capsys.readouterr().out
    assert json.loads((tmp_path / "ae_run" / "summary.json").read_text()) == summary
    assert summary["steps"] == 6 and 5 < summary["test_psnr_db"] < 60
    summary = train_ae.main([*args, "--steps", "8"])
    assert "resumed" in capsys.readouterr().out and summary["steps"] == 8


def script_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_train_far_killed_by_sigkill_and_restarted_matches_an_uninterrupted_run(squares, tmp_path):
    data, _ = squares
    ae = untrained_ae(tmp_path / "ae.pt")
    args = ("steps=24", "ckpt_every=3", "log_every=1")

    def launch(out: Path) -> subprocess.Popen:
        cmd = [sys.executable, str(REPO / "train/train_far.py"), *far_args(data, ae, out, *args)]
        return subprocess.Popen(cmd, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(proc: subprocess.Popen) -> str:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
        return output

    finish(launch(tmp_path / "whole"))
    killed = launch(tmp_path / "killed")
    state = tmp_path / "killed" / "state.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # no chance to clean up: exactly what a crash looks like
    killed.communicate()
    k = load_training_state(state).step
    assert 0 < k < 24, "the run was not killed in the middle (machine too fast or too slow?)"
    assert f"resumed from {state} at step {k}" in finish(launch(tmp_path / "killed"))
    compare_runs(tmp_path / "whole", tmp_path / "killed", k=k, last=24)


def test_train_far_init_starts_from_a_worlds_weights_on_its_latents_only(squares, tmp_path, capsys):
    data, _ = squares
    train_far = load_script("train_far")
    ae = untrained_ae(tmp_path / "ae.pt")
    train_far.main(far_args(data, ae, tmp_path / "first", "steps=4"))
    first = tmp_path / "first" / "world.pt"

    # Zero steps of fine-tuning: the new world is the initial one, weight for weight.
    train_far.main(far_args(data, ae, tmp_path / "again", "steps=0", "--init", str(first)))
    assert "started from the weights of" in capsys.readouterr().out
    start, again = load_world_checkpoint(first).far_state, load_world_checkpoint(tmp_path / "again" / "world.pt").far_state
    assert all(torch.equal(start[name], again[name]) for name in start)
    fresh = train_far.main(far_args(data, ae, tmp_path / "fresh", "steps=0"))
    fresh_state = load_world_checkpoint(tmp_path / "fresh" / "world.pt").far_state
    assert fresh["init"] is None and not all(torch.equal(start[n], fresh_state[n]) for n in start)

    torch.manual_seed(1)
    other_ae = save_autoencoder(tmp_path / "other_ae.pt", FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4)))
    with pytest.raises(SystemExit, match="not the --ae one"):
        train_far.main(["--data", str(data), "--ae", str(other_ae), "--out", str(tmp_path / "other"), "--preset", "tiny",
                        "--cache", str(data / "cache_other"), "steps=0", "--init", str(first)])  # fmt: skip

    # Weights that predict the velocity are refused by a run that reads them as the clean frame.
    with pytest.raises(SystemExit, match="far.prediction=velocity"):
        train_far.main(far_args(data, ae, tmp_path / "clean", "steps=0", "far.prediction=clean", "--init", str(first)))
    # Unless the run says it means to relearn the output.
    train_far.main(far_args(data, ae, tmp_path / "clean", "steps=0", "far.prediction=clean", "--init", str(first), "--new-output"))
    assert load_world_checkpoint(tmp_path / "clean" / "world.pt").far_config.prediction == "clean"

    # Distillation learns from the world it starts from: without --init there is no teacher.
    with pytest.raises(SystemExit, match="needs --init"):
        train_far.main(far_args(data, ae, tmp_path / "no_teacher", "steps=2", "distill_prob=1.0"))
    # With one, a distilled run trains and releases a world.
    train_far.main(far_args(data, ae, tmp_path / "distilled", "steps=2", "distill_prob=1.0", "--init", str(first)))
    assert (tmp_path / "distilled" / "world.pt").is_file()
