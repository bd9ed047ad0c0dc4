"""Tests for dancegen.core.attention: cross-frame / RCA processors on a tiny diffusers UNet, temporal attention."""

import math

import pytest
import torch

from dancegen.core.attention import (
    FRAME_ATTN_MODES,
    FrameAttnProcessor,
    TemporalAttention,
    frame_kv_index,
    rca_kv_indices,
    set_default_attention,
    set_frame_attention,
)
from dancegen.core.context import FrameContext, FrameContextHolder
from dancegen.core.stsa import STSABlock

diffusers = pytest.importorskip("diffusers")
from diffusers.models.attention_processor import Attention, AttnProcessor2_0  # noqa: E402

F_ = 3  # frames per clip (deliberately not 16)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    model.eval()
    return model


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    B = 2
    sample = torch.randn(B * F_, 4, 8, 8, generator=g)
    emb = torch.randn(B * F_, 7, 32, generator=g)
    return sample, emb


def _run(unet, sample, emb, holder=None, frames=F_):
    with torch.no_grad():
        if holder is None:
            return unet(sample, 10, encoder_hidden_states=emb).sample
        with holder.use(FrameContext(num_frames=frames)):
            return unet(sample, 10, encoder_hidden_states=emb).sample


def test_kv_index_tables():
    assert rca_kv_indices(4) == [(0, 1), (0, 2), (1, 3), (2, 3)]
    assert rca_kv_indices(1) == [(0, 0)]
    k, v = frame_kv_index("rca", 4, value_frames="prev_self")
    assert k.tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]] and v.tolist() == [[0, 0], [0, 1], [1, 2], [2, 3]]
    k, v = frame_kv_index("rca", 3, include_self=True)
    assert k.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]] and torch.equal(k, v)
    assert frame_kv_index("sparse_causal", 4)[0].tolist() == [[0, 0], [0, 0], [0, 1], [0, 2]]
    assert frame_kv_index("middle", 5)[0].flatten().tolist() == [2] * 5
    assert frame_kv_index("previous", 3)[0].flatten().tolist() == [0, 0, 1]
    assert frame_kv_index("self", 3) is None and frame_kv_index("all", 3) is None
    with pytest.raises(ValueError):
        frame_kv_index("next", 3)
    with pytest.raises(ValueError):
        FrameAttnProcessor(3, "rca", value_frames="self_next")


def test_self_mode_reproduces_default_and_swap_back(unet, inputs):
    sample, emb = inputs
    set_default_attention(unet)
    base = _run(unet, sample, emb)
    holder = FrameContextHolder()
    prev = set_frame_attention(unet, holder, "self")
    procs = unet.attn_processors
    assert len(prev) == len(procs) == 8
    assert sum(isinstance(p, FrameAttnProcessor) for p in procs.values()) == 4
    assert all(isinstance(p, FrameAttnProcessor) == n.endswith("attn1.processor") for n, p in procs.items())
    assert torch.equal(_run(unet, sample, emb, holder), base)
    set_frame_attention(unet, holder, "rca")
    rca = _run(unet, sample, emb, holder)
    assert (rca - base).abs().max() > 1e-4
    unet.set_attn_processor(dict(prev))  # the returned dict restores the earlier processors
    assert torch.equal(_run(unet, sample, emb), base)
    set_frame_attention(unet, holder, "first")
    set_default_attention(unet)
    assert torch.equal(_run(unet, sample, emb), base)


def test_first_mode_frame0_bit_identical(unet, inputs):
    sample, emb = inputs
    set_default_attention(unet)
    base = _run(unet, sample, emb)
    holder = FrameContextHolder()
    set_frame_attention(unet, holder, "first")
    out = _run(unet, sample, emb, holder)
    first = torch.arange(0, sample.shape[0], F_)
    assert torch.equal(out[first], base[first])
    others = torch.tensor([i for i in range(sample.shape[0]) if i % F_])
    assert (out[others] - base[others]).abs().max() > 1e-4
    set_default_attention(unet)


@pytest.mark.parametrize("mode", [m for m in FRAME_ATTN_MODES if m != "self"])
def test_identical_frames_give_identical_outputs(unet, inputs, mode):
    sample, emb = inputs
    clip = sample[:1].expand(F_, -1, -1, -1)
    same_emb = emb[:1].expand(F_, -1, -1)
    set_default_attention(unet)
    base = _run(unet, clip, same_emb)
    holder = FrameContextHolder()
    set_frame_attention(unet, holder, mode)
    out = _run(unet, clip, same_emb, holder)
    set_default_attention(unet)
    for f in range(1, F_):
        torch.testing.assert_close(out[f], out[0], rtol=0, atol=1e-5)
    # K/V made of copies of the frame's own tokens: same softmax as per-frame self-attention
    torch.testing.assert_close(out, base, rtol=1e-4, atol=1e-5)


def test_missing_context_and_bad_batch(unet, inputs):
    sample, emb = inputs
    holder = FrameContextHolder()
    set_frame_attention(unet, holder, "first")
    with pytest.raises(RuntimeError, match="FrameContext"):
        _run(unet, sample, emb)
    with pytest.raises(ValueError, match="multiple of num_frames"):
        _run(unet, sample, emb, holder, frames=4)
    set_default_attention(unet)


