"""Shared fixtures: a tiny, untrained world checkpoint that every env/play test can load in milliseconds."""

from __future__ import annotations

import os

import far_world  # noqa: F401  (first: torch's OpenMP settings, far_world/openmp.py)
import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")

from far_world.checkpoint import WorldCheckpoint, save_world_checkpoint  # noqa: E402
from far_world.model.autoencoder import AEConfig, FrameAutoencoder  # noqa: E402
from far_world.model.config import FARConfig  # noqa: E402
from far_world.model.far import FARModel  # noqa: E402

ACTION_NAMES = ["noop", "forward", "left", "right", "forward+left", "forward+right"]


def make_tiny_world_checkpoint(
    path, seed: int = 0, prompts: int = 3, prompt_frames: int = 4, world: str = "maze", action_names: list[str] = ACTION_NAMES
) -> WorldCheckpoint:
    """An untrained tiny world (random weights, random-noise prompt frames) saved at ``path``."""
    torch.manual_seed(seed)
    ae = FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4))
    cfg = FARConfig(
        latent_channels=4, depth=2, width=64, heads=2, patch_size=2, short_window=4, max_long_frames=8,
        action_nvec=(len(action_names),),
    )  # fmt: skip
    far = FARModel(cfg)
    # Untrained heads output zeros; perturb every weight so outputs depend on inputs and actions.
    with torch.no_grad():
        for p in far.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(rng.integers(0, 256, (prompts, prompt_frames, 64, 64, 3), dtype=np.uint8))
    actions = torch.from_numpy(rng.integers(0, len(action_names), (prompts, prompt_frames))).long()
    actions[:, 0] = len(action_names)  # null action into each prompt's first frame
    ckpt = WorldCheckpoint(
        far_config=cfg, ae_config=ae.cfg, ae_state=ae.state_dict(), far_state=far.state_dict(),
        action_names=list(action_names), action_space={"type": "discrete", "n": len(action_names)},
        prompt_frames=frames, prompt_actions=actions, summary={"note": "untrained test world"}, world=world,
    )
    save_world_checkpoint(path, ckpt)
    return ckpt


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run fastest without intra-op threading."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    make_tiny_world_checkpoint(path)
    return str(path)


def random_far_model(**overrides) -> FARModel:
    """A tiny FAR model whose zero-initialized layers are made random, so that every path matters."""
    settings = dict(latent_channels=4, depth=2, width=64, heads=2, patch_size=2, short_window=4, max_long_frames=16)
    model = FARModel(FARConfig(**{**settings, **overrides})).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model
