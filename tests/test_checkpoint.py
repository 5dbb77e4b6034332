import os
import pickle
import random

import numpy as np
import pytest
import torch

from far_world.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    TrainingState,
    WorldCheckpoint,
    atomic_torch_save,
    capture_rng_state,
    load_autoencoder,
    load_training_state,
    load_world_checkpoint,
    restore_rng_state,
    save_autoencoder,
    save_training_state,
    save_world_checkpoint,
)
from far_world.data.episodes import DatasetMeta, Episode, save_episode
from far_world.model.autoencoder import AEConfig, FrameAutoencoder
from far_world.model.config import FARConfig
from far_world.model.far import FARModel
from far_world.training.export import export_world


def make_world_checkpoint() -> WorldCheckpoint:
    torch.manual_seed(0)
    ae = FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4))
    return WorldCheckpoint(
        far_config=FARConfig(latent_channels=4, depth=2, width=64, heads=2, patch_size=2, action_nvec=(5,)),
        ae_config=ae.cfg,
        ae_state=ae.state_dict(),
        far_state={"blocks.0.weight": torch.randn(8, 8), "final.bias": torch.zeros(3)},
        action_names=["noop", "forward", "left", "right", "use"],
        action_space={"type": "discrete", "n": 5},
        prompt_frames=torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8),
        prompt_actions=torch.tensor([[5, 1, 2], [5, 0, 4]]),
        summary={"steps": 10, "final_loss": 0.5, "autoencoder": {"test_psnr_db": 27.5}, "curve": [1.0, 0.7]},
        world="doom",
        world_kwargs={"hud": True},
    )


def raw_payload(path) -> dict:
    return torch.load(path, weights_only=True)