def _attn_module(C=16, heads=2, seed=0, **kw):
    torch.manual_seed(seed)
    return Attention(query_dim=C, heads=heads, dim_head=C // heads, **kw)


def _reference(attn, z, kv_k, kv_v):
    """Hand-written attention: z (F, N, C); kv_k/kv_v[f] = list of frames whose tokens form K / V of frame f."""
    heads, d = attn.heads, z.shape[-1] // attn.heads
    outs = []
    for f in range(z.shape[0]):
        q = attn.to_q(z[f])
        k = attn.to_k(torch.cat([z[j] for j in kv_k[f]]))
        v = attn.to_v(torch.cat([z[j] for j in kv_v[f]]))
        heads_out = []
        for hd in range(heads):
            sl = slice(hd * d, (hd + 1) * d)
            w = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
            heads_out.append(w @ v[:, sl])
        outs.append(attn.to_out[0](torch.cat(heads_out, -1)))
    return torch.stack(outs)


@pytest.mark.parametrize("mode, kw, kv_k, kv_v", [
    ("rca", {}, [[0, 1], [0, 2], [1, 2]], [[0, 1], [0, 2], [1, 2]]),
    ("rca", {"value_frames": "prev_self"}, [[0, 1], [0, 2], [1, 2]], [[0, 0], [0, 1], [1, 2]]),
    ("rca", {"include_self": True}, [[0, 0, 1], [0, 1, 2], [1, 2, 2]], [[0, 0, 1], [0, 1, 2], [1, 2, 2]]),
    ("sparse_causal", {}, [[0, 0], [0, 0], [0, 1]], [[0, 0], [0, 0], [0, 1]]),
    ("first", {}, [[0], [0], [0]], [[0], [0], [0]]),
    ("middle", {}, [[1], [1], [1]], [[1], [1], [1]]),
    ("previous", {}, [[0], [0], [1]], [[0], [0], [1]]),
    ("all", {}, [[0, 1, 2]] * 3, [[0, 1, 2]] * 3),
    ("self", {}, [[0], [1], [2]], [[0], [1], [2]]),
])
def test_modes_match_hand_written_reference(mode, kw, kv_k, kv_v):
    attn = _attn_module()
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2 * 3, 10, 16, generator=g)  # 2 clips x 3 frames
    proc = FrameAttnProcessor(3, mode, **kw)
    with torch.no_grad():
        out = proc(attn, z)
        ref = torch.cat([_reference(attn, z[c * 3:(c + 1) * 3], kv_k, kv_v) for c in range(2)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_four_d_input_group_norm_residual_like_default():
    """The 4-D / group_norm / residual / rescale path (VAE-style attention) matches AttnProcessor2_0 exactly."""
    attn = _attn_module(C=32, heads=1, norm_num_groups=8, residual_connection=True, rescale_output_factor=2.0)
    x = torch.randn(6, 32, 4, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = AttnProcessor2_0()(attn, x)
        assert torch.equal(FrameAttnProcessor(3, "self")(attn, x), base)
        out = FrameAttnProcessor(3, "first")(attn, x)
    assert out.shape == x.shape
    assert torch.equal(out[::3], base[::3]) and (out[1] - base[1]).abs().max() > 1e-4


def test_cross_attention_call_is_unchanged():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    x, ctx = torch.randn(6, 10, 16), torch.randn(6, 5, 8)
    with torch.no_grad():
        assert torch.equal(FrameAttnProcessor(3, "rca")(attn, x, ctx), AttnProcessor2_0()(attn, x, ctx))


def test_detach_kv_blocks_gradient_through_borrowed_frames():
    attn = _attn_module()
    z = torch.randn(3, 10, 16, requires_grad=True)
    FrameAttnProcessor(3, "first", detach_kv=True)(attn, z)[1:].sum().backward()
    assert z.grad[0].abs().sum() == 0 and z.grad[1].abs().sum() > 0
    z.grad = None
    FrameAttnProcessor(3, "first")(attn, z)[1:].sum().backward()
    assert z.grad[0].abs().sum() > 0


def test_temporal_attention_identity_gradients_and_equals_stsa_over_time():
    torch.manual_seed(0)
    T, N, C = 4, 6, 16
    ta = TemporalAttention(C, 2)
    x = torch.randn(2 * T, N, C, requires_grad=True)
    y = ta(x, T)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert ta.to_out.weight.grad.abs().sum() > 0
    # per-pixel attention over frames == STSA with a (T, 1, 1) subspace, no shift, same weights
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ta.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    blk = STSABlock(C, 2, subspace_size=(T, 1, 1), shift=False)
    blk.load_state_dict({"pos_emb.proj.weight": ta.pos_emb.proj.weight, "pos_emb.proj.bias": ta.pos_emb.proj.bias,
                         "norm1.weight": ta.norm.weight, "norm1.bias": ta.norm.bias,
                         **{f"attn1.{k}": v for k, v in ta.state_dict().items() if k.startswith("to_")}})
    with torch.no_grad():
        out = ta(x, FrameContext(num_frames=T), 2, 3)
        torch.testing.assert_close(out, blk(x, T, 2, 3), rtol=1e-5, atol=1e-5)
        # frames of different clips never mix
        torch.testing.assert_close(ta(x[T:], T), out[T:], rtol=1e-5, atol=1e-6)
        # frame order matters through the positional embedding
        perm = torch.tensor([1, 0, 2, 3])
        assert (ta(x[:T][perm], T)[perm] - out[:T]).abs().max() > 1e-4
