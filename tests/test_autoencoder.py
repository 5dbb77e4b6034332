import pytest
import torch

from far_world.model.autoencoder import AEConfig, FrameAutoencoder, float_to_frames, frames_to_float, psnr

TINY = AEConfig(channels=(8, 16), latent_channels=4)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads that
    wait for each other make a step 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def moving_square_frames(n: int = 8, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 64, 64, 3): a coloured square on a gradient background, at random places."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 160, 64)
    frames = torch.zeros(n, 64, 64, 3)
    frames[..., 0] = ramp[None, :, None]
    frames[..., 2] = ramp[None, None, :]
    for i in range(n):
        y, x = torch.randint(0, 48, (2,), generator=g).tolist()
        frames[i, y : y + 16, x : x + 16] = torch.tensor([250.0, 200.0, 40.0])
    return frames.to(torch.uint8)


def test_encode_decode_shapes_and_dtypes():
    ae = FrameAutoencoder(AEConfig())
    frames = moving_square_frames(3)
    z = ae.encode(frames)
    assert z.shape == (3, 16, 8, 8) and z.dtype == torch.float32
    out = ae.decode(z)
    assert out.shape == (3, 64, 64, 3) and out.dtype == torch.uint8


def test_config_rejects_a_downsampling_that_misses_the_latent_size():
    with pytest.raises(ValueError, match="downsample"):
        AEConfig(stem_factor=4, channels=(32, 64, 128))  # 4 * 2 * 2 = 16, not 8
    assert AEConfig(stem_factor=2, channels=(16, 32, 64)).latent_size == 8


def test_config_dict_round_trip():
    cfg = AEConfig(channels=(24, 48), latent_noise=0.1)
    assert AEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        AEConfig.from_dict({**cfg.to_dict(), "depth": 3})


def test_pixel_conversions_round_trip_exactly():
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    x = frames_to_float(frames)
    assert x.shape == (2, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(float_to_frames(x), frames)
    with pytest.raises(TypeError):
        frames_to_float(frames.float())


def test_psnr_of_a_known_error():
    a = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    b = torch.full_like(a, 255)
    assert psnr(a, b) == pytest.approx(0.0)
    c = a + 1  # MSE 1 -> 20 log10(255)
    assert psnr(a, c) == pytest.approx(48.13, abs=0.01)


def test_tiny_autoencoder_learns_to_reconstruct_a_few_frames():
    torch.manual_seed(0)
    ae = FrameAutoencoder(TINY)
    frames = moving_square_frames(8)
    x = frames_to_float(frames)
    opt = torch.optim.AdamW(ae.parameters(), lr=3e-3)

    def l1() -> float:
        with torch.no_grad():
            return float((ae(x)[0] - x).abs().mean())

    before = l1()
    for _ in range(60):
        loss = (ae(x)[0] - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = l1()
    assert after < 0.5 * before, (before, after)


def test_latent_statistics_normalize_the_latents():
    torch.manual_seed(0)
    ae = FrameAutoencoder(TINY).eval()
    frames = moving_square_frames(16)
    ae.fit_latent_stats(frames, batch_size=5)  # several batches
    z = ae.encode(frames).transpose(0, 1).reshape(TINY.latent_channels, -1)
    assert torch.allclose(z.mean(dim=1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std(dim=1), torch.ones(4), atol=1e-3)
    # decode undoes the normalization: the same pixels as the raw path
    raw = float_to_frames(ae.decode_raw(ae.encode_raw(frames_to_float(frames))))
    assert torch.equal(ae.decode(ae.encode(frames)), raw)


def test_latent_noise_only_in_training():
    ae = FrameAutoencoder(AEConfig(channels=(8, 16), latent_channels=4, latent_noise=0.5))
    x = frames_to_float(moving_square_frames(2))
    ae.eval()
    assert torch.equal(ae(x)[0], ae(x)[0])
    ae.train()
    assert not torch.equal(ae(x)[0], ae(x)[0])


def test_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    ae = FrameAutoencoder(TINY)
    first = ae.fingerprint()
    assert first == ae.fingerprint()
    with torch.no_grad():
        ae.latent_std.mul_(2)
    assert ae.fingerprint() != first
