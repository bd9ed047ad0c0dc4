"""core.latents: the autoencoder's training loss and its latent scaling factor."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    from dancegen.core.tiny import tiny_vae_config

    torch.manual_seed(0)
    return AutoencoderKL(**tiny_vae_config((8, 16), 4, 16, norm_num_groups=8))


def _images(n=3, seed=1):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_plain_loss_is_squared_error_plus_weighted_kl(vae):
    """Without weights or L1: mean squared reconstruction error of a posterior sample + kl_weight * KL per value (the
    formula Dance-Your-Latents' vae stage trained with), term by term."""
    from dancegen.core.latents import autoencoder_loss

    x = _images()
    torch.manual_seed(5)
    loss, logs = autoencoder_loss(vae, x, kl_weight=0.25)
    torch.manual_seed(5)
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    mse = torch.nn.functional.mse_loss(rec, x)
    kl = post.kl().mean() / x[0].numel()
    assert torch.allclose(logs["mse"], mse) and torch.allclose(logs["kl"], kl)
    assert torch.allclose(loss, mse + 0.25 * kl)
    assert "l1" not in logs


def test_weights_make_a_weighted_mean_and_l1_adds_its_term(vae):
    from dancegen.core.latents import autoencoder_loss

    x = _images()
    torch.manual_seed(5)
    plain, _ = autoencoder_loss(vae, x, kl_weight=0.0)
    torch.manual_seed(5)
    uniform, _ = autoencoder_loss(vae, x, kl_weight=0.0, weights=torch.full((3, 1, 16, 16), 7.0))
    assert torch.allclose(plain, uniform, rtol=1e-5)  # a constant weight changes nothing

    w = torch.ones(3, 1, 16, 16)
    w[:, :, 4:12, 4:12] = 5.0  # a "person" weighing x5
    torch.manual_seed(5)
    loss, logs = autoencoder_loss(vae, x, kl_weight=0.0, l1_weight=0.5, weights=w)
    torch.manual_seed(5)
    post = vae.encode(x).latent_dist
    err = vae.decode(post.sample()).sample - x
    mse = (err ** 2 * w).sum() / (w.sum() * 3)
    l1 = (err.abs() * w).sum() / (w.sum() * 3)
    assert torch.allclose(logs["mse"], mse) and torch.allclose(logs["l1"], l1)
    assert torch.allclose(loss, mse + 0.5 * l1)
    assert not torch.allclose(mse, plain)  # the weighting moved the mean


def test_calibrated_scaling_gives_unit_std_latents(vae):
    from dancegen.core.latents import calibrate_scaling_factor, encode_images

    x = _images(10)
    scale = calibrate_scaling_factor(vae, x, chunk=4)  # chunks give the same statistics as one batch
    assert vae.config.scaling_factor == scale
    with torch.no_grad():
        z = encode_images(vae, x)
    assert abs(float(z.std()) - 1.0) < 1e-4
