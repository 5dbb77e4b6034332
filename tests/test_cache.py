"""Cached autoregressive inference against full recomputation, and the cache's bounded size."""

import pytest
import torch
from conftest import random_far_model

from far_world.model.far import CONTEXT, FARModel
from far_world.model.sampler import sample_euler

ATOL = 1e-4


def random_model(**overrides) -> FARModel:
    return random_far_model(**{"short_window": 3, **overrides})


def reference_rollout(model, latents, actions, next_actions, noises, steps, guidance):
    """One world by full recomputation: every Euler step runs the whole sequence uncached.

    latents (T,C,h,w), actions (T,) context; next_actions (N,), noises (N,C,h,w).
    Returns latents (N,C,h,w), rewards (N,), termination probabilities (N,).
    """
    null = int(model.null_action)
    seq, acts = latents[None], actions[None]
    frames, rewards, terms = [], [], []
    with torch.no_grad():
        for action, noise in zip(next_actions, noises):
            acts = torch.cat([acts, action.view(1, 1)], dim=1)

            def velocity(x, s):
                rows = x.shape[0]
                lat = torch.cat([seq.expand(rows, *seq.shape[1:]), x[:, None]], dim=1)
                act = acts.expand(rows, -1).clone()
                act[1:] = null  # the unconditional row: the null action everywhere
                ts = torch.full(act.shape, CONTEXT)
                ts[:, -1] = s
                return model.velocity(lat, act, ts)[:, -1]

            x = sample_euler(velocity, noise[None], steps, guidance)
            seq = torch.cat([seq, x[:, None]], dim=1)
            # The heads read the new frame as clean context one frame before the end of the
            # short window (where the cache's re-encoding sees it): a placeholder frame after it
            # shifts the window, and causality keeps it from changing the new frame's features.
            padded, padded_acts = torch.cat([seq, seq[:, -1:]], dim=1), torch.cat([acts, acts[:, -1:]], dim=1)
            _, features = model(padded, padded_acts, torch.full(padded_acts.shape, CONTEXT))
            reward, logit = model.heads(features[:, -2])
            frames.append(x[0])
            rewards.append(reward[0])
            terms.append(torch.sigmoid(logit[0]))
    return torch.stack(frames), torch.stack(rewards), torch.stack(terms)


