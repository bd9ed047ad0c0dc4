"""DDIM sampling / inversion / CFG / shared noise on tiny models (EYM §2.6, DYL §3)."""

from __future__ import annotations

import pytest
import torch

from dancegen.core.schedulers import (
    concat_batch,
    ddim_invert,
    ddim_sample,
    ddim_scheduler_sd15,
    guided_prediction,
    shared_noise,
)
from dancegen.core.unet3d import TINY_UNET_CONFIG, VideoUNet


@pytest.fixture(scope="module")
def video_fn():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    with torch.no_grad():  # a smooth denoiser (small eps changes between neighbouring steps), like a trained one
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    video = VideoUNet.from_unet2d(unet, temporal="stsa", subspace_size=(2, 2, 2)).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in video.temporal_blocks.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return lambda z, t, c: video(z, t, c).sample


def _latents(seed=1, f=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, f, 16, 16, generator=g), torch.randn(1, 5, 32, generator=g)


@pytest.mark.parametrize("steps", [2, 20])
@pytest.mark.parametrize("sched_kw", [{}, {"steps_offset": 0, "set_alpha_to_one": True}])
def test_inversion_is_exact_for_a_latent_independent_eps(steps, sched_kw):
    """With eps(z, t) independent of z, DDIM inversion and DDIM sampling are exact inverses (timestep grids mirror)."""
    z0, _ = _latents()
    c = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))

    def fn(z, t, cond):
        return cond * (1 + t.float() / 1000)

    zT = ddim_invert(fn, z0, ddim_scheduler_sd15(**sched_kw), steps, c)
    rec = ddim_sample(fn, zT, ddim_scheduler_sd15(**sched_kw), steps, 1.0, c)
    assert (zT - z0).abs().mean().item() > 0.5  # it did move to noise
    assert (rec - z0).abs().max().item() < 1e-4


def test_inversion_then_sampling_reconstructs_with_tiny_video_unet(video_fn):
    z0, ehs = _latents()
    steps = 4
    zT, traj = ddim_invert(video_fn, z0, ddim_scheduler_sd15(), steps, ehs, return_trajectory=True)
    rec = ddim_sample(video_fn, zT, ddim_scheduler_sd15(), steps, 1.0, ehs)
    err = (rec - z0).abs().mean().item()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    base = (ddim_sample(video_fn, noise, ddim_scheduler_sd15(), steps, 1.0, ehs) - z0).abs().mean().item()
    print(f"DDIM invert->sample, {steps} steps: mean|rec - z0| = {err:.4f}; random-latent baseline {base:.4f}; "
          f"ratio {err / base:.4f}")
    assert len(traj) == steps and torch.equal(traj[-1], zT)
    assert err < 0.05 * base


def test_cfg_scale_one_equals_conditional_branch(video_fn):
    z, ehs = _latents(3)
    uncond = torch.zeros_like(ehs)
    a = ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.0, ehs, uncond)
    b = ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.0, ehs)
    assert torch.equal(a, b)
    batched = ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.5, ehs, uncond, cfg_mode="batched")
    seq = ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.5, ehs, uncond, cfg_mode="sequential")
    assert (batched - seq).abs().max().item() < 1e-4
    assert (batched - a).abs().max().item() > 1e-4


def test_guided_prediction_formula_and_batching():
    calls = []

    def fn(z, t, cond):
        calls.append(z.shape[0])
        return z * 0 + cond["scale"].view(-1, 1)

    z = torch.zeros(2, 3)
    cond, uncond = {"scale": torch.tensor([2.0, 4.0]), "mode": "x"}, {"scale": torch.tensor([1.0, 1.0]), "mode": "x"}
    out = guided_prediction(fn, z, torch.tensor(5), cond, uncond, 3.0)
    assert calls == [4]
    assert torch.allclose(out[:, 0], torch.tensor([1 + 3 * 1.0, 1 + 3 * 3.0]))
    guided_prediction(fn, z, torch.tensor(5), cond, uncond, 3.0, cfg_mode="sequential")
    assert calls == [4, 2, 2]
    with pytest.raises(ValueError, match="differ"):
        concat_batch({"a": 1}, {"a": 2})


def test_sampling_determinism_with_generators(video_fn):
    z, ehs = _latents(4)

    def run(seed, eta):
        return ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.0, ehs,
                           generator=torch.Generator().manual_seed(seed), eta=eta)

    assert torch.equal(run(0, 1.0), run(0, 1.0))
    assert (run(0, 1.0) - run(1, 1.0)).abs().max().item() > 1e-4
    assert torch.equal(run(0, 0.0), run(1, 0.0))  # eta 0 ignores the generator
    steps = []
    ddim_sample(video_fn, z, ddim_scheduler_sd15(), 2, 1.0, ehs, callback=lambda i, t, lat: steps.append((i, int(t))))
    assert steps == [(0, 501), (1, 1)]


def test_shared_noise_same_for_every_frame():
    n = shared_noise((2, 4, 5, 8, 8), torch.Generator().manual_seed(0))
    assert n.shape == (2, 4, 5, 8, 8)
    assert torch.equal(n[:, :, 0], n[:, :, 4]) and not torch.equal(n[0], n[1])
    assert torch.equal(n, shared_noise((2, 4, 8, 8), torch.Generator().manual_seed(0), num_frames=5))
    n.add_(1)  # a real copy per frame, not a broadcast view
    assert (n[:, :, 0] - n[:, :, 1]).abs().max().item() == 0.0
    assert not torch.equal(shared_noise((1, 4, 2, 8, 8), torch.Generator().manual_seed(1)),
                           shared_noise((1, 4, 2, 8, 8), torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="num_frames"):
        shared_noise((2, 4, 8, 8))
