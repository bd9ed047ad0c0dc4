"""Reference CLIP conditioning (sd-image-variations global / DisCo combine_clip_local) with a tiny CLIP tower."""

from __future__ import annotations

import pytest
import torch

from dancegen.core.conditioning import ReferenceEncoder, ReferenceProjection, clip_preprocess, tiny_clip_vision_config


@pytest.fixture(scope="module")
def clip():
    from transformers import CLIPVisionModelWithProjection

    torch.manual_seed(0)
    return CLIPVisionModelWithProjection(tiny_clip_vision_config()).eval()


def _images(b=3, seed=0):
    return torch.rand(b, 3, 40, 48, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_global_mode_is_sd_image_variations_embedding(clip):
    enc = ReferenceEncoder(clip, mode="global")
    imgs = _images()
    ctx = enc(imgs)
    with torch.no_grad():
        ref = clip(pixel_values=clip_preprocess(imgs, 32)).image_embeds
    assert ctx.shape == (3, 1, 32) and enc.num_tokens == 1
    assert torch.allclose(ctx[:, 0], ref, atol=1e-6)
    assert enc.trainable_parameters() == []


def test_local_mode_tokens_and_cls_matches_global_at_init(clip):
    enc = ReferenceEncoder(clip, mode="local")
    imgs = _images()
    ctx = enc(imgs)
    assert ctx.shape == (3, enc.num_tokens, 32) and enc.num_tokens == (32 // 8) ** 2 + 1
    glob = ReferenceEncoder(clip, mode="global")(imgs)
    # post-LN + projection initialised from visual_projection: the CLS token equals image_embeds
    assert torch.allclose(ctx[:, 0], glob[:, 0], atol=1e-5)
    assert not torch.allclose(ctx[:, 1], glob[:, 0], atol=1e-3)
    params = enc.trainable_parameters()
    assert len(params) == 1 and params[0].requires_grad and params[0].shape == (32, 32)
    assert not any(p.requires_grad for p in clip.parameters())  # CLIP tower frozen
    ctx.square().mean().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_drop_ref_and_uncond_modes(clip):
    enc = ReferenceEncoder(clip, mode="local")
    imgs = _images(b=64)
    with torch.no_grad():
        full = enc(imgs)
        dropped = enc(imgs, drop_prob=0.5, generator=torch.Generator().manual_seed(0))
        again = enc(imgs, drop_prob=0.5, generator=torch.Generator().manual_seed(0))
    zero_rows = (dropped.abs().amax(dim=(1, 2)) == 0)
    assert torch.equal(dropped, again)
    assert 10 < int(zero_rows.sum()) < 54
    assert torch.equal(dropped[~zero_rows], full[~zero_rows])
    cond, uncond = enc.cond_uncond(imgs[:2])
    assert torch.count_nonzero(uncond) == 0 and uncond.shape == cond.shape
    enc_img = ReferenceEncoder(clip, mode="local", uncond="zero_image")
    with torch.no_grad():
        _, u2 = enc_img.cond_uncond(imgs[:2])
        expect = enc_img.encode_pixels(torch.zeros(1, 3, 32, 32))
    assert torch.allclose(u2, expect.expand_as(u2), atol=1e-6) and torch.count_nonzero(u2) > 0
    with pytest.raises(ValueError, match="uncond"):
        ReferenceEncoder(clip, uncond="blank")


def test_projection_save_load(tmp_path, clip):
    enc = ReferenceEncoder(clip, mode="local")
    enc.projection.save_pretrained(tmp_path / "ref_proj")
    proj = ReferenceProjection.from_pretrained(tmp_path / "ref_proj")
    enc2 = ReferenceEncoder(clip, mode="local", projection=proj)
    imgs = _images(b=2)
    with torch.no_grad():
        assert torch.equal(enc(imgs), enc2(imgs))


def test_clip_preprocess_ranges():
    x01 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = clip_preprocess(x01, 32, value_range=(0.0, 1.0))
    b = clip_preprocess(x01 * 2 - 1, 32)
    assert torch.allclose(a, b, atol=1e-6)
    assert clip_preprocess(x01, 224, (0.0, 1.0)).shape == (2, 3, 224, 224)
