"""DDP on CPU (gloo): two ranks under torchrun compute the gradients one process computes.

This file is also the ranks' program: ``torchrun ... tests/test_ddp.py --cache C --out O``
takes one training step's gradients on each rank and rank 0 saves them.
"""

import argparse
import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from far_world.checkpoint import load_world_checkpoint, save_autoencoder  # noqa: E402
from far_world.model.autoencoder import AEConfig, FrameAutoencoder  # noqa: E402
from far_world.training.distributed import DistInfo, init_distributed, shutdown_distributed  # noqa: E402
from far_world.training.far_trainer import FARTrainer, clip_length, shard_generator  # noqa: E402
from test_training import (  # noqa: E402, F401  (one_thread: the autouse fixture, applied here too)
    latent_cache,
    one_thread,
    script_env,
    tiny_clip_dataset,
    tiny_far_config,
    write_episodes,
)

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun")
pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")


def ddp_config(micro_batches: int):
    # Clips longer than the short window (4) so that the long-term projections get gradients too.
    return tiny_far_config(
        batch_size=4, micro_batches=micro_batches, min_clip_frames=6, max_clip_frames=8, device="cpu"
    )


def perturbed(trainer: FARTrainer) -> FARTrainer:
    """Nudge every weight the same way on every rank: at initialization adaLN-zero leaves most
    gradients exactly 0, and comparing zeros would prove nothing."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in sorted(trainer.model.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return trainer


def gradients(trainer: FARTrainer) -> dict[str, torch.Tensor]:
    """Per-parameter gradients, zeros where a parameter got none."""
    params = trainer.model.named_parameters()
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for n, p in params}


def rank_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    cfg = ddp_config(micro_batches=1)
    trainer = perturbed(FARTrainer(cfg, tiny_clip_dataset(Path(args.cache), cfg), dist))
    losses = trainer.accumulate_gradients()
    grads = gradients(trainer)
    if dist.is_main:
        torch.save({"grads": grads, "world_size": dist.world_size, "loss": losses["loss"]}, args.out)
    del trainer  # its DDP reducer must not outlive the process group (shutdown_distributed)
    gc.collect()
    shutdown_distributed()


def torchrun(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", *args]
    result = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> tuple[Path, Path]:
    data = write_episodes(tmp_path_factory.mktemp("squares_ddp"))
    return data, latent_cache(data, data / "cache")


def test_two_ranks_average_to_the_single_process_gradients(squares, tmp_path):
    _, cache = squares
    torchrun(str(Path(__file__).resolve()), "--cache", str(cache), "--out", str(tmp_path / "grads.pt"))
    ddp = torch.load(tmp_path / "grads.pt", weights_only=True)
    assert ddp["world_size"] == 2

    # One process, the same global batch cut into the same two shards (one per micro-batch).
    cfg = ddp_config(micro_batches=2)
    single = perturbed(FARTrainer(cfg, tiny_clip_dataset(cache, cfg), DistInfo(0, 1, 0, torch.device("cpu"))))
    single.accumulate_gradients()
    reference = gradients(single)
    assert reference.keys() == ddp["grads"].keys()
    # (the last block's long-term query/output weights feed nothing: their gradients are 0)
    silent = [n for n, g in reference.items() if g.abs().sum() == 0]
    assert reference["embed_long.weight"].abs().sum() > 0 and len(silent) <= 3, silent
    for name, grad in reference.items():
        assert torch.allclose(ddp["grads"][name], grad, atol=1e-5, rtol=1e-4), name
    # and it is not rank 0's own gradient: the average really happened
    single.optimizer.zero_grad()
    frames = clip_length(cfg, 0, single.longest)
    batch = single.dataset.sample_batch(cfg.batch_size, 0, rank=0, world_size=2, clip_len=frames).to_torch()
    single.model.training_loss(
        batch.frames, batch.actions, batch.rewards, batch.terminated, generator=shard_generator(cfg.seed, 0, 0)
    )["loss"].backward()
    own = gradients(single)
    assert not torch.allclose(ddp["grads"]["embed_short.weight"], own["embed_short.weight"], atol=1e-5)


@pytest.mark.slow
def test_train_far_script_runs_under_torchrun(squares, tmp_path):
    data, _ = squares
    torch.manual_seed(0)
    ae = save_autoencoder(tmp_path / "ae.pt", FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4)))
    out = tmp_path / "run"
    torchrun(
        str(REPO / "train/train_far.py"), "--data", str(data), "--ae", str(ae), "--out", str(out),
        "--preset", "tiny", "--cache", str(data / "cache_torchrun"), "steps=3", "device=cpu",
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert load_world_checkpoint(out / "world.pt").summary["world_size"] == 2


if __name__ == "__main__":
    rank_main()
