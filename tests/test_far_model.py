"""FARModel: causality, FlexRoPE, the training loss, the sampler and a tiny overfit."""

import pytest
import torch
from conftest import random_far_model

from far_world.model.config import FARConfig
from far_world.model.far import CONTEXT, GENERATED, FARModel, timestep_embedding, warm_start_source
from far_world.model.heads import head_losses
from far_world.model.inference import CachedSampler
from far_world.model.sampler import SamplingSettings, flow_times, guide, sample_euler


random_model = random_far_model


def _inputs(model, batch=2, frames=5, seed=0):
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    actions = torch.randint(0, cfg.action_nvec[0], (batch, frames), generator=g)
    timesteps = torch.rand(batch, frames, generator=g)
    timesteps[:, 0] = CONTEXT
    return latents, actions, timesteps


def test_config_round_trip_and_validation():
    cfg = FARConfig(depth=6, width=256, heads=4, patch_size=2, action_nvec=(3, 4))
    assert FARConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.short_tokens == 16 and cfg.long_tokens == 4 and cfg.head_dim == 64
    with pytest.raises(ValueError):
        FARConfig(width=72, heads=4)  # head dim 18: no even 3D rotary split
    with pytest.raises(ValueError):
        FARConfig(patch_size=3)
    with pytest.raises(ValueError):
        FARConfig(short_window=1)
    with pytest.raises(ValueError, match="prediction"):
        FARConfig(prediction="noise")
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="warm_start_time"):
            FARConfig(warm_start_time=bad)
    with pytest.raises(ValueError, match="change_scale"):
        FARConfig(change_scale=-1.0)
    with pytest.raises(ValueError, match="do not combine"):
        FARConfig(change_scale=0.5, warm_start_time=0.8)


@pytest.mark.parametrize("short_window, k", [(8, 2), (3, 3)])
def test_changing_frame_or_action_k_leaves_earlier_outputs_unchanged(short_window, k):
    model = random_model(short_window=short_window)
    latents, actions, timesteps = _inputs(model, frames=5)
    n_long = 5 - min(5, short_window)
    velocity, features = model(latents, actions, timesteps)
    changed_latents = latents.clone()
    changed_latents[:, k] += 1.0
    changed_actions = actions.clone()
    changed_actions[:, k] = (actions[:, k] + 1) % model.cfg.action_nvec[0]
    first = k - n_long  # index of frame k among the outputs (short-term frames)
    for lat, act in ((changed_latents, actions), (latents, changed_actions)):
        v2, f2 = model(lat, act, timesteps)
        assert torch.equal(v2[:, :first], velocity[:, :first]) and torch.equal(f2[:, :first], features[:, :first])
        assert not torch.allclose(v2[:, first:], velocity[:, first:])


def test_long_term_frames_travel_through_their_own_projections():
    model = random_model(short_window=3)
    for frames, has_long in ((5, True), (3, False)):
        latents, actions, timesteps = _inputs(model, frames=frames)
        before = model.velocity(latents, actions, timesteps)
        with torch.no_grad():
            model.embed_long.weight.add_(1.0)
            model.blocks[0].attn_long.qkv.bias.add_(1.0)
        after = model.velocity(latents, actions, timesteps)
        assert torch.equal(before, after) != has_long


def test_flex_rope_slope_zero_is_plain_rope_exactly():
    model = random_model()
    latents, actions, timesteps = _inputs(model, frames=6)
    plain = model.velocity(latents, actions, timesteps)
    decayed = model.velocity(latents, actions, timesteps, flex_rope_slope=0.5)
    assert not torch.allclose(decayed, plain, atol=1e-4)
    assert torch.equal(model.velocity(latents, actions, timesteps, flex_rope_slope=0.0), plain)
    assert torch.equal(model.velocity(latents, actions, timesteps, flex_rope_slope=[0.0] * model.cfg.heads), plain)
    # per head: only the second head decays
    assert not torch.allclose(model.velocity(latents, actions, timesteps, flex_rope_slope=[0.0, 0.5]), decayed, atol=1e-4)
    with pytest.raises(ValueError, match="one per head"):
        model.velocity(latents, actions, timesteps, flex_rope_slope=[0.1, 0.2, 0.3])


