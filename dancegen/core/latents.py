"""Images and videos <-> VAE latents: the conversions every latent-diffusion method makes (SD-1.x convention).

Images are ``(N, 3, H, W)`` in [-1, 1]; latents are scaled by the VAE's ``scaling_factor`` (0.18215 for SD-1.5), so
they are what the UNet sees. Videos fold their frames into the batch: ``(B, 3, F, H, W)`` <-> ``(B, C, F, h, w)``.
"""

from __future__ import annotations

import torch
from einops import rearrange


def encode_images(vae, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] -> scaled latents ``(N, C, h, w)``.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        images: the images (any dtype/device; moved to the VAE's).
        sample: draw from the posterior (training of some methods) instead of taking its mean (the default, as
            inversion and reference encodings do).
        generator: for ``sample``.
    """
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return z * vae.config.scaling_factor


def encode_video(vae, video: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``(B, 3, F, H, W)`` in [-1, 1] -> scaled latents ``(B, C, F, h, w)`` (posterior mean), ``chunk`` frames at a
    time (None: all at once)."""
    b = video.shape[0]
    frames = rearrange(video, "b c f h w -> (b f) c h w")
    step = chunk or frames.shape[0]
    z = torch.cat([encode_images(vae, frames[i:i + step]) for i in range(0, frames.shape[0], step)])
    return rearrange(z, "(b f) c h w -> b c f h w", b=b)


def decode_latents(vae, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Scaled latents -> images in [0, 1] (float32, on the CPU), ``chunk`` frames per decoder call.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        latents: ``(N, C, h, w)`` or a video ``(B, C, F, h, w)``.
        chunk: frames per VAE decode (memory).

    Returns:
        ``(N, 3, H, W)``, or ``(B*F, 3, H, W)`` for a video (frames in order, clip after clip).
    """
    z = rearrange(latents, "b c f h w -> (b f) c h w") if latents.ndim == 5 else latents
    z = z / vae.config.scaling_factor
    out = [vae.decode(z[i:i + chunk].to(device=vae.device, dtype=vae.dtype)).sample.float()
           for i in range(0, z.shape[0], chunk)]
    return ((torch.cat(out).clamp(-1, 1) + 1) / 2).cpu()


def autoencoder_loss(vae, images: torch.Tensor, kl_weight: float, l1_weight: float = 0.0,
                     weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Training loss of an ``AutoencoderKL`` on ``(N, 3, H, W)`` images in [-1, 1]: ``mean w (D(z) - x)^2 +
    l1_weight * mean w |D(z) - x| + kl_weight * KL(q(z|x) || N(0, I)) / pixels``, z drawn from the posterior.

    Args:
        vae: the autoencoder being trained.
        images: the batch.
        kl_weight: weight of the KL term per image value (SD's autoencoder used 1e-6).
        l1_weight: weight of an L1 term (0: the plain squared error).
        weights: ``(N, 1, H, W)`` per-pixel weights (a weighted mean), or None (uniform).

    Returns:
        ``(loss, {"mse", "kl"[, "l1"]})`` (the logged terms unweighted and detached).
    """
    x = images.to(vae.dtype)
    post = vae.encode(x).latent_dist
    err = vae.decode(post.sample()).sample.float() - x.float()
    if weights is None:
        def mean(v):
            return v.mean()
    else:
        w = weights.to(err)

        def mean(v):
            return (v * w).sum() / (w.sum() * v.shape[1])
    mse = mean(err.pow(2))
    kl = post.kl().mean() / x[0].numel()
    loss, logs = mse + kl_weight * kl, {"mse": mse.detach(), "kl": kl.detach()}
    if l1_weight:
        l1 = mean(err.abs())
        loss, logs["l1"] = loss + l1_weight * l1, l1.detach()
    return loss, logs


@torch.no_grad()
def calibrate_scaling_factor(vae, images: torch.Tensor, chunk: int = 64) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of the posterior means of ``images`` ``(N, 3, H, W)`` in [-1, 1]
    (so the latents the UNet sees have unit variance, as SD's 0.18215 was chosen); returns it."""
    z = torch.cat([vae.encode(images[i:i + chunk].to(vae.device, vae.dtype)).latent_dist.mean.float().flatten()
                   for i in range(0, len(images), chunk)])
    scale = 1.0 / max(z.std().item(), 1e-6)
    vae.register_to_config(scaling_factor=scale)
    return scale
