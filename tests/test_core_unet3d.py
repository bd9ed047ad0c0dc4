"""VideoUNet inflation: identity at init vs 2D UNet per frame, temporal mixing, groups, save/load, SD-1.5 size."""

from __future__ import annotations

import copy

import pytest
import torch

from dancegen.core.context import FrameContext
from dancegen.core.unet3d import SD15_UNET_CONFIG, TINY_UNET_CONFIG, VideoUNet

B, F, H = 2, 4, 16


def _unet2d(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY_UNET_CONFIG).eval()


def _inputs(seed: int = 1, b: int = B, f: int = F):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, f, H, H, generator=g), torch.randn(b, 5, 32, generator=g)


def _per_frame_2d(unet2d, x, t, ehs):
    b, c, f, h, w = x.shape
    xf = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    with torch.no_grad():
        y = unet2d(xf, t, encoder_hidden_states=ehs.repeat_interleave(f, 0)).sample
    return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def _perturb_temporal(model: VideoUNet, std: float = 0.2):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.temporal_blocks.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize("temporal,kw", [("stsa", {"subspace_size": (2, 2, 2)}), ("none", {})])
def test_inflated_unet_equals_2d_unet_per_frame_at_init(temporal, kw):
    unet2d = _unet2d()
    ref = copy.deepcopy(unet2d)
    video = VideoUNet.from_unet2d(unet2d, temporal=temporal, **kw).eval()
    x, ehs = _inputs()
    with torch.no_grad():
        y = video(x, 10, ehs).sample
    y2d = _per_frame_2d(ref, x, 10, ehs)
    assert y.shape == (B, 4, F, H, H)
    assert (y - y2d).abs().max().item() < 1e-5
    assert len(video.temporal_blocks) == (4 if temporal == "stsa" else 0)  # tiny UNet: 1 down + 1 mid + 2 up


def test_temporal_attention_kind_is_identity_at_init():
    pytest.importorskip("dancegen.core.attention")
    unet2d = _unet2d()
    ref = copy.deepcopy(unet2d)
    video = VideoUNet.from_unet2d(unet2d, temporal="temporal").eval()
    x, ehs = _inputs()
    with torch.no_grad():
        assert (video(x, 10, ehs).sample - _per_frame_2d(ref, x, 10, ehs)).abs().max().item() < 1e-5


def test_temporal_blocks_mix_frames_only_inside_a_frame_context():
    video = VideoUNet.from_unet2d(_unet2d(), temporal="stsa", subspace_size=(2, 2, 2)).eval()
    _perturb_temporal(video)
    x, ehs = _inputs(b=1)
    x2 = x.clone()
    x2[:, :, 1] += 1.0  # change frame 1 only
    with torch.no_grad():
        y, y2 = video(x, 10, ehs).sample, video(x2, 10, ehs).sample
        # frame 0 shares a subspace with frame 1 -> it sees the change; per-frame 2D path would not
        assert (y[:, :, 0] - y2[:, :, 0]).abs().max().item() > 1e-4
        # outside a frame context `.unet` is the plain image model: frame 0 is independent of frame 1
        xf, xf2 = (z.permute(0, 2, 1, 3, 4).reshape(F, 4, H, H) for z in (x, x2))
        e = ehs.repeat_interleave(F, 0)
        a, b = video.unet(xf, 10, e).sample, video.unet(xf2, 10, e).sample
        assert (a[0] - b[0]).abs().max().item() == 0.0
        # ... and inside frame_context it equals the video forward
        with video.frame_context(F):
            c = video.unet(xf, 10, e).sample
        assert (c.reshape(1, F, 4, H, H).permute(0, 2, 1, 3, 4) - y).abs().max().item() < 1e-6


def test_timestep_and_context_forms_agree():
    video = VideoUNet.from_unet2d(_unet2d(), temporal="stsa", subspace_size=(2, 2, 2)).eval()
    _perturb_temporal(video)
    x, ehs = _inputs()
    with torch.no_grad():
        y = video(x, 10, ehs).sample
        y_b = video(x, torch.tensor([10, 10]), ehs).sample
        y_bf = video(x, torch.full((B * F,), 10), ehs.repeat_interleave(F, 0)).sample
    assert (y - y_b).abs().max().item() == 0.0
    assert (y - y_bf).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="timestep"):
        video(x, torch.tensor([1, 2, 3]), ehs)


def test_caller_frame_context_extra_is_kept():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, hidden, ctx, height, width):
            seen.append((ctx.num_frames, ctx.extra.get("tag"), height, width))
            return hidden

    video = VideoUNet.from_unet2d(_unet2d(), temporal="stsa", temporal_factory=lambda kind, dim, heads, **kw: Probe())
    x, ehs = _inputs(b=1)
    with torch.no_grad(), video.frame_context(FrameContext(num_frames=F, extra={"tag": "abc"})):
        video(x, 10, ehs)
    assert seen == [(F, "abc", 16, 16), (F, "abc", 8, 8), (F, "abc", 16, 16), (F, "abc", 16, 16)]


