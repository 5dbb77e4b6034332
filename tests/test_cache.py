"""Cached autoregressive inference against full recomputation, and the cache's bounded size."""

import copy
import dataclasses

import pytest
import torch
from conftest import random_far_model

from far_world.model.far import CONTEXT, GENERATED, FARModel
from far_world.model.inference import CachedSampler
from far_world.model.rope import flex_rope_slopes
from far_world.model.sampler import SamplingSettings, sample_euler

ATOL = 1e-4


def random_model(**overrides) -> FARModel:
    return random_far_model(**{"short_window": 3, **overrides})


def settings(steps=4, guidance=1.0, slope=0.0, scope="all", guided_steps=None):
    return SamplingSettings(
        steps=steps, guidance=guidance, flex_rope_slope=slope, guidance_scope=scope, guided_steps=guided_steps
    )


def reference_rollout(
    model, latents, actions, next_actions, noises, steps, guidance, slope=0.0, scope="all", guided_steps=None
):
    """One world by full recomputation: every Euler step runs the whole sequence uncached.

    latents (T,C,h,w), actions (T,) context; next_actions (N,), noises (N,C,h,w); the
    unconditional row has the null action everywhere (scope "all"), into the new frame only
    ("frame"), or the new frame alone with its action, no context ("history").
    Generated frames are marked GENERATED as context if the model is told its own frames.
    Returns latents (N,C,h,w), rewards (N,), termination probabilities (N,).
    """
    null = int(model.null_action)
    seq, acts = latents[None], actions[None]
    own = GENERATED if model.cfg.mark_generated else CONTEXT
    marks = torch.full((1, len(latents)), CONTEXT)
    frames, rewards, terms = [], [], []
    with torch.no_grad():
        for action, noise in zip(next_actions, noises):
            acts = torch.cat([acts, action.view(1, 1)], dim=1)

            def velocity(x, s):
                rows = x.shape[0]
                if scope == "history" and rows > 1:
                    alone = model.velocity(x[1:, None], acts[:, -1:], torch.full((1, 1), s), flex_rope_slope=slope)
                    return torch.cat([velocity(x[:1], s), alone[:, -1]])
                lat = torch.cat([seq.expand(rows, *seq.shape[1:]), x[:, None]], dim=1)
                act = acts.expand(rows, -1).clone()
                if scope == "all":
                    act[1:] = null
                else:
                    act[1:, -1] = null
                ts = torch.cat([marks, torch.full((1, 1), s)], dim=1).expand(rows, -1)
                return model.velocity(lat, act, ts, flex_rope_slope=slope)[:, -1]

            x = sample_euler(velocity, noise[None], steps, guidance, guided_steps=guided_steps)
            seq = torch.cat([seq, x[:, None]], dim=1)
            marks = torch.cat([marks, torch.full((1, 1), own)], dim=1)
            # The heads read the new frame as clean context one frame before the end of the
            # short window (where the cache's re-encoding sees it): a placeholder frame after it
            # shifts the window, and causality keeps it from changing the new frame's features.
            padded, padded_acts = torch.cat([seq, seq[:, -1:]], dim=1), torch.cat([acts, acts[:, -1:]], dim=1)
            _, features = model(padded, padded_acts, torch.cat([marks, marks[:, -1:]], dim=1), flex_rope_slope=slope)
            reward, logit, _ = model.heads(features[:, -2])
            frames.append(x[0])
            rewards.append(reward[0])
            terms.append(torch.sigmoid(logit[0]))
    return torch.stack(frames), torch.stack(rewards), torch.stack(terms)


