"""The latent cache: encode once, resume, rebuild on a new autoencoder, feed ClipDataset."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from far_world.data.clips import ClipDataset
from far_world.data.episodes import DatasetMeta, Episode, save_episode, write_meta
from far_world.data.latents import (
    build_latent_cache,
    cached_stems,
    is_latent_cache,
    load_cached_episode,
    read_cache_info,
)


class PoolEncoder:
    """A stand-in autoencoder: 2x2 mean pool of the red and green channels, times ``scale``."""

    def __init__(self, scale: float = 1.0, fail_after: int | None = None) -> None:
        self.scale, self.fail_after, self.calls = scale, fail_after, 0

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.dtype == torch.uint8 and frames.shape[-1] == 3
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # the build is killed mid-way
        self.calls += 1
        x = frames[..., :2].permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.avg_pool2d(x, 2) * self.scale


def write_episodes(folder: Path, count: int = 3, steps: int = 9) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        save_episode(
            folder / f"ep{i}.npz",
            Episode(
                frames=rng.integers(0, 256, (steps + 1, 8, 8, 3), dtype=np.uint8),
                actions=rng.integers(0, 3, steps),
                rewards=rng.standard_normal(steps).astype(np.float32),
                terminated=np.arange(steps) == steps - 1,
                extras={"pose": rng.standard_normal((steps + 1, 2)).astype(np.float32)},
            ),
        )
    write_meta(folder, DatasetMeta("test", ["a", "b", "c"], {"type": "discrete", "n": 3}, [8, 8]))
    return folder


def test_cache_holds_float16_latents_and_the_episode_arrays(tmp_path: Path) -> None:
    source = write_episodes(tmp_path / "episodes")
    cache = build_latent_cache(source, tmp_path / "cache", PoolEncoder(), "ae-1", batch_size=4, progress=False)
    assert is_latent_cache(cache) and not is_latent_cache(source)
    assert cached_stems(cache) == ["ep0", "ep1", "ep2"]
    entry = load_cached_episode(cache, "ep1")
    assert entry.latents.dtype == np.float16 and entry.latents.shape == (10, 2, 4, 4)
    assert isinstance(entry.latents, np.memmap)
    raw = np.load(source / "ep1.npz")
    expected = PoolEncoder()(torch.from_numpy(raw["frames"])).numpy()
    np.testing.assert_allclose(entry.latents, expected, atol=1e-3)  # float16 rounding only
    np.testing.assert_array_equal(entry.actions, raw["actions"])
    np.testing.assert_array_equal(entry.extras["pose"], raw["extra_pose"])
    info = read_cache_info(cache)
    assert info["complete"] and info["fingerprint"] == "ae-1" and info["latent_shape"] == [2, 4, 4]
    everything = np.concatenate([PoolEncoder()(torch.from_numpy(np.load(p)["frames"])).numpy()
                                 for p in sorted(source.glob("*.npz"))])  # fmt: skip
    np.testing.assert_allclose(info["latent_mean"], everything.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(info["latent_std"], everything.std(axis=(0, 2, 3)), atol=1e-5)


def test_clip_dataset_over_the_cache_matches_the_raw_folder(tmp_path: Path) -> None:
    source = write_episodes(tmp_path / "episodes")
    cache = build_latent_cache(source, tmp_path / "cache", PoolEncoder(), "ae-1", progress=False)
    raw, latent = ClipDataset(source, 4, seed=3, extras=["pose"]), ClipDataset(cache, 4, seed=3, extras=["pose"])
    assert latent.is_latent and not raw.is_latent
    a, b = raw.sample_batch(6, step=2), latent.sample_batch(6, step=2)
    assert b.frames.shape == (6, 4, 2, 4, 4) and b.frames.dtype == np.float32
    for name in ("episode", "start", "actions", "rewards", "terminated"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.extras["pose"], b.extras["pose"])
    encoded = PoolEncoder()(torch.from_numpy(a.frames.reshape(-1, 8, 8, 3))).numpy().reshape(b.frames.shape)
    np.testing.assert_allclose(b.frames, encoded, atol=1e-3)


def test_rebuild_encodes_only_what_changed(tmp_path: Path) -> None:
    source = write_episodes(tmp_path / "episodes")
    cache = tmp_path / "cache"
    build_latent_cache(source, cache, PoolEncoder(), "ae-1", batch_size=100, progress=False)

    same = PoolEncoder()
    build_latent_cache(source, cache, same, "ae-1", batch_size=100, progress=False)
    assert same.calls == 0  # everything already cached for this autoencoder

    os.utime(source / "ep1.npz", ns=(1, 1))  # a re-collected episode
    (source / "ep2.npz").unlink()  # a deleted one
    changed = PoolEncoder()
    build_latent_cache(source, cache, changed, "ae-1", batch_size=100, progress=False)
    assert changed.calls == 1 and cached_stems(cache) == ["ep0", "ep1"]
    assert read_cache_info(cache)["episodes"] == 2

    other = PoolEncoder(scale=2.0)
    build_latent_cache(source, cache, other, "ae-2", batch_size=100, progress=False)
    assert other.calls == 2  # a new autoencoder: every entry encoded again
    assert load_cached_episode(cache, "ep0").latents.max() > 1.0


def test_an_interrupted_build_resumes(tmp_path: Path) -> None:
    source = write_episodes(tmp_path / "episodes", count=4)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(source, cache, PoolEncoder(fail_after=2), "ae-1", batch_size=100, progress=False)
    assert cached_stems(cache) == ["ep0", "ep1"] and not read_cache_info(cache)["complete"]
    assert not list(cache.glob(".*.tmp"))
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(ClipDataset(cache, 3)) == 2
    rest = PoolEncoder()
    build_latent_cache(source, cache, rest, "ae-1", batch_size=100, progress=False)
    assert rest.calls == 2 and read_cache_info(cache)["complete"]


def test_bad_episodes_are_skipped_and_bad_latents_refused(tmp_path: Path) -> None:
    source = write_episodes(tmp_path / "episodes", count=2)
    (source / "broken.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="broken.npz"):
        cache = build_latent_cache(source, tmp_path / "cache", PoolEncoder(), "ae-1", progress=False)
    assert cached_stems(cache) == ["ep0", "ep1"]
    with pytest.raises(ValueError, match="overflow float16"), pytest.warns(UserWarning, match="broken.npz"):
        build_latent_cache(source, tmp_path / "big", PoolEncoder(scale=1e6), "ae-big", progress=False)


def test_two_builders_of_one_cache_take_turns(tmp_path: Path) -> None:
    """Two runs started at once on the same data: the second waits for the first's build and
    then finds every entry current, instead of wiping the files the first is writing."""
    source = write_episodes(tmp_path / "episodes", count=4)
    cache = tmp_path / "cache"
    started = threading.Event()

    class SlowEncoder(PoolEncoder):
        def __call__(self, frames: torch.Tensor) -> torch.Tensor:
            started.set()
            time.sleep(0.1)  # the second builder arrives while this one is encoding
            return super().__call__(frames)

    first, second, errors = SlowEncoder(), PoolEncoder(), []

    def build(encoder: PoolEncoder) -> None:
        try:
            build_latent_cache(source, cache, encoder, "ae-1", batch_size=100, progress=False)
        except Exception as exc:  # reported below, from the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(first,))]
    threads[0].start()
    assert started.wait(timeout=30)
    threads.append(threading.Thread(target=build, args=(second,)))
    threads[1].start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert first.calls == 4 and second.calls == 0
    assert read_cache_info(cache)["complete"] and cached_stems(cache) == ["ep0", "ep1", "ep2", "ep3"]