def test_parameter_groups_and_trainable_selection():
    video = VideoUNet.from_unet2d(_unet2d(), temporal="stsa", subspace_size=(2, 2, 2))
    groups = video.parameter_groups()
    names = [n for g in groups.values() for n in g]
    assert len(names) == len(set(names)) == len(list(video.named_parameters()))  # disjoint and complete
    assert all(n.startswith("temporal_blocks.") for n in groups["temporal"])
    assert all(".attn1." in n for n in groups["spatial_attn"]) and groups["spatial_attn"]
    counts = video.num_parameters_by_group()
    assert counts["unet"] + counts["spatial_attn"] == sum(p.numel() for p in video.unet.parameters())
    # DYL stage 1: only the new blocks train
    params = video.trainable_parameters(["temporal"])
    assert {id(p) for p in params} == {id(p) for p in groups["temporal"].values()}
    assert not any(p.requires_grad for p in video.unet.parameters())
    # EYM rca_trainable: q_only, by pattern
    qs = video.trainable_parameters(["unet.*attn1.to_q.*"])
    assert len(qs) == 4 and all(p.requires_grad for p in qs)  # one attn1.to_q per transformer
    assert sum(p.requires_grad for p in video.parameters()) == 4
    with pytest.raises(ValueError, match="neither a parameter group"):
        video.trainable_parameters(["temporl"])


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    video = VideoUNet.from_unet2d(_unet2d(), temporal="stsa", subspace_size=(2, 2, 2))
    _perturb_temporal(video, 0.05)
    video.train()
    x, ehs = _inputs(b=1, f=2)

    def grads():
        video.zero_grad()
        video(x, 10, ehs).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in video.named_parameters() if p.grad is not None}

    g0 = grads()
    video.enable_gradient_checkpointing()
    assert all(m.gradient_checkpointing for m in video.temporal_blocks.values())
    assert video.unet.down_blocks[0].gradient_checkpointing
    g1 = grads()
    assert g0.keys() == g1.keys()
    assert max((g0[k] - g1[k]).abs().max().item() for k in g0) < 1e-6


def test_save_load_round_trip_and_2d_keys(tmp_path):
    unet2d = _unet2d()
    sd2d = {k: v.clone() for k, v in unet2d.state_dict().items()}
    video = VideoUNet.from_unet2d(unet2d, temporal="stsa", subspace_size=(2, 2, 2)).eval()
    _perturb_temporal(video)
    # the wrapped UNet keeps the pretrained SD key names exactly
    assert set(video.unet.state_dict()) == set(sd2d)
    video.unet.load_state_dict(sd2d, strict=True)
    x, ehs = _inputs()
    with torch.no_grad():
        y = video(x, 10, ehs).sample
    video.save_pretrained(tmp_path / "vunet")
    again = VideoUNet.from_pretrained(tmp_path / "vunet").eval()
    assert again.config.temporal == "stsa" and list(again.config.temporal_kwargs["subspace_size"]) == [2, 2, 2]
    with torch.no_grad():
        assert (again(x, 10, ehs).sample - y).abs().max().item() == 0.0
    # diffusers' ControlNet can still be initialised from the wrapped UNet
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(video.unet, conditioning_embedding_out_channels=(16, 32))
    w = video.unet.down_blocks[0].attentions[0].proj_in.weight
    assert torch.equal(cn.down_blocks[0].attentions[0].proj_in.weight, w)


def test_spatial_attn_switch_installs_frame_processors():
    attention = pytest.importorskip("dancegen.core.attention")
    video = VideoUNet.from_unet2d(_unet2d(), temporal="none", spatial_attn="first")
    procs = video.unet.attn_processors
    attn1 = [p for n, p in procs.items() if n.endswith("attn1.processor")]
    attn2 = [p for n, p in procs.items() if n.endswith("attn2.processor")]
    assert attn1 and all(isinstance(p, attention.FrameAttnProcessor) for p in attn1)
    assert not any(isinstance(p, attention.FrameAttnProcessor) for p in attn2)
    x, ehs = _inputs(b=1)
    with torch.no_grad():
        y = video(x, 10, ehs).sample
    ref = _per_frame_2d(_unet2d(), x, 10, ehs)
    assert (y[:, :, 0] - ref[:, :, 0]).abs().max().item() < 1e-5  # frame 0 attends to itself under "first"
    assert (y[:, :, 1] - ref[:, :, 1]).abs().max().item() > 1e-4


def test_bad_switches_raise():
    with pytest.raises(ValueError, match="temporal must be"):
        VideoUNet.from_unet2d(_unet2d(), temporal="conv3d")
    with pytest.raises(ValueError, match="spatial_attn must be"):
        VideoUNet.from_unet2d(_unet2d(), spatial_attn="nope")


def test_full_size_sd15_config_inflates_with_16_stsa_blocks():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet2d = UNet2DConditionModel(**SD15_UNET_CONFIG)
        video = VideoUNet.from_unet2d(unet2d, temporal="stsa", subspace_size=(4, 4, 4))
    counts = video.num_parameters_by_group()
    base = counts["unet"] + counts["spatial_attn"]
    print(f"SD-1.5 UNet {base / 1e6:.1f}M params + STSA {counts['temporal'] / 1e6:.1f}M in "
          f"{len(video.temporal_blocks)} blocks")
    assert len(video.temporal_blocks) == 16  # 6 down + 1 mid + 9 up transformers (spec §2.3)
    assert 859e6 < base < 860e6  # the SD-1.x UNet: 859.5M
    dims = sorted({m.block.dim for m in video.temporal_blocks.values()})
    assert dims == [320, 640, 1280]
    assert counts["temporal"] > 0
