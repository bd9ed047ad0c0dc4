"""Tests for dancegen.core.stsa: subspace partition, shifted-window masks, STSA block (DYL spec §2.4, §6)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dancegen.core.align import align_index, reference_index
from dancegen.core.context import FrameContext
from dancegen.core.stsa import (
    STSABlock,
    SubspaceAttention,
    cyclic_shift,
    make_temporal_block,
    merge,
    partition,
    shift_attn_mask,
    window_layout,
)


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_partition_merge_round_trip_and_order():
    x = torch.randn(2, 4, 6, 8, 3)
    s = (2, 3, 4)
    win = partition(x, s)
    assert win.shape == (2 * 2 * 2 * 2, 24, 3)
    assert torch.equal(merge(win, s, (2, 4, 6, 8)), x)
    # window 1 of clip 0 is frames 0-1, rows 0-2, columns 4-7, tokens ordered (t, y, x)
    assert torch.equal(win[1], x[0, 0:2, 0:3, 4:8].reshape(-1, 3))
    assert torch.equal(win[8], x[1, 0:2, 0:3, 0:4].reshape(-1, 3))
    o = (1, 1, 2)
    assert torch.equal(cyclic_shift(cyclic_shift(x, o), tuple(-v for v in o)), x)
    assert torch.equal(cyclic_shift(x, o)[:, 0, 0, 0], x[:, 1, 1, 2])


@pytest.mark.parametrize("s, windows, tokens", [((4, 4, 4), 256, 64), ((4, 2, 2), 1024, 16), ((8, 4, 4), 128, 128)])
def test_window_counts_spec_2_4(s, windows, tokens):
    win, off, padded = window_layout(16, 32, 32, s, shift=True)
    assert win == s and off == tuple(v // 2 for v in s) and padded == (16, 32, 32)
    w = partition(torch.zeros(1, 16, 32, 32, 1), win)
    assert w.shape[:2] == (windows, tokens)


def test_swin_clipping_small_maps():
    # 4x4 mid level with s_h = s_w = 4: spatial window = side, spatial shift 0; 4 subspaces at T=16
    win, off, padded = window_layout(16, 4, 4, (4, 4, 4), shift=True)
    assert win == (4, 4, 4) and off == (2, 0, 0) and padded == (16, 4, 4)
    assert partition(torch.zeros(1, 16, 4, 4, 1), win).shape[0] == 4
    assert window_layout(16, 2, 3, (4, 4, 4), shift=True) == ((4, 2, 3), (2, 0, 0), (16, 2, 3))
    assert window_layout(3, 8, 8, (4, 4, 4), shift=True) == ((3, 4, 4), (0, 2, 2), (3, 8, 8))
    # a side larger than its window but not a multiple is padded
    assert window_layout(6, 5, 8, (4, 4, 4), shift=False) == ((4, 4, 4), (0, 0, 0), (8, 8, 8))


def _full_attention(attn: SubspaceAttention, x: torch.Tensor) -> torch.Tensor:
    """Plain full spatio-temporal attention over all T*h*w tokens of each clip with attn's weights."""
    B, T, h, w, C = x.shape
    t = x.reshape(B, T * h * w, C)
    q, k, v = (p(t).view(B, -1, attn.heads, C // attn.heads).transpose(1, 2) for p in (attn.to_q, attn.to_k, attn.to_v))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T * h * w, C)
    return attn.to_out(o).view(B, T, h, w, C)


@pytest.mark.parametrize("shift", [False, True])
def test_one_subspace_covering_everything_equals_full_attention(shift):
    torch.manual_seed(0)
    B, T, h, w, C = 2, 4, 4, 6, 16
    attn = SubspaceAttention(C, 4, subspace_size=(T, h, w), shift=shift)
    _randomize(attn)
    x = torch.randn(B, T, h, w, C)
    torch.testing.assert_close(attn(x), _full_attention(attn, x), rtol=1e-5, atol=1e-5)
    small = SubspaceAttention(C, 4, subspace_size=(2, 2, 2), shift=shift)
    small.load_state_dict(attn.state_dict())
    assert (small(x) - _full_attention(attn, x)).abs().max() > 1e-2  # smaller subspaces really restrict attention


def _brute_force_windows(attn: SubspaceAttention, x: torch.Tensor, s, off) -> torch.Tensor:
    """Token-by-token attention where a token sees the tokens of its (shifted) window in unrolled coordinates.

    Shifted windows start at ``off + j*s`` and are clipped at the volume borders (Swin semantics); no roll.
    """
    B, T, h, w, C = x.shape
    heads, d = attn.heads, C // attn.heads
    pos = torch.stack(torch.meshgrid(torch.arange(T), torch.arange(h), torch.arange(w), indexing="ij"), -1)
    pos = pos.reshape(-1, 3)
    win_id = torch.div(pos - torch.tensor(off), torch.tensor(s), rounding_mode="floor")
    tok = x.reshape(B, -1, C)
    q, k, v = (p(tok).view(B, -1, heads, d) for p in (attn.to_q, attn.to_k, attn.to_v))
    out = torch.zeros(B, tok.shape[1], heads, d)
    for i in range(pos.shape[0]):
        keys = (win_id == win_id[i]).all(-1).nonzero()[:, 0]
        score = torch.einsum("bhd,bkhd->bhk", q[:, i], k[:, keys]) / math.sqrt(d)
        out[:, i] = torch.einsum("bhk,bkhd->bhd", score.softmax(-1), v[:, keys])
    return attn.to_out(out.reshape(B, -1, C)).view(B, T, h, w, C)


@pytest.mark.parametrize("shape, s", [((4, 4, 6), (2, 2, 4)), ((3, 5, 5), (2, 2, 2)), ((4, 4, 4), (4, 2, 2)),
                                      ((2, 5, 6), (2, 4, 4))])
@pytest.mark.parametrize("shift", [False, True])
def test_shifted_masked_attention_equals_brute_force(shape, s, shift):
    torch.manual_seed(1)
    C = 8
    attn = SubspaceAttention(C, 2, subspace_size=s, shift=shift)
    _randomize(attn, seed=2)
    x = torch.randn(2, *shape, C)
    win, off, _ = attn.layout(*shape)
    expected = _brute_force_windows(attn, x, win, off)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    if shift and any(off):
        # the mask matters: the same windows without it differ from the brute force
        attn._mask = lambda *a, **k: None  # noqa: SLF001
        assert (attn(x) - expected).abs().max() > 1e-3


def test_shift_attn_mask_matches_swin_regions():
    # Swin's 2-D construction: slices (0,-ws), (-ws,-shift), (-shift,None) on each axis of the rolled map
    H = W = 8
    ws, sh = 4, 2
    img = torch.zeros(1, H, W)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -sh), slice(-sh, None)):
        for wsl in (slice(0, -ws), slice(-ws, -sh), slice(-sh, None)):
            img[:, hs, wsl] = cnt
            cnt += 1
    wins = partition(img.view(1, 1, H, W, 1), (1, ws, ws))[..., 0]
    swin = wins.unsqueeze(1) == wins.unsqueeze(2)
    assert torch.equal(shift_attn_mask(1, H, W, (1, ws, ws), (0, sh, sh)), swin)


