"""Text + pose-ControlNet generation through the core, from folders in the real SD-1.5 / ControlNet layouts.

The test writes a tiny SD-1.5 folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) and a diffusers ControlNet
folder with the real config keys, loads them with the core's loaders, and generates frames with `core.frames`; with
one frame and no frame attention the result equals diffusers' own StableDiffusionControlNetPipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SIZE = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from dancegen.core.tiny import write_tiny_controlnet, write_tiny_sd15

    root = tmp_path_factory.mktemp("sd")
    sd = write_tiny_sd15(root / "sd15", image_size=SIZE)
    cn = write_tiny_controlnet(root / "controlnet-openpose", sd)
    return sd, cn


@pytest.fixture(scope="module")
def parts(folders):
    from dancegen.core.controlnet import ControlNetSet
    from dancegen.core.text import PromptEncoder
    from dancegen.core.weights import load_sd15_components

    sd, cn = folders
    comps = load_sd15_components(sd)
    nets = ControlNetSet.from_pretrained_folders({"pose": cn})
    nets.eval().requires_grad_(False)
    return comps, nets, PromptEncoder(comps.text_encoder, comps.tokenizer)


def pose_maps(num_frames: int, shift: float = 0.0) -> torch.Tensor:
    """``(1, 3, F, SIZE, SIZE)`` rendered OpenPose maps in [0, 1] of a waving dancer."""
    from tests_helpers import dance_sequence

    from dancegen.pose.render import render_control_maps

    seq = dance_sequence(num_frames, shift=(shift, 0.0)).resized(SIZE, SIZE)
    maps = render_control_maps(seq)
    return torch.from_numpy(maps).permute(3, 0, 1, 2)[None].float() / 255.0


def generate(parts, maps, prompt="a dancer in a red shirt", seed=0, steps=2, **kw):
    from dancegen.core.frames import generate_frames

    comps, nets, enc = parts
    emb = enc.encode(prompt, negative_prompt="")
    return generate_frames(comps.unet, comps.vae, comps.scheduler, emb.cond, emb.uncond, num_frames=maps.shape[2],
                           height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=3.0, controlnets=nets,
                           conditions={"pose": maps}, generator=torch.Generator().manual_seed(seed), **kw)


def test_text_and_pose_controlnet_generation_through_the_core(parts):
    maps = pose_maps(2)
    frames = generate(parts, maps)
    assert frames.shape == (2, 3, SIZE, SIZE) and frames.dtype == torch.float32
    assert 0 <= frames.min() and frames.max() <= 1
    assert torch.equal(frames, generate(parts, maps))  # same seed, same output
    # (random tiny networks: these check that each input reaches the model, in latent space, not quality)
    z = generate(parts, maps, output_type="latent")
    assert (z - generate(parts, maps, seed=1, output_type="latent")).abs().mean() > 1.0  # another noise
    assert (z - generate(parts, maps, prompt="a dancer in a blue coat", output_type="latent")).abs().mean() > 1e-2
    assert (z - generate(parts, pose_maps(2, shift=6.0), output_type="latent")).abs().mean() > 1e-4  # another pose


def test_one_frame_equals_the_diffusers_controlnet_pipeline(parts, folders):
    from diffusers import StableDiffusionControlNetPipeline

    comps, nets, enc = parts
    sd, _ = folders
    maps = pose_maps(1)
    latents = torch.randn(1, 4, 1, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(3))
    ours = generate(parts, maps, latents=latents, steps=3)
    pipe = StableDiffusionControlNetPipeline(vae=comps.vae, text_encoder=comps.text_encoder,
                                             tokenizer=comps.tokenizer, unet=comps.unet, controlnet=nets["pose"],
                                             scheduler=comps.scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    emb = enc.encode("a dancer in a red shirt", negative_prompt="")
    ref = pipe(prompt_embeds=emb.cond, negative_prompt_embeds=emb.uncond, image=maps[:, :, 0], height=SIZE,
               width=SIZE, num_inference_steps=3, guidance_scale=3.0, latents=latents[:, :, 0],
               output_type="pt").images
    torch.testing.assert_close(ours, ref.float().cpu(), atol=1e-5, rtol=1e-4)


def test_scale_zero_or_an_empty_window_equals_no_controlnet(parts):
    comps, nets, enc = parts
    maps = pose_maps(2)
    plain = generate(parts, maps, output_type="latent")
    nets.set_spec("pose", scale=0.0)
    try:
        assert (generate(parts, maps, output_type="latent") - plain).abs().mean() > 0.05  # the net mattered
        from dancegen.core.frames import generate_frames

        emb = enc.encode("a dancer in a red shirt", negative_prompt="")
        none = generate_frames(comps.unet, comps.vae, comps.scheduler, emb.cond, emb.uncond, num_frames=2,
                               height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=3.0,
                               generator=torch.Generator().manual_seed(0), output_type="latent")
        assert torch.equal(generate(parts, maps, output_type="latent"), none)
        nets.set_spec("pose", scale=1.0, start=0.5, end=0.5)
        assert torch.equal(generate(parts, maps, output_type="latent"), none)
    finally:
        nets.set_spec("pose", scale=1.0, start=0.0, end=1.0)


def test_cross_frame_attention_through_the_frame_context(parts):
    """Frame-aware processors on the UNet and the ControlNet read the frame count from the holder: with anchor
    attention every frame borrows frame 0's keys and values, so frame 0 is unchanged and the others change."""
    from dancegen.core.attention import set_default_attention, set_frame_attention
    from dancegen.core.context import FrameContextHolder

    comps, nets, _ = parts
    maps = pose_maps(3)
    plain = generate(parts, maps, output_type="latent", shared_noise=False)  # frames differ from the start
    holder = FrameContextHolder()
    set_frame_attention(comps.unet, holder, "anchor", detach_kv=True)
    set_frame_attention(nets["pose"], holder, "anchor", detach_kv=True)
    try:
        anchored = generate(parts, maps, output_type="latent", holder=holder, shared_noise=False)
    finally:
        set_default_attention(comps.unet)
        set_default_attention(nets["pose"])
    assert torch.allclose(anchored[:, :, 0], plain[:, :, 0], atol=1e-5)
    assert (anchored[:, :, 1:] - plain[:, :, 1:]).abs().mean() > 1e-3  # 8e-3 measured; frame 0 moved < 1e-5
    assert np.isfinite(anchored.numpy()).all()