def test_flex_rope_applies_to_cached_generation_too():
    model = random_model(short_window=3)
    latents, actions, _ = _inputs(model, batch=1, frames=4)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sampler, outs = CachedSampler(model), []
    for slope in (0.0, 1.0):
        settings = SamplingSettings(flex_rope_slope=slope)
        state = sampler.new_cache(1)
        sampler.prefill(state, latents, actions, settings)
        outs.append(sampler.generate(state, torch.tensor([2]), settings, noise=noise).latents)
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_training_loss_is_reproducible_from_the_generator():
    model = random_model(short_window=3, context_noise=0.1)
    latents, actions, _ = _inputs(model, frames=6)
    rewards = torch.randn(2, 6)
    terminated = torch.rand(2, 6) < 0.3

    def loss(seed):
        return model.training_loss(latents, actions, rewards, terminated, torch.Generator().manual_seed(seed))

    a, b, c = loss(0), loss(0), loss(1)
    assert set(a) == {"loss", "flow", "reward", "termination"}
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["flow"], c["flow"])
    a["loss"].backward()
    assert model.embed_long.weight.grad.abs().sum() > 0  # long-term frames feed the loss
    assert model.heads.reward[-1].weight.grad.abs().sum() > 0


def test_the_detail_weighted_loss_reweights_the_same_draws():
    """Detail weighting changes what an error costs, not the noise, flow times or heads' terms."""
    plain = random_model(short_window=3)
    weighted = random_model(short_window=3, detail_loss_weight=3.0)
    weighted.load_state_dict(plain.state_dict())
    latents, actions, _ = _inputs(plain, frames=6)
    rewards, terminated = torch.randn(2, 6), torch.zeros(2, 6, dtype=torch.bool)
    a = plain.training_loss(latents, actions, rewards, terminated, torch.Generator().manual_seed(0))
    b = weighted.training_loss(latents, actions, rewards, terminated, torch.Generator().manual_seed(0))
    assert torch.equal(a["reward"], b["reward"]) and torch.equal(a["termination"], b["termination"])
    assert not torch.isclose(a["flow"], b["flow"])
    b["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in weighted.blocks.parameters())
    with pytest.raises(ValueError, match="detail_loss_weight"):
        FARConfig(detail_loss_weight=-1.0)


def test_training_loss_ignores_clean_and_long_frames_in_the_flow_term():
    model = random_model(short_window=3, clean_context_prob=1.0, action_dropout=0.0)
    latents, actions, _ = _inputs(model, frames=5)
    out = model.training_loss(latents, actions, torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool))
    assert out["flow"] == 0.0  # every frame is context: nothing to denoise


def test_multi_discrete_actions_and_null_rows():
    model = random_model(action_nvec=(3, 2))
    latents, _, timesteps = _inputs(model, frames=3)
    actions = torch.tensor([[[3, 2], [0, 1], [2, 0]], [[3, 2], [1, 1], [0, 0]]])  # first frame: null
    velocity = model.velocity(latents, actions, timesteps)
    assert velocity.shape == (2, 3, 4, 8, 8)
    with pytest.raises(ValueError):
        model.velocity(latents, actions[..., 0], timesteps)


def test_timestep_embedding_separates_flow_times():
    emb = timestep_embedding(torch.tensor([[0.0, 0.5, 1.0]]), 64)
    assert emb.shape == (1, 3, 64)
    assert torch.equal(emb[0, 0, :32], torch.ones(32)) and torch.equal(emb[0, 0, 32:], torch.zeros(32))
    assert (emb[0, 1] - emb[0, 2]).abs().max() > 0.5