def test_stsa_identity_at_init_and_gradients():
    torch.manual_seed(0)
    blk = STSABlock(16, 2, subspace_size=(2, 2, 2), ff=True)
    x = torch.randn(2 * 4, 6 * 6, 16, requires_grad=True)
    y = blk(x, 4, 6, 6)
    assert torch.equal(y, x)
    y.square().sum().backward()
    for name in ("attn1.to_out.weight", "attn2.to_out.weight", "ff.fc2.weight"):
        assert blk.get_parameter(name).grad.abs().sum() > 0, name
    opt = torch.optim.SGD(blk.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    y = blk(x, 4, 6, 6)
    assert not torch.allclose(y, x)
    (y.square().sum()).backward()
    for name in ("attn1.to_q.weight", "attn2.to_k.weight", "pos_emb.proj.weight", "norm1.weight"):
        assert blk.get_parameter(name).grad.abs().sum() > 0, name


def test_stsa_frames_do_not_mix_across_clips_and_pos_emb_matters():
    torch.manual_seed(0)
    blk = STSABlock(16, 2, subspace_size=(2, 2, 2))
    _randomize(blk)
    x = torch.randn(2 * 4, 16, 16)
    y = blk(x, 4, 4, 4)
    torch.testing.assert_close(blk(x[4:], 4, 4, 4), y[4:], rtol=1e-5, atol=1e-5)
    nopos = STSABlock(16, 2, subspace_size=(2, 2, 2), frame_pos_emb=False)
    nopos.load_state_dict({k: v for k, v in blk.state_dict().items() if not k.startswith("pos_emb")})
    assert (nopos(x, 4, 4, 4) - y).abs().max() > 1e-3


def test_stsa_zero_flow_equals_no_align_and_flow_changes_output():
    torch.manual_seed(0)
    B, T, h, w, C = 2, 4, 4, 4, 16
    blk = STSABlock(C, 2, subspace_size=(2, 2, 2))
    _randomize(blk)
    x = torch.randn(B * T, h * w, C)
    plain = blk(x, T, h, w)
    zero = {0: torch.zeros(B, T, 2, 8, 8), 1: torch.zeros(B, T, 2, 8, 8)}  # latent res 8x8, level 4x4
    ctx = FrameContext(num_frames=T, flow_to_ref=zero)
    assert torch.equal(blk(x, ctx, h, w), plain)
    assert set(ctx.flows) == {(h, w, 0), (h, w, 1)}  # per-level cache
    ident = torch.arange(h * w).expand(B, T, -1)
    assert torch.equal(blk(x, T, h, w, align_idx={0: ident, 1: ident}), plain)
    moved = {o: f.clone() for o, f in zero.items()}
    for f in moved.values():
        f[:, 1:, 0] = 2.0  # every frame but 0 moves one latent px (at 4x4) to the right
    assert (blk(x, FrameContext(num_frames=T, flow_to_ref=moved), h, w) - plain).abs().max() > 1e-3
    # classifier-free guidance: flows for B clips serve a batch of 2B clips
    x2 = torch.cat([x, x])
    y2 = blk(x2, FrameContext(num_frames=T, flow_to_ref=moved), h, w)
    torch.testing.assert_close(y2[: B * T], y2[B * T:])
    with pytest.raises(ValueError, match="offset 1"):
        blk(x, FrameContext(num_frames=T, flow_to_ref=zero[0]), h, w)


def test_stsa_mf_aligns_with_each_partition_reference():
    """Each half reads the align index of its own temporal offset (the shifted half: the shifted partition's
    reference frames), so swapping which half gets a non-trivial index changes the result."""
    torch.manual_seed(0)
    B, T, h, w, C = 1, 4, 4, 4, 8
    blk = STSABlock(C, 2, subspace_size=(2, 2, 2))
    _randomize(blk)
    x = torch.randn(B * T, h * w, C)
    ident = torch.arange(h * w).expand(B, T, -1)
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(3)).expand(B, T, -1)
    only_unshifted = blk(x, T, h, w, align_idx={0: perm, 1: ident})
    only_shifted = blk(x, T, h, w, align_idx={0: ident, 1: perm})
    assert (only_unshifted - only_shifted).abs().max() > 1e-3
    assert reference_index(T, 2, 1).tolist() == [0, 1, 1, 3]


def test_flow_is_downsampled_to_the_level():
    flow = torch.zeros(1, 4, 2, 8, 8)
    flow[:, :, 0] = 8.0
    assert torch.equal(align_index(flow, 4, 4) % 4, torch.full((1, 4, 16), 3))


def test_make_temporal_block():
    blk = make_temporal_block("stsa", 16, 2, subspace_size=(2, 2, 2))
    assert isinstance(blk, STSABlock)
    x = torch.randn(4, 9, 16)
    assert torch.equal(blk(x, FrameContext(num_frames=2), 3, 3), x)
    assert torch.equal(make_temporal_block("temporal", 16, 2)(x, FrameContext(num_frames=4), 3, 3), x)
    with pytest.raises(ValueError):
        make_temporal_block("conv", 16, 2)
    with pytest.raises(ValueError):
        blk(torch.randn(5, 9, 16), 2, 3, 3)