def test_world_checkpoint_round_trip(tmp_path):
    ckpt = make_world_checkpoint()
    path = save_world_checkpoint(tmp_path / "world.pt", ckpt)
    back = load_world_checkpoint(path)
    assert back.far_config == ckpt.far_config
    assert back.ae_config == ckpt.ae_config
    for a, b in ((back.ae_state, ckpt.ae_state), (back.far_state, ckpt.far_state)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.action_names == ckpt.action_names and back.action_space == ckpt.action_space
    assert torch.equal(back.prompt_frames, ckpt.prompt_frames) and back.prompt_frames.dtype == torch.uint8
    assert torch.equal(back.prompt_actions, ckpt.prompt_actions)
    assert back.summary == ckpt.summary and back.world == "doom" and back.world_kwargs == {"hud": True}
    assert torch.equal(back.latent_std, ckpt.ae_state["latent_std"])
    # the weights load into real modules
    FrameAutoencoder(back.ae_config).load_state_dict(back.ae_state)


def test_files_from_before_world_settings_were_recorded_load_with_none(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = raw_payload(path)
    del payload["world_kwargs"]
    torch.save(payload, path)
    assert load_world_checkpoint(path).world_kwargs == {}


def test_export_records_the_real_worlds_settings(tmp_path):
    ckpt = make_world_checkpoint()
    folder = tmp_path / "data" / "test"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        frames = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
        save_episode(folder / f"ep{i}.npz", Episode(frames, np.ones(4, np.int64), np.zeros(4, np.float32), np.zeros(4, bool)))
    meta = DatasetMeta(
        world="doom:health_gathering", action_names=ckpt.action_names, action_space=ckpt.action_space,
        resolution=[64, 64], info={"steps": 4, "world_kwargs": {"hud": True, "frame_skip": 4}},
    )  # fmt: skip
    far = FARModel(ckpt.far_config)
    ae = FrameAutoencoder(ckpt.ae_config)
    export_world(tmp_path / "world.pt", ckpt.far_config, far.state_dict(), ae, meta, [folder], 2, 3, {})
    back = load_world_checkpoint(tmp_path / "world.pt")
    assert back.world == "doom:health_gathering"
    assert back.world_kwargs == {"hud": True, "frame_skip": 4}


def test_file_is_plain_data_loadable_with_weights_only(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = torch.load(path, weights_only=True)
    assert payload["far_world"] == "world" and payload["format_version"] == FORMAT_VERSION


def test_save_rejects_objects_that_are_not_plain_data(tmp_path):
    ckpt = make_world_checkpoint()
    ckpt.summary["when"] = object()
    with pytest.raises(TypeError, match="summary.when"):
        save_world_checkpoint(tmp_path / "world.pt", ckpt)
    assert not list(tmp_path.iterdir())


def test_save_rejects_prompts_that_are_not_uint8_clips(tmp_path):
    ckpt = make_world_checkpoint()
    ckpt.prompt_frames = ckpt.prompt_frames.float()
    with pytest.raises(ValueError, match="uint8"):
        save_world_checkpoint(tmp_path / "world.pt", ckpt)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_world_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_world_checkpoint(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "world.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_world_checkpoint(path)


class Payload:
    """A class a malicious pickle could carry; weights_only must refuse to build it."""


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "world.pt"
    torch.save({"far_world": "world", "format_version": FORMAT_VERSION, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        load_world_checkpoint(path)
    path.write_bytes(pickle.dumps({"far_world": "world"}, protocol=2))  # a bare pickle, not a torch file
    with pytest.raises(CheckpointError):
        load_world_checkpoint(path)


def test_not_a_far_world_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a far-world checkpoint"):
        load_world_checkpoint(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="not a far-world checkpoint"):
        load_world_checkpoint(path)


def test_incompatible_version(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = raw_payload(path)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_world_checkpoint(path)


def test_missing_keys(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = raw_payload(path)
    del payload["far_state"], payload["prompt_frames"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['far_state', 'prompt_frames'\]"):
        load_world_checkpoint(path)


def test_missing_latent_statistics(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = raw_payload(path)
    del payload["ae_state"]["latent_mean"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="latent_mean"):
        load_world_checkpoint(path)


def test_invalid_config(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    payload = raw_payload(path)
    payload["far_config"]["not_a_field"] = 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_world_checkpoint(path)


def test_kinds_are_not_confused(tmp_path):
    world = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    with pytest.raises(CheckpointError, match="'world' checkpoint, expected 'training_state'"):
        load_training_state(world)
    with pytest.raises(CheckpointError, match="'autoencoder' checkpoint, expected 'world'"):
        load_world_checkpoint(save_autoencoder(tmp_path / "ae.pt", FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4))))


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = save_world_checkpoint(tmp_path / "world.pt", make_world_checkpoint())
    before = path.read_bytes()
    with pytest.raises(Exception):
        atomic_torch_save({"f": lambda: 0}, path)  # lambdas cannot be pickled
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["world.pt"]  # no temporary file left


def test_autoencoder_file_round_trip(tmp_path):
    torch.manual_seed(0)
    ae = FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4))
    with torch.no_grad():
        ae.latent_mean.fill_(0.25)
    path = save_autoencoder(tmp_path / "ae.pt", ae, {"test_psnr_db": 26.0})
    back, summary = load_autoencoder(path)
    assert summary == {"test_psnr_db": 26.0} and back.cfg == ae.cfg and not back.training
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert torch.equal(back.encode(frames), ae.encode(frames))


def test_rng_state_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_training_state_round_trip_restores_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = TrainingState(
        step=7,
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        rng=capture_rng_state(),
        config={"lr": 1e-3, "far": {"depth": 2}},
        ema={"shadow": model.state_dict(), "updates": 7, "decay": 0.99},
    )
    path = save_training_state(tmp_path / "state.pt", state)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9)
    torch.manual_seed(9)
    back = load_training_state(path)
    assert back.step == 7 and back.config == state.config and back.ema["updates"] == 7
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back.optimizer)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    restore_rng_state(back.rng)
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_half_precision_release_loads_into_float32_model(tmp_path):
    from conftest import make_tiny_world_checkpoint

    from far_world.checkpoint import with_half_precision_weights
    from far_world.world import WorldModel

    full = make_tiny_world_checkpoint(tmp_path / "full.pt")
    save_world_checkpoint(tmp_path / "half.pt", with_half_precision_weights(full))
    assert (tmp_path / "half.pt").stat().st_size < 0.75 * (tmp_path / "full.pt").stat().st_size
    world = WorldModel.load(tmp_path / "half.pt")
    name, weight = next(world.far.named_parameters())
    assert weight.dtype == torch.float32
    reference = full.far_state[name]
    assert torch.allclose(weight, reference, atol=1e-3) and not torch.equal(weight, reference)


def test_release_script_stores_the_inference_defaults_worlds_start_from(tmp_path):
    import sys
    from pathlib import Path

    from conftest import make_tiny_world_checkpoint

    from far_world.world import WorldModel

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
    try:
        import release
    finally:
        sys.path.pop(0)
    make_tiny_world_checkpoint(tmp_path / "run.pt")
    assert WorldModel.load(tmp_path / "run.pt").sampling_steps == 4  # nothing stored: the built-in default
    release.main([
        str(tmp_path / "run.pt"), str(tmp_path / "out.pt"), "--sampling-steps", "2", "--guidance", "1.5",
        "--guidance-scope", "frame", "--guided-steps", "1",
    ])  # fmt: skip
    world = WorldModel.load(tmp_path / "out.pt")
    assert (world.sampling_steps, world.guidance) == (2, 1.5)
    assert (world.settings.guidance_scope, world.settings.guided_steps) == ("frame", 1)
    with pytest.raises(SystemExit):
        release.main([str(tmp_path / "run.pt"), str(tmp_path / "bad.pt"), "--sampling-steps", "0"])


def test_a_world_trained_on_warm_start_paths_samples_from_a_warm_start(tmp_path):
    import dataclasses

    from conftest import make_tiny_world_checkpoint

    from far_world.world import WorldModel

    ckpt = make_tiny_world_checkpoint(tmp_path / "plain.pt")
    assert WorldModel.load(tmp_path / "plain.pt").settings.start_time == 1.0
    ckpt.far_config = dataclasses.replace(ckpt.far_config, warm_start_time=0.7)
    save_world_checkpoint(tmp_path / "warm.pt", ckpt)
    assert WorldModel.load(tmp_path / "warm.pt").settings.start_time == 0.7
    ckpt.summary = {"inference": {"start_time": 0.9}}  # a released default still wins
    save_world_checkpoint(tmp_path / "released.pt", ckpt)
    assert WorldModel.load(tmp_path / "released.pt").settings.start_time == 0.9


def test_a_world_checkpoint_lends_its_autoencoder(tmp_path):
    """train_far --ae accepts a released world: a new world trains on the very same latents."""
    ckpt = make_world_checkpoint()
    ae, summary = load_autoencoder(save_world_checkpoint(tmp_path / "world.pt", ckpt))
    for key, value in ae.state_dict().items():
        assert torch.equal(value, ckpt.ae_state[key].float()), key
    assert isinstance(summary, dict)