def _clip(g, batch, frames, cfg):
    latents = torch.randn(batch, frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    actions = torch.randint(0, cfg.action_nvec[0], (batch, frames), generator=g)
    return latents, actions


@pytest.mark.parametrize(
    "guidance, slope, token_conditioning, prediction, scope, guided_steps",
    [(1.0, 0.0, False, "velocity", "all", None), (2.0, 0.0, False, "velocity", "all", None),
     (1.0, 0.3, False, "velocity", "all", None), (2.0, 0.0, True, "velocity", "all", None),
     (2.0, 0.0, False, "clean", "all", None), (2.0, 0.3, False, "velocity", "frame", None),
     (2.0, 0.0, True, "velocity", "frame", None), (2.0, 0.3, False, "velocity", "frame", 1),
     (2.0, 0.0, False, "velocity", "all", 2), (2.0, 0.0, False, "clean", "history", None),
     (1.5, 0.3, True, "velocity", "history", 1)],
)  # fmt: skip
def test_cached_generation_equals_full_recomputation(guidance, slope, token_conditioning, prediction, scope, guided_steps):
    model = random_model(token_conditioning=token_conditioning, prediction=prediction)
    _assert_cached_equals_reference(model, guidance, slope, scope, guided_steps)


@pytest.mark.parametrize("guidance, scope", [(1.0, "all"), (2.0, "frame"), (2.0, "all")])
def test_a_model_told_its_own_frames_sees_them_marked_as_the_reference_does(guidance, scope):
    model = random_model(mark_generated=True)
    _assert_cached_equals_reference(model, guidance, 0.0, scope, None)
    # The marker is seen: the same weights shown their own frames as given ones generate others.
    told, untold = model, copy.deepcopy(model)
    untold.cfg = dataclasses.replace(untold.cfg, mark_generated=False)
    g = torch.Generator().manual_seed(1)
    context, context_actions = _clip(g, 1, 2, told.cfg)
    noise = torch.randn(3, 1, told.cfg.latent_channels, told.cfg.latent_size, told.cfg.latent_size, generator=g)
    frames = []
    for m in (told, untold):
        sampler, drawn = CachedSampler(m), settings(3, guidance, scope=scope)
        state = sampler.new_cache(1)
        sampler.prefill(state, context, context_actions, drawn)
        frames.append([sampler.generate(state, torch.tensor([1]), drawn, noise=noise[i]).latents for i in range(3)])
    assert (frames[0][0] - frames[1][0]).abs().max() < ATOL  # nothing generated in the context yet
    assert (frames[0][2] - frames[1][2]).abs().max() > 1e-3


def _assert_cached_equals_reference(model, guidance, slope, scope, guided_steps):
    sampler, drawn = CachedSampler(model), settings(3, guidance, slope, scope, guided_steps)
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    context, context_actions = _clip(g, 2, 2, cfg)
    n = 8  # short_window 3: six frames cross into the long-term cache
    actions = torch.randint(0, cfg.action_nvec[0], (2, n), generator=g)
    noises = torch.randn(2, n, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)

    state = sampler.new_cache(2)
    sampler.prefill(state, context, context_actions, drawn)
    outs = [sampler.generate(state, actions[:, i], drawn, noise=noises[:, i]) for i in range(n)]
    assert int(state.long_count.max()) == 2 + n - (cfg.short_window - 1)

    for row in range(2):
        ref = reference_rollout(
            model, context[row], context_actions[row], actions[row], noises[row], 3, guidance, slope, scope, guided_steps
        )
        got = (torch.stack([o.latents[row] for o in outs]), torch.stack([o.reward[row] for o in outs]))
        assert (got[0] - ref[0]).abs().max() < ATOL
        assert (got[1] - ref[1]).abs().max() < ATOL
        assert (torch.stack([o.terminated_prob[row] for o in outs]) - ref[2]).abs().max() < ATOL


@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_rows_with_different_context_lengths_follow_their_own_history(guidance):
    model = random_model()
    cfg = model.cfg
    g = torch.Generator().manual_seed(2)
    context, context_actions = _clip(g, 3, 4, cfg)
    new_context, new_actions = _clip(g, 1, 1, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (3, 8), generator=g)
    noises = torch.randn(3, 8, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)

    sampler, drawn = CachedSampler(model), settings(2, guidance)
    state = sampler.new_cache(3)
    sampler.prefill(state, context, context_actions, drawn)
    outs = [sampler.generate(state, actions[:, i], drawn, noise=noises[:, i]) for i in range(3)]
    # Row 1 restarts from one new frame (the vector env's autoreset) while rows 0 and 2 go on.
    sampler.reset_rows(state, torch.tensor([False, True, False]), new_context, new_actions, drawn)
    assert state.context_length.tolist() == [4 + 3, 1, 4 + 3]
    outs += [sampler.generate(state, actions[:, i], drawn, noise=noises[:, i]) for i in range(3, 8)]
    got = torch.stack([o.latents for o in outs], dim=1)

    for row in (0, 2):
        ref, _, _ = reference_rollout(model, context[row], context_actions[row], actions[row], noises[row], 2, guidance)
        assert (got[row] - ref).abs().max() < ATOL
    ref, _, _ = reference_rollout(model, new_context[0], new_actions[0], actions[1, 3:], noises[1, 3:], 2, guidance)
    assert (got[1, 3:] - ref).abs().max() < ATOL


def test_switching_guidance_mid_rollout_rebuilds_the_unconditional_branch():
    model = random_model()
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    n = 8
    context, context_actions = _clip(g, 1, 3, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (1, n), generator=g)
    noises = torch.randn(1, n, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    schedule = [(1.0, "all"), (1.0, "all"), (2.0, "all"), (2.0, "all"), (1.0, "all"), (2.0, "all"), (2.0, "frame"), (2.0, "all")]

    sampler = CachedSampler(model)
    state = sampler.new_cache(1)
    sampler.prefill(state, context, context_actions, settings(2))
    got = []
    for i, (w, scope) in enumerate(schedule):
        got.append(sampler.generate(state, actions[:, i], settings(2, w, scope=scope), noise=noises[:, i]).latents[0])
        assert state.branches == (2 if w != 1.0 and scope == "all" else 1)  # "frame" keeps no branch of its own

    seq, acts = context[0], context_actions[0]
    for i, (w, scope) in enumerate(schedule):
        ref, _, _ = reference_rollout(model, seq, acts, actions[0, i : i + 1], noises[0, i : i + 1], 2, w, scope=scope)
        assert (got[i] - ref[0]).abs().max() < ATOL
        seq, acts = torch.cat([seq, got[i][None]]), torch.cat([acts, actions[0, i : i + 1]])


def test_cache_stops_growing_beyond_the_long_term_cap():
    model = random_model(max_long_frames=4)
    cfg = model.cfg
    g = torch.Generator().manual_seed(4)
    context, context_actions = _clip(g, 2, 1, cfg)
    sampler = CachedSampler(model)
    state = sampler.new_cache(2)
    sampler.prefill(state, context, context_actions, settings(1))
    sizes, spans = [], []
    for i in range(20):
        out = sampler.generate(state, torch.tensor([i % 6, (i + 1) % 6]), settings(1), generator=g)
        assert torch.isfinite(out.latents).all()
        sizes.append(state.nbytes())
        spans.append(int((state.next_frame - state.base()).max()))
    full = cfg.max_long_frames + cfg.short_window - 1  # frames held once the ring is full
    assert state.slots == cfg.max_long_frames
    assert state.context_length.tolist() == [full, full]
    assert len(set(sizes[full:])) == 1 and sizes[0] < sizes[-1]
    # Temporal positions are re-based: the newest frame sits at most `full` after the oldest held.
    assert max(spans) == full


@pytest.mark.parametrize("guidance, slope", [(1.0, 0.0), (2.0, 0.3)])
def test_once_the_ring_is_full_the_window_no_longer_sees_the_frame_a_new_one_replaced(guidance, slope):
    # A frame leaving the window is encoded and the window re-encoded in one pass; with a full
    # ring, the window must see the ring after the overwrite, as a re-encoding from it would.
    model = random_model(max_long_frames=2)
    cfg = model.cfg
    g = torch.Generator().manual_seed(6)
    context, context_actions = _clip(g, 2, 3, cfg)
    sampler, sampling = CachedSampler(model), settings(2, guidance, slope)
    state = sampler.new_cache(2)
    sampler.prefill(state, context, context_actions, sampling)
    for i in range(6):
        sampler.generate(state, torch.tensor([i % 6, (i + 2) % 6]), sampling, generator=g)
    assert int(state.long_count.min()) > cfg.max_long_frames  # slots were overwritten
    merged = [k.clone() for k in state.short_k] + [v.clone() for v in state.short_v]
    sampler._reencode_short(state, flex_rope_slopes(slope, cfg.heads, state.device))
    for before, after in zip(merged, state.short_k + state.short_v):
        torch.testing.assert_close(before, after, atol=ATOL, rtol=0)


def test_prefill_keeps_only_what_the_cache_holds():
    model = random_model(max_long_frames=2)
    cfg = model.cfg
    g = torch.Generator().manual_seed(5)
    context, context_actions = _clip(g, 1, 9, cfg)
    keep = cfg.max_long_frames + cfg.short_window - 1
    sampler = CachedSampler(model)
    a, b = sampler.new_cache(1), sampler.new_cache(1)
    sampler.prefill(a, context, context_actions, settings())
    sampler.prefill(b, context[:, -keep:], context_actions[:, -keep:], settings())
    noise = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    first = sampler.generate(a, torch.tensor([1]), settings(), noise=noise).latents
    assert torch.equal(first, sampler.generate(b, torch.tensor([1]), settings(), noise=noise).latents)
    assert a.context_length.tolist() == [keep]


def test_observing_a_frame_reads_the_heads_as_generating_it_did():
    model = random_model()
    cfg = model.cfg
    g = torch.Generator().manual_seed(4)
    context, context_actions = _clip(g, 2, 5, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (2, 4), generator=g)
    sampler, drawn = CachedSampler(model), settings(2)
    generating, observing = sampler.new_cache(2), sampler.new_cache(2)
    sampler.prefill(generating, context, context_actions, drawn)
    sampler.prefill(observing, context, context_actions, drawn)
    for i in range(4):  # crosses into the long-term cache (short window 3)
        made = sampler.generate(generating, actions[:, i], drawn)
        seen = sampler.observe(observing, made.latents, actions[:, i], drawn)
        assert (seen.reward - made.reward).abs().max() < ATOL
        assert (seen.terminated_prob - made.terminated_prob).abs().max() < ATOL
    assert observing.context_length.tolist() == generating.context_length.tolist()


def test_load_rows_puts_old_frames_in_the_long_term_slots_and_the_last_ones_in_the_window():
    model = random_model(max_long_frames=4)  # short window 3: two short-term context slots
    cfg = model.cfg
    cache = CachedSampler(model).new_cache(2)
    latents = torch.arange(5.0)[None, :, None, None, None].expand(1, 5, cfg.latent_channels, 8, 8)
    actions = torch.tensor([[[6], [1], [2], [3], [4]]])
    long_actions = cache.load_rows(torch.tensor([1]), latents, actions, torch.zeros(1, 5))
    assert cache.long_frame.tolist() == [[-1, -1, -1], [0, 1, 2]] and cache.long_count.tolist() == [0, 3]
    assert cache.short_frame.tolist() == [[-1, -1], [3, 4]] and cache.next_frame.tolist() == [0, 5]
    assert cache.short_latents[1, :, 0, 0, 0].tolist() == [3.0, 4.0] and cache.short_actions[1, :, 0].tolist() == [3, 4]
    assert long_actions[0, :, 0].tolist() == [6, 1, 2]
    with pytest.raises(ValueError, match="at most"):
        cache.load_rows(torch.tensor([0]), torch.zeros(1, 7, cfg.latent_channels, 8, 8), torch.zeros(1, 7, 1), torch.zeros(1, 7))


def test_a_cache_without_long_term_context_sees_only_its_short_window():
    model = random_model()
    cfg = model.cfg
    sampler, drawn = CachedSampler(model), settings(2)
    g = torch.Generator().manual_seed(6)
    context, context_actions = _clip(g, 1, 5, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (1, 6), generator=g)
    noises = torch.randn(1, 6, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    short = sampler.new_cache(1, long_context=False)
    sampler.prefill(short, context, context_actions, drawn)
    keep = cfg.short_window - 1
    seq, acts = context[0], context_actions[0]
    for i in range(6):
        got = sampler.generate(short, actions[:, i], drawn, noise=noises[:, i]).latents
        # The same frame from a fresh cache holding only the last short_window - 1 frames.
        fresh = sampler.new_cache(1)
        sampler.prefill(fresh, seq[None, -keep:], acts[None, -keep:], drawn)
        assert torch.equal(got, sampler.generate(fresh, actions[:, i], drawn, noise=noises[:, i]).latents)
        seq, acts = torch.cat([seq, got]), torch.cat([acts, actions[0, i : i + 1]])
    assert short.slots == 0 and short.context_length.tolist() == [keep]


@pytest.mark.parametrize("trained_with_context_noise", [False, True])
def test_noised_context_is_shown_the_way_the_model_was_trained_to_read_it(trained_with_context_noise):
    # Without context-noise augmentation a model met noisy earlier frames only as frames being
    # denoised (diffusion forcing): a noised context frame is shown as one, at its flow time.
    model = random_model(context_noise=0.2 if trained_with_context_noise else 0.0)
    cfg, level = model.cfg, 0.3
    g = torch.Generator().manual_seed(4)
    context, context_actions = _clip(g, 1, 2, cfg)  # short window 3: two context frames, nothing long-term
    action = torch.randint(0, cfg.action_nvec[0], (1,), generator=g)
    noise = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    sampler, drawn = CachedSampler(model), SamplingSettings(steps=1, context_noise=level)
    state = sampler.new_cache(1)
    sampler.prefill(state, context, context_actions, drawn, generator=torch.Generator().manual_seed(5))
    noised = state.short_latents.clone()  # the context as the cache holds it, noised once
    assert noised.shape == context.shape and (noised - context).abs().max() > 0.1
    got = sampler.generate(state, action, drawn, noise=noise).latents

    latents = torch.cat([noised, noise[:, None]], dim=1)
    actions = torch.cat([context_actions, action[:, None]], dim=1)
    marker = CONTEXT if trained_with_context_noise else level
    timesteps = torch.tensor([[marker, marker, 1.0]])
    levels = torch.tensor([[level, level, 0.0]])
    with torch.no_grad():
        velocity = model.velocity(latents, actions, timesteps, context_levels=levels)[:, -1]
    assert (got - (noise - velocity)).abs().max() < ATOL


def test_a_warm_start_integrates_from_the_last_frame_noised_to_the_start_time():
    model = random_model()
    cfg, start = model.cfg, 0.6
    g = torch.Generator().manual_seed(6)
    context, context_actions = _clip(g, 1, 2, cfg)
    action = torch.randint(0, cfg.action_nvec[0], (1,), generator=g)
    noise = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    sampler, drawn = CachedSampler(model), SamplingSettings(steps=2, start_time=start)
    state = sampler.new_cache(1)
    sampler.prefill(state, context, context_actions, drawn)
    got = sampler.generate(state, action, drawn, noise=noise).latents

    def velocity(x, s):
        latents = torch.cat([context, x[:, None]], dim=1)
        timesteps = torch.tensor([[CONTEXT, CONTEXT, s]])
        with torch.no_grad():
            return model.velocity(latents, torch.cat([context_actions, action[:, None]], dim=1), timesteps)[:, -1]

    x = (1 - start) * context[:, -1] + start * noise
    for s, s_next in ((0.6, 0.3), (0.3, 0.0)):  # two even steps on [0, 0.6]
        x = x + (s_next - s) * velocity(x, s)
    assert (got - x).abs().max() < ATOL
    cold = CachedSampler(model)
    state = cold.new_cache(1)
    cold.prefill(state, context, context_actions, SamplingSettings(steps=2))
    assert (cold.generate(state, action, SamplingSettings(steps=2), noise=noise).latents - got).abs().max() > 1e-3