def test_flow_times_and_guidance():
    assert flow_times(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = flow_times(3, time_shift=0.25)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and bool((shifted.diff() < 0).all())
    # k < 1 spends the steps near the clean end: the last jump is shorter than the even grid's.
    assert shifted[-2] < flow_times(3)[-2] and flow_times(3, time_shift=4.0)[-2] > flow_times(3)[-2]
    v_c, v_u = torch.tensor([2.0]), torch.tensor([1.0])
    assert guide(v_c, v_u, 1.0) == v_c and guide(v_c, v_u, 0.0) == v_u and guide(v_c, v_u, 3.0) == 4.0


def test_euler_sampler_is_exact_on_a_straight_flow():
    x0 = torch.randn(3, 4)
    noise = torch.randn(3, 4)
    calls = []

    def velocity(x, s):
        calls.append(x.shape[0])
        half = x.shape[0] // 2 if x.shape[0] == 6 else 0
        v = (x - x0.repeat(x.shape[0] // 3, 1)) / s  # the exact velocity towards x0
        if half:
            v[half:] = 0.0  # an unconditional branch that never moves
        return v

    assert torch.allclose(sample_euler(velocity, noise, 3, 1.0), x0, atol=1e-5)
    assert calls == [3, 3, 3]
    calls.clear()
    # With guidance 2 the conditional velocity counts double: x ends at 2 x0 - noise.
    assert torch.allclose(sample_euler(velocity, noise, 1, 2.0), 2 * x0 - noise, atol=1e-5)
    assert calls == [6]
    calls.clear()
    # Guidance on the first of two steps only: the second runs the conditional rows alone and,
    # the flow being straight, lands from wherever the first step left x onto x0.
    assert torch.allclose(sample_euler(velocity, noise, 2, 2.0, guided_steps=1), x0, atol=1e-5)
    assert calls == [6, 3]


def test_the_warm_start_path_passes_where_sampling_starts_and_ends_on_the_frame():
    g = torch.Generator().manual_seed(0)
    eps, x0, prev = (torch.randn(2, 3, 4, 8, 8, generator=g) for _ in range(3))
    start = torch.tensor([[1.0, 0.6, 0.8], [1.0, 0.3, 0.9]])
    source = warm_start_source(eps, x0, prev, start)
    assert torch.equal(source[:, 0], eps[:, 0])  # S = 1: the plain path from noise
    s = start[..., None, None, None]
    # At s = S the training path is the sampler's start: (1 - S) * the frame before + S * noise.
    assert torch.allclose((1 - s) * x0 + s * source, (1 - s) * prev + s * eps, atol=1e-5)
    # Euler steps along the path's velocity, from that start at start_time S, land on the frame.
    for row, col in [(0, 1), (1, 1), (1, 2)]:
        S = float(start[row, col])
        velocity = (source - x0)[row, col]
        landed = sample_euler(lambda x, _: velocity, (1 - S) * prev[row, col] + S * eps[row, col], 3, 1.0, start_time=S)
        assert torch.allclose(landed, x0[row, col], atol=1e-5)


def test_warm_start_training_draws_flow_times_below_the_start_for_frames_after_the_first():
    s = _training_flow_times(random_far_model(warm_start_time=0.5, clean_context_prob=0.0, short_window=8))
    assert float(s[:, 1:].max()) <= 0.5 and float(s[:, 0].max()) > 0.5  # the first frame has no frame before it


@pytest.mark.parametrize("mark", [False, True])
def test_frames_shown_as_the_models_own_are_marked_if_it_is_told(mark):
    model = random_far_model(mark_generated=mark, clean_context_prob=0.5, short_window=8)
    times = _training_flow_times(model, own_frames=(5,))
    clean = times < 0
    assert clean[:, 5].any() and clean[:, 4].any()
    assert (times[clean[:, 5], 5] == (GENERATED if mark else CONTEXT)).all()
    assert (times[clean[:, 4], 4] == CONTEXT).all()  # given as it is


def test_weights_without_the_generated_marker_load_with_it_as_context():
    old = random_far_model()
    told = FARModel(FARConfig(**{**old.cfg.to_dict(), "mark_generated": True})).eval()
    told.load_state_dict(old.state_dict())
    kinds = told.conditioner.kind.weight
    assert kinds.shape[0] == 4 and torch.equal(kinds[3], kinds[1])
    latents, actions, timesteps = _inputs(old)
    marked = timesteps.clone()
    marked[:, 0] = GENERATED
    assert torch.allclose(told(latents, actions, marked)[0], old(latents, actions, timesteps)[0], atol=1e-6)


def test_a_change_model_adds_what_it_generates_to_the_last_context_frame():
    plain = random_far_model()
    change = FARModel(FARConfig(**{**plain.cfg.to_dict(), "change_scale": 0.5})).eval()
    change.load_state_dict(plain.state_dict())
    latents, actions, _ = _inputs(plain, batch=2, frames=3)
    settings = SamplingSettings(steps=2)
    outputs = []
    for model in (plain, change):
        sampler = CachedSampler(model)
        cache = sampler.new_cache(2)
        sampler.prefill(cache, latents, actions, settings)
        outputs.append(sampler.generate(cache, actions[:, -1], settings, generator=torch.Generator().manual_seed(3)).latents)
    assert torch.allclose(outputs[1], latents[:, -1] + 0.5 * outputs[0], atol=1e-5)


def test_head_losses_weight_frames():
    reward = torch.tensor([[1.0, 3.0]])
    logit = torch.tensor([[0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0]])
    terminated = torch.tensor([[True, False]])
    r, t = head_losses(reward, logit, target, terminated, torch.tensor([[1.0, 0.0]]))
    assert r == 1.0 and torch.isclose(t, torch.log(torch.tensor(2.0)))
    r, _ = head_losses(reward, logit, target, terminated, torch.tensor([[1.0, 1.0]]))
    assert r == 5.0


@pytest.mark.parametrize(
    "prediction, warm_start_time, change_scale, train_steps",
    [("velocity", 1.0, 0.0, 800), ("clean", 1.0, 0.0, 800), ("velocity", 0.6, 0.0, 800), ("velocity", 1.0, 1.0, 1600)],
)
def test_tiny_model_overfits_a_clip_and_its_cached_rollout_reproduces_it(
    prediction, warm_start_time, change_scale, train_steps, one_thread
):
    # One thread: on tensors this small a second thread costs more in synchronization than it
    # brings, many times more when another process holds the other core. With a warm start the
    # rollout starts each frame from the one before and must still move it as the actions say;
    # with change prediction it adds each generated change to the frame before (the changes of
    # this clip, rolled patterns minus themselves, take the model twice the steps to learn).
    torch.manual_seed(0)
    cfg = FARConfig(
        latent_channels=4, depth=2, width=64, heads=2, patch_size=2, short_window=4, max_long_frames=8,
        clean_context_prob=0.5, action_dropout=0.0, prediction=prediction, warm_start_time=warm_start_time,
        change_scale=change_scale,
    )
    model = FARModel(cfg)
    g = torch.Generator().manual_seed(0)
    frames = 6
    # A smooth, action-driven clip: each action shifts a pattern by a different amount.
    base = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    actions = torch.tensor([[6, 1, 2, 1, 3, 2]])  # the first frame has no incoming action: null
    clip = [base]
    for a in actions[0, 1:]:
        clip.append(torch.roll(clip[-1], shifts=int(a), dims=-1))
    latents = torch.stack(clip, dim=1)
    rewards = (actions == 2).float()
    terminated = torch.zeros(1, frames, dtype=torch.bool)
    terminated[0, -1] = True

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    batch = 8
    for step in range(train_steps):
        # Prefixes of every length, so training sees each layout the rollout meets.
        length = 2 + step % (frames - 1)
        out = model.training_loss(
            latents[:, :length].expand(batch, -1, -1, -1, -1),
            actions[:, :length].expand(batch, -1),
            rewards[:, :length].expand(batch, -1),
            terminated[:, :length].expand(batch, -1),
            g,
        )
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()

    model.eval()
    sampler, settings = CachedSampler(model), SamplingSettings(steps=4, start_time=warm_start_time)
    state = sampler.new_cache(1)
    sampler.prefill(state, latents[:, :2], actions[:, :2], settings)
    noise = torch.Generator().manual_seed(1)
    generated, predicted = [], []
    for t in range(2, frames):
        o = sampler.generate(state, actions[:, t], settings, generator=noise)
        generated.append(o.latents)
        predicted.append(o.reward)
    generated = torch.stack(generated, dim=1)
    error = (generated - latents[:, 2:]).pow(2).mean() / latents.var()
    assert error < 0.05, f"rollout MSE {error:.4f} of the latent variance"
    assert (torch.cat(predicted) - rewards[0, 2:]).abs().max() < 0.3


def _training_flow_times(model: FARModel, own_frames: tuple[int, ...] = ()) -> torch.Tensor:
    """The flow times (64, 8) that one training loss on 64 clips of 8 frames gives the model,
    with the frames ``own_frames`` shown as context the model made (other numbers than the truth)."""
    seen = []
    forward = model.forward

    def spy(latents, actions, timesteps, context_levels=None):
        seen.append(timesteps.detach().clone())
        return forward(latents, actions, timesteps, context_levels)

    model.forward = spy
    latents = torch.randn(64, 8, 4, 8, 8)
    actions = torch.zeros(64, 8, dtype=torch.long)
    shown = latents.clone()
    shown[:, list(own_frames)] += 1.0
    out = model.training_loss(
        latents, actions, torch.zeros(64, 8), torch.zeros(64, 8, dtype=torch.bool), torch.Generator().manual_seed(0),
        context_latents=shown if own_frames else None,
    )  # fmt: skip
    assert torch.isfinite(out["loss"])
    return seen[0]


@pytest.mark.parametrize("mean", [0.0, 2.0])
def test_flow_time_mean_shifts_the_training_flow_times(mean):
    s = _training_flow_times(random_far_model(flow_time_mean=mean, clean_context_prob=0.0, short_window=8)).flatten()
    logits = torch.log(s / (1 - s))  # logit-normal(mean, 1): back to N(mean, 1)
    assert abs(float(logits.mean()) - mean) < 0.15 and abs(float(logits.std()) - 1.0) < 0.1
