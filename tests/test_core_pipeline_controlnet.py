"""DisCo ControlNet glue: per-frame residuals equal diffusers' own 2D MultiControlNet path; latent ControlNet I/O."""

from __future__ import annotations

import copy

import pytest
import torch

from dancegen.core.controlnet import LatentControlNetModel
from dancegen.core.unet3d import TINY_UNET_CONFIG, VideoUNet
from dancegen.methods.dance_your_latents.model import DisCoControlNets

B, F, H = 2, 3, 16


def _unet2d():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**TINY_UNET_CONFIG).eval()


def _controlnets(unet2d):
    cn = DisCoControlNets.from_unet(unet2d, pose_embedding_channels=(16, 32)).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # zero convs start at 0: give them weights so the residuals are non-trivial
        for net in (cn.pose, cn.background):
            for name, p in net.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding")):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return cn


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, 4, F, H, H, generator=g), torch.randn(B, 5, 32, generator=g),
            torch.rand(B, 3, F, 2 * H, 2 * H, generator=g), torch.randn(B, 4, H, H, generator=g))


def test_background_controlnet_embedding_is_disco_conv_in():
    unet2d = _unet2d()
    bg = LatentControlNetModel.from_unet(unet2d)
    emb = bg.controlnet_cond_embedding
    assert list(emb.children()) == [emb.conv_in] and emb.conv_in.in_channels == 4
    assert torch.equal(emb.conv_in.weight, unet2d.conv_in.weight)  # DisCo: init from the UNet's conv_in
    assert bg.config.conditioning_channels == 4


def test_residuals_equal_diffusers_multicontrolnet_per_frame():
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    cn = _controlnets(_unet2d())
    x, ehs, pose, bg = _inputs()
    with torch.no_grad():
        res = cn(x, 7, ehs, pose, bg, pose_scale=0.8, background_scale=0.5)
        chunked = cn(x, 7, ehs, pose, bg, pose_scale=0.8, background_scale=0.5, frame_chunk=2)
        multi = MultiControlNetModel([cn.pose, cn.background])
        err = 0.0
        for b in range(B):
            for f in range(F):
                conds = [pose[b:b + 1, :, f], bg[b:b + 1]]
                down, mid = multi(x[b:b + 1, :, f], torch.tensor([7]), ehs[b:b + 1], conds, [0.8, 0.5],
                                  return_dict=False)
                i = b * F + f
                err = max(err, *((r[i] - d[0]).abs().max().item() for r, d in zip(res.down, down, strict=True)),
                          (res.mid[i] - mid[0]).abs().max().item())
    assert len(res.down) == 4 and res.down[0].shape == (B * F, 32, H, H)
    assert res.mid.shape == (B * F, 64, H // 2, H // 2)
    assert res.mid.abs().max().item() > 1e-3
    print(f"max |DisCoControlNets - per-frame MultiControlNetModel| = {err:.2e}")
    assert err < 1e-5
    assert max((a - c).abs().max().item() for a, c in zip(res.down, chunked.down, strict=True)) < 1e-5


def test_video_unet_with_residuals_equals_2d_controlnet_path_per_frame():
    unet2d = _unet2d()
    ref = copy.deepcopy(unet2d)
    cn = _controlnets(unet2d)
    video = VideoUNet.from_unet2d(unet2d, temporal="stsa", subspace_size=(2, 2, 2)).eval()
    x, ehs, pose, bg = _inputs()
    with torch.no_grad():
        res = cn(x, 7, ehs, pose, bg)
        y = video(x, 7, ehs, **res.as_kwargs()).sample
        y_plain = video(x, 7, ehs).sample
        for b in range(B):
            for f in range(F):
                xf, e = x[b:b + 1, :, f], ehs[b:b + 1]
                d1, m1 = cn.pose(xf, 7, e, controlnet_cond=pose[b:b + 1, :, f], return_dict=False)
                d2, m2 = cn.background(xf, 7, e, controlnet_cond=bg[b:b + 1], return_dict=False)
                down = [a + c for a, c in zip(d1, d2, strict=True)]
                y2d = ref(xf, 7, e, down_block_additional_residuals=down, mid_block_additional_residual=m1 + m2).sample
                assert (y[b, :, f] - y2d[0]).abs().max().item() < 1e-4
    assert (y - y_plain).abs().max().item() > 1e-3  # the residuals do change the output


def test_scales_and_missing_conditions():
    cn = _controlnets(_unet2d())
    x, ehs, pose, bg = _inputs()
    with torch.no_grad():
        both = cn(x, 7, ehs, pose, bg)
        pose_only = cn(x, 7, ehs, pose, bg, background_scale=0.0)
        pose_only2 = cn(x, 7, ehs, pose, None)
        half = cn(x, 7, ehs, pose, bg, pose_scale=0.5, background_scale=0.5)
    assert cn(x, 7, ehs, None, None) is None
    assert torch.equal(pose_only.mid, pose_only2.mid)
    assert (both.mid - pose_only.mid).abs().max().item() > 1e-4
    assert (half.mid - 0.5 * both.mid).abs().max().item() < 1e-5
    # per-frame background latents (B, 4, F, H, W) equal to the shared one give the same residuals
    with torch.no_grad():
        per_frame = cn(x, 7, ehs, pose, bg.unsqueeze(2).expand(-1, -1, F, -1, -1))
    assert (per_frame.mid - both.mid).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match="does not match"):
        cn(x, 7, ehs, pose[:, :, :2], bg)


def test_latent_controlnet_save_load(tmp_path):
    cn = _controlnets(_unet2d())
    cn.background.save_pretrained(tmp_path / "bg")
    again = LatentControlNetModel.from_pretrained(tmp_path / "bg").eval()
    assert again.config.conditioning_channels == 4
    x, ehs, _, bg = _inputs()
    with torch.no_grad():
        a = cn.background(x[:, :, 0], 7, ehs, controlnet_cond=bg, return_dict=False)[1]
        b = again(x[:, :, 0], 7, ehs, controlnet_cond=bg, return_dict=False)[1]
    assert torch.equal(a, b)