def _clip(g, batch, frames, cfg):
    latents = torch.randn(batch, frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    actions = torch.randint(0, cfg.action_nvec[0], (batch, frames), generator=g)
    return latents, actions


@pytest.mark.parametrize(
    "guidance, slope, token_conditioning", [(1.0, 0.0, False), (2.0, 0.0, False), (1.0, 0.3, False), (2.0, 0.0, True)]
)
def test_cached_generation_equals_full_recomputation(guidance, slope, token_conditioning):
    model = random_model(token_conditioning=token_conditioning)
    model.flex_rope_slope = slope
    cfg = model.cfg
    g = torch.Generator().manual_seed(1)
    context, context_actions = _clip(g, 2, 2, cfg)
    n = 8  # short_window 3: six frames cross into the long-term cache
    actions = torch.randint(0, cfg.action_nvec[0], (2, n), generator=g)
    noises = torch.randn(2, n, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)

    state = model.new_state(2)
    model.prefill(state, context, context_actions)
    outs = [model.generate(state, actions[:, i], steps=3, guidance=guidance, noise=noises[:, i]) for i in range(n)]
    assert int(state.long_count.max()) == 2 + n - (cfg.short_window - 1)

    for row in range(2):
        ref = reference_rollout(model, context[row], context_actions[row], actions[row], noises[row], 3, guidance)
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

    state = model.new_state(3)
    model.prefill(state, context, context_actions)
    outs = [model.generate(state, actions[:, i], steps=2, guidance=guidance, noise=noises[:, i]) for i in range(3)]
    # Row 1 restarts from one new frame (the vector env's autoreset) while rows 0 and 2 go on.
    model.reset_rows(state, torch.tensor([False, True, False]), new_context, new_actions)
    assert state.context_length.tolist() == [4 + 3, 1, 4 + 3]
    outs += [model.generate(state, actions[:, i], steps=2, guidance=guidance, noise=noises[:, i]) for i in range(3, 8)]
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
    context, context_actions = _clip(g, 1, 3, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (1, 6), generator=g)
    noises = torch.randn(1, 6, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    guidances = [1.0, 1.0, 2.0, 2.0, 1.0, 2.0]

    state = model.new_state(1)
    model.prefill(state, context, context_actions)
    got = []
    for i, w in enumerate(guidances):
        got.append(model.generate(state, actions[:, i], steps=2, guidance=w, noise=noises[:, i]).latents[0])
        assert state.branches == (1 if w == 1.0 else 2)

    seq, acts = context[0], context_actions[0]
    for i, w in enumerate(guidances):
        ref, _, _ = reference_rollout(model, seq, acts, actions[0, i : i + 1], noises[0, i : i + 1], 2, w)
        assert (got[i] - ref[0]).abs().max() < ATOL
        seq, acts = torch.cat([seq, got[i][None]]), torch.cat([acts, actions[0, i : i + 1]])


def test_cache_stops_growing_beyond_the_long_term_cap():
    model = random_model(max_long_frames=4)
    cfg = model.cfg
    g = torch.Generator().manual_seed(4)
    context, context_actions = _clip(g, 2, 1, cfg)
    state = model.new_state(2)
    model.prefill(state, context, context_actions)
    sizes, spans = [], []
    for i in range(20):
        out = model.generate(state, torch.tensor([i % 6, (i + 1) % 6]), steps=1, generator=g)
        assert torch.isfinite(out.latents).all()
        sizes.append(state.nbytes())
        spans.append(int((state.next_frame - state.base()).max()))
    full = cfg.max_long_frames + cfg.short_window - 1  # frames held once the ring is full
    assert state.slots == cfg.max_long_frames
    assert state.context_length.tolist() == [full, full]
    assert len(set(sizes[full:])) == 1 and sizes[0] < sizes[-1]
    # Temporal positions are re-based: the newest frame sits at most `full` after the oldest held.
    assert max(spans) == full


def test_prefill_keeps_only_what_the_cache_holds():
    model = random_model(max_long_frames=2)
    cfg = model.cfg
    g = torch.Generator().manual_seed(5)
    context, context_actions = _clip(g, 1, 9, cfg)
    keep = cfg.max_long_frames + cfg.short_window - 1
    a, b = model.new_state(1), model.new_state(1)
    model.prefill(a, context, context_actions)
    model.prefill(b, context[:, -keep:], context_actions[:, -keep:])
    noise = torch.randn(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g)
    first = model.generate(a, torch.tensor([1]), noise=noise).latents
    assert torch.equal(first, model.generate(b, torch.tensor([1]), noise=noise).latents)
    assert a.context_length.tolist() == [keep]


def test_observing_a_frame_reads_the_heads_as_generating_it_did():
    model = random_model()
    cfg = model.cfg
    g = torch.Generator().manual_seed(4)
    context, context_actions = _clip(g, 2, 5, cfg)
    actions = torch.randint(0, cfg.action_nvec[0], (2, 4), generator=g)
    generating, observing = model.new_state(2), model.new_state(2)
    model.prefill(generating, context, context_actions)
    model.prefill(observing, context, context_actions)
    for i in range(4):  # crosses into the long-term cache (short window 3)
        made = model.generate(generating, actions[:, i], steps=2)
        seen = model.observe(observing, made.latents, actions[:, i])
        assert (seen.reward - made.reward).abs().max() < ATOL
        assert (seen.terminated_prob - made.terminated_prob).abs().max() < ATOL
    assert observing.context_length.tolist() == generating.context_length.tolist()
