"""Tests for dancegen.core.align: reference frames, align index, subspace align/restore (DYL spec §2.5-2.6)."""

import pytest
import torch

from dancegen.core.align import (
    align_index,
    clip_window,
    reference_index,
    required_reference_frames,
    subspace_align,
    subspace_restore,
)


def test_reference_index_spec_examples():
    # s_f=4: window [0..3] -> 1 (e inclusive)
    assert reference_index(16, 4, 0).tolist() == [1] * 4 + [5] * 4 + [9] * 4 + [13] * 4
    # shifted by 2: [0,1] -> 0, [2..5] -> 3, ..., [14,15] -> 14 (unwrapped contiguous segments)
    assert reference_index(16, 4, 2).tolist() == [0, 0] + [3] * 4 + [7] * 4 + [11] * 4 + [14, 14]
    assert reference_index(16, 8, 0).tolist() == [3] * 8 + [11] * 8
    assert reference_index(16, 8, 4).tolist() == [1] * 4 + [7] * 8 + [13] * 4


def test_reference_index_clipping_and_ragged():
    assert clip_window(3, 4, 2) == (3, 0)
    assert clip_window(4, 4, 2) == (4, 0)
    assert clip_window(5, 4, 2) == (4, 2)
    assert reference_index(3, 4, 2).tolist() == [1, 1, 1]  # T <= s_f: one window, no shift
    # T not a multiple of s_f: last window holds the real frames only
    assert reference_index(6, 4, 0).tolist() == [1, 1, 1, 1, 4, 4]
    assert reference_index(6, 4, 2).tolist() == [0, 0, 3, 3, 3, 3]
    req = required_reference_frames(16, 4)
    assert sorted(req) == [0, 2] and req[2].tolist() == reference_index(16, 4, 2).tolist()
    assert sorted(required_reference_frames(4, 4)) == [0]
    assert sorted(required_reference_frames(16, 4, shift=False)) == [0]


def test_align_index_zero_constant_and_rounding():
    B, F, h, w = 2, 3, 4, 5
    zero = torch.zeros(B, F, 2, h, w)
    assert torch.equal(align_index(zero, h, w), torch.arange(h * w).expand(B, F, -1))
    flow = torch.zeros(1, 1, 2, h, w)
    flow[:, :, 0] = 1.0  # dx = +1
    idx = align_index(flow, h, w).view(h, w)
    xs = torch.arange(w).clamp(max=w - 1)
    assert torch.equal(idx % w, (xs + 1).clamp(max=w - 1).expand(h, w))
    assert torch.equal(idx // w, torch.arange(h).view(h, 1).expand(h, w))
    flow[:, :, 0], flow[:, :, 1] = 0.4, 0.6  # nearest: x stays, y moves down one row
    idx = align_index(flow, h, w).view(h, w)
    assert idx[0, 0] == w and idx[h - 1, 0] == (h - 1) * w  # clamped at the bottom


def test_align_index_downsamples_flow_with_vectors():
    # a constant 8 px flow at 64x64 becomes 1 latent px at 8x8
    flow = torch.zeros(1, 2, 2, 64, 64)
    flow[:, :, 0] = 8.0
    idx = align_index(flow, 8, 8)
    expected = align_index(torch.nn.functional.pad(torch.ones(1, 2, 1, 8, 8), (0, 0, 0, 0, 0, 1)), 8, 8)
    assert torch.equal(idx, expected)


def _perm_flow(perm: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Flow (2, h, w) that sends position p to perm[p]."""
    p = torch.arange(h * w)
    dx = (perm % w - p % w).float().view(h, w)
    dy = (perm // w - p // w).float().view(h, w)
    return torch.stack([dx, dy])


def test_align_restore_identity_for_permutation_flow():
    g = torch.Generator().manual_seed(0)
    B, F, h, w, C = 2, 3, 4, 5, 6
    flows = torch.stack([torch.stack([_perm_flow(torch.randperm(h * w, generator=g), h, w) for _ in range(F)])
                         for _ in range(B)])
    x = torch.randn(B, F, h * w, C, generator=g)
    idx = align_index(flows, h, w)
    xa = subspace_align(x, idx)
    # align is the permutation: xa[idx[p]] = x[p]
    assert torch.equal(torch.gather(xa, 2, idx.unsqueeze(-1).expand_as(x)), x)
    assert not torch.equal(xa, x)
    assert torch.equal(subspace_restore(xa, idx), x)


def test_align_restore_integer_translation_in_bounds():
    B, F, h, w, C = 1, 2, 6, 6, 3
    x = torch.randn(B, F, h * w, C, generator=torch.Generator().manual_seed(1))
    flow = torch.zeros(B, F, 2, h, w)
    flow[:, 1, 0], flow[:, 1, 1] = 2.0, -1.0  # frame 1 moves right 2, up 1; frame 0 stays
    idx = align_index(flow, h, w)
    out = subspace_restore(subspace_align(x, idx), idx)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # clamping piles the out-of-bounds sources onto the border column/row; elsewhere the translation is a bijection
    inside = ((xs + 2 < w - 1) & (ys - 1 > 0)).flatten()
    assert torch.equal(out[:, 0], x[:, 0])
    assert torch.equal(out[:, 1, inside], x[:, 1, inside])
    xa = subspace_align(x, idx)
    # the token at (y=3, x=1) lands on (y=2, x=3)
    assert torch.equal(xa[0, 1, 2 * w + 3], x[0, 1, 3 * w + 1])
    # a hole (never reached, e.g. column 0 of frame 1) keeps its own feature
    assert torch.equal(xa[0, 1, 0], x[0, 1, 0])


def test_zero_flow_is_identity():
    x = torch.randn(2, 4, 12, 5)
    idx = align_index(torch.zeros(2, 4, 2, 3, 4), 3, 4)
    assert torch.equal(subspace_align(x, idx), x)
    assert torch.equal(subspace_restore(x, idx), x)


def test_collisions_mean_and_deterministic():
    x = torch.randn(1, 1, 4, 2)
    idx = torch.tensor([[[2, 2, 2, 3]]])  # 0,1,2 collide on 2; 3 stays; 0,1 become holes
    a1, a2 = subspace_align(x, idx), subspace_align(x, idx)
    assert torch.equal(a1, a2)
    torch.testing.assert_close(a1[0, 0, 2], x[0, 0, :3].mean(0))
    assert torch.equal(a1[0, 0, :2], x[0, 0, :2]) and torch.equal(a1[0, 0, 3], x[0, 0, 3])
    r = subspace_restore(a1, idx)
    assert torch.equal(r[0, 0, 0], r[0, 0, 1]) and torch.equal(r[0, 0, 0], a1[0, 0, 2])
    assert torch.equal(subspace_align(x, idx, reduce="amax")[0, 0, 2], x[0, 0, :3].amax(0))


def test_align_restore_backward():
    x = torch.randn(1, 2, 6, 3, requires_grad=True)
    idx = torch.tensor([[[1, 1, 2, 3, 4, 5], [0, 1, 2, 3, 5, 5]]])
    subspace_restore(subspace_align(x, idx), idx).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        subspace_align(torch.zeros(1, 2, 6, 3), torch.zeros(1, 2, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        align_index(torch.zeros(1, 2, 3, 4, 4), 4, 4)
    with pytest.raises(ValueError):
        subspace_align(torch.zeros(1, 2, 6, 3), torch.zeros(1, 2, 6, dtype=torch.long), reduce="median")
