"""RoPE, FlexRoPE bias, patchify and the frame-causal mask: the pure shape helpers."""

import pytest
import torch

from far_world.model.rope import RopeTable, apply_rope, flex_rope_bias, patch_centres, rope_angles, rope_split
from far_world.model.transformer import frame_attention_mask, patchify, unpatchify


@pytest.mark.parametrize("head_dim, split", [(64, (16, 24, 24)), (32, (8, 12, 12)), (128, (32, 48, 48)), (40, (12, 14, 14))])
def test_rope_split_is_even_and_fills_the_head(head_dim, split):
    assert rope_split(head_dim) == split
    assert sum(split) == head_dim and all(n % 2 == 0 for n in split)


def test_rope_split_rejects_odd_quarter():
    with pytest.raises(ValueError):
        rope_split(30)


def test_patch_centres_put_long_tokens_among_short_ones():
    short = patch_centres(8, 2)
    long_ = patch_centres(8, 4)
    assert short.shape == (16, 2) and long_.shape == (4, 2)
    assert long_.tolist() == [[1.5, 1.5], [1.5, 5.5], [5.5, 1.5], [5.5, 5.5]]
    # A 4x4 patch's centre is the mean of the centres of the 2x2 patches it covers.
    assert torch.allclose(short.view(2, 2, 2, 2, 2).mean(dim=(1, 3)).reshape(4, 2), long_)


def _scores(q_pos: torch.Tensor, k_pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Attention logits of one query and one key at 3D positions (frame, row, col)."""
    qa = rope_angles(q_pos[:1].view(1), q_pos[1:].view(1, 2), head_dim, 10000.0)
    ka = rope_angles(k_pos[:1].view(1), k_pos[1:].view(1, 2), head_dim, 10000.0)
    return (apply_rope(q, qa.cos(), qa.sin()) * apply_rope(k, ka.cos(), ka.sin())).sum()


def test_rope_scores_depend_only_on_position_differences():
    g = torch.Generator().manual_seed(0)
    head_dim = 32
    q, k = torch.randn(1, head_dim, generator=g), torch.randn(1, head_dim, generator=g)
    q_pos, k_pos = torch.tensor([5.0, 2.0, 7.0]), torch.tensor([3.0, 6.0, 1.5])
    base = _scores(q_pos, k_pos, q, k, head_dim)
    for shift in ([4.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 2.5], [11.0, 1.0, -1.0]):
        shift = torch.tensor(shift)
        assert torch.allclose(_scores(q_pos + shift, k_pos + shift, q, k, head_dim), base, atol=1e-5)
    # ...and do depend on them, along every axis.
    for moved in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]):
        assert not torch.allclose(_scores(q_pos + torch.tensor(moved), k_pos, q, k, head_dim), base, atol=1e-3)


def test_apply_rope_preserves_norm_and_dtype():
    x = torch.randn(2, 3, 10, 16)
    angles = torch.rand(10, 8) * 6
    y = apply_rope(x, angles.cos(), angles.sin())
    assert y.dtype == x.dtype
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(apply_rope(x, torch.ones(10, 8), torch.zeros(10, 8)), x)


def test_rope_angles_layout_is_frame_major():
    angles = rope_angles(torch.tensor([[0.0, 1.0]]), patch_centres(8, 4), 16, 10000.0)
    assert angles.shape == (1, 8, 8)
    dt = rope_split(16)[0] // 2
    # Tokens of frame 0 have no temporal rotation; those of frame 1 turn by the axis frequencies.
    assert torch.equal(angles[0, :4, :dt], torch.zeros(4, dt))
    assert torch.allclose(angles[0, 4:, 0], torch.ones(4))
    # Spatial angles repeat from frame to frame.
    assert torch.equal(angles[0, :4, dt:], angles[0, 4:, dt:])


def test_rope_table_gives_exactly_the_computed_angles():
    centres = patch_centres(8, 2)
    table = RopeTable(centres, 32, 10000.0)
    # Beyond the first table size too (it grows), and with negative positions of empty slots (read as 0).
    pos = torch.tensor([[0, 3, 70], [5, -4, 1]])
    cos, sin = table.lookup(pos)
    angles = rope_angles(pos.clamp(min=0), centres, 32, 10000.0)
    assert cos.shape == (2, 3 * 16, 16)
    assert torch.equal(cos, angles.cos()) and torch.equal(sin, angles.sin())


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patchify_round_trip(patch):
    x = torch.randn(2, 3, 4, 8, 8)
    tokens = patchify(x, patch)
    assert tokens.shape == (2, 3, (8 // patch) ** 2, 4 * patch * patch)
    assert torch.equal(unpatchify(tokens, patch, 8), x)


def test_patchify_keeps_a_patch_together():
    x = torch.arange(64.0).view(1, 1, 1, 8, 8)
    tokens = patchify(x, 2)
    assert tokens[0, 0, 0].tolist() == [0.0, 1.0, 8.0, 9.0]  # top-left 2x2 patch
    assert tokens[0, 0, 1].tolist() == [2.0, 3.0, 10.0, 11.0]  # its right neighbour


def test_frame_attention_mask_is_block_causal():
    frames = torch.tensor([[0, 0, 1, 1, 2]])
    mask = frame_attention_mask(frames, frames)
    assert mask.shape == (1, 1, 5, 5)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask[0, 0], expected)


def test_frame_attention_mask_reads_positions_and_validity():
    # Keys stored out of order (a ring buffer), one of them empty.
    k_frame = torch.tensor([[2, 0, 1, 7]])
    k_valid = torch.tensor([[True, True, True, False]])
    q_frame = torch.tensor([[1, 3]])
    q_valid = torch.tensor([[True, False]])
    mask = frame_attention_mask(q_frame, k_frame, q_valid, k_valid)[0, 0]
    assert mask[0].tolist() == [False, True, True, False]
    # A padding query still sees the keys before it (never an all-masked row, hence never NaN).
    assert mask[1].tolist() == [True, True, True, False]


def test_flex_rope_bias_is_linear_in_the_frame_gap_per_head():
    q = torch.tensor([[4, 4]])
    k = torch.tensor([[0, 2, 4]])
    bias = flex_rope_bias(q, k, torch.tensor([0.5, 2.0]))
    assert bias.shape == (1, 2, 2, 3)
    assert bias[0, 0, 0].tolist() == [-2.0, -1.0, 0.0]
    assert bias[0, 1, 1].tolist() == [-8.0, -4.0, 0.0]
    assert torch.equal(flex_rope_bias(q + 100, k + 100, torch.tensor([0.5, 2.0])), bias)
