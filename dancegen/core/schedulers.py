"""DDIM sampling with classifier-free guidance, DDIM inversion, and shared initial noise (DYL §3/§4.2, EYM §2.6).

The loop itself is ``sampling.sample`` / ``sampling.invert`` (any scheduler, hooks, gradient switch) and CFG lives in
``guidance``; ``ddim_sample`` / ``ddim_invert`` are their positional-argument front ends, kept for existing callers,
and ``guided_prediction`` / ``concat_batch`` are re-exported from ``guidance``.

- ``ddim_sample``: deterministic DDIM (eta 0 by default) with classifier-free guidance
  ``eps = eps_u + s * (eps_c - eps_u)`` (Ho & Salimans); CFG runs batched (one call on the concatenated batch) or
  sequentially (two calls, half the activation memory). DYL spec §3: DDIM 50, CFG 1.5 (DisCo-code).
- ``ddim_invert``: Edit-Your-Motion §2.6 / Eq. 6 (corrected form) with diffusers' ``DDIMInverseScheduler``:
  ``z_t = sqrt(a_t) * (z_prev - sqrt(1 - a_prev) * eps) / sqrt(a_prev) + sqrt(1 - a_t) * eps`` over ascending
  timesteps, no CFG.
- ``shared_noise``: one Gaussian sample repeated over the frame axis (DYL §4.2: "the same Gaussian noise for every
  frame", spec §2.3).

The denoiser is any ``unet_fn(latents, t, cond) -> prediction`` with the latents' shape, so the same loop serves the
video UNet, a windowed call (``context_windows.windowed_unet_call``) or a per-frame image UNet. ``cond`` is whatever
``unet_fn`` understands (a tensor, or a dict/list/tuple of tensors and plain values); for batched CFG, ``cond`` and
``uncond`` are concatenated tensor by tensor along dim 0.
"""

from __future__ import annotations

from typing import Any

import torch

from dancegen.core.guidance import concat_batch, guided_prediction
from dancegen.core.sampling import StepCallback, UnetFn, invert, sample

__all__ = ["concat_batch", "ddim_invert", "ddim_sample", "ddim_scheduler_sd15", "guided_prediction", "shared_noise"]


def ddim_sample(
    unet_fn: UnetFn,
    latents: torch.Tensor,
    scheduler,
    steps: int,
    guidance_scale: float = 1.0,
    cond: Any = None,
    uncond: Any = None,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    eta: float = 0.0,
    cfg_mode: str = "batched",
) -> torch.Tensor:
    """Denoise ``latents`` (initial noise) with a DDIM scheduler (``sampling.sample`` with DYL's positional order).

    Args:
        unet_fn: ``(latents, t, cond) -> prediction`` (eps / v / x0 as the scheduler's ``prediction_type`` says).
        latents: initial noise ``(B, C, F, H, W)`` (or any shape ``unet_fn`` takes); multiplied by
            ``scheduler.init_noise_sigma`` here (1 for DDIM). Start from ``ddim_invert``'s output to reconstruct.
        scheduler: a diffusers ``DDIMScheduler`` (``set_timesteps`` is called on it); any other scheduler works too
            (see ``sampling.sample``).
        steps: number of inference steps.
        guidance_scale: CFG scale s (1 = no guidance).
        cond / uncond: conditional / unconditional conditioning passed to ``unet_fn``.
        generator: for eta > 0 (stochastic DDIM); unused at eta 0.
        callback: ``callback(step_index, t, latents)`` after each step.
        eta: DDIM eta (0 = deterministic).
        cfg_mode: "batched" | "sequential" (see ``guided_prediction``).

    Returns:
        Denoised latents, same shape as the input.
    """
    return sample(unet_fn, latents, scheduler, steps, cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                  cfg_mode=cfg_mode, generator=generator, eta=eta, callback=callback)


def ddim_invert(
    unet_fn: UnetFn,
    latents: torch.Tensor,
    scheduler,
    steps: int,
    cond: Any = None,
    callback: StepCallback | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM inversion: clean latents -> the noise latents that DDIM sampling maps back to them (EYM Eq. 6/17).

    ``sampling.invert`` with positional arguments.

    Args:
        unet_fn: ``(latents, t, cond) -> eps``; conditioned on the source (no CFG, EYM §2.6 choice).
        latents: ``z_0 = E(x) * scaling_factor``.
        scheduler: the sampling ``DDIMScheduler`` (or its config holder); the inverse scheduler is built from its
            config, so inversion and sampling use the same timestep grid.
        steps: number of inversion steps (use the sampling step count).
        cond: conditioning for ``unet_fn``.
        callback: ``callback(step_index, t, latents)`` after each step.
        return_trajectory: also return the latents after every step (``[z_t1, ..., z_T]``).

    Returns:
        ``z_T`` (and the trajectory when asked).
    """
    return invert(unet_fn, latents, scheduler, steps, cond=cond, callback=callback,
                  return_trajectory=return_trajectory)


def shared_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None = None,
    num_frames: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The same Gaussian noise for every frame (DYL §4.2): ``(B, C, F, H, W)`` with identical frames.

    Args:
        shape: ``(B, C, F, H, W)``, or ``(B, C, H, W)`` together with ``num_frames``.
        generator: one generator, or one per clip (diffusers ``randn_tensor`` semantics).
        num_frames: F when ``shape`` is 4-d (overrides ``shape[2]`` when 5-d).
        device / dtype: of the result.

    Returns:
        ``(B, C, F, H, W)`` tensor; frames are equal copies (contiguous, safe to modify in place).
    """
    from diffusers.utils.torch_utils import randn_tensor

    if len(shape) == 5:
        b, c, f, h, w = shape
        f = num_frames or f
    elif len(shape) == 4 and num_frames:
        b, c, h, w = shape
        f = num_frames
    else:
        raise ValueError(f"shared_noise needs (B, C, F, H, W), or (B, C, H, W) with num_frames; got {tuple(shape)}")
    noise = randn_tensor((b, c, 1, h, w), generator=generator, device=torch.device(device or "cpu"), dtype=dtype)
    return noise.repeat(1, 1, f, 1, 1)


def ddim_scheduler_sd15(**overrides):
    """The SD-1.x DDIM scheduler (scaled-linear betas 0.00085..0.012, 1000 steps, eps), for tests and defaults.

    Matches ``lambdalabs/sd-image-variations-diffusers/scheduler`` (``steps_offset`` 1, ``set_alpha_to_one`` False,
    ``clip_sample`` False); keyword arguments override entries.
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(**sd15_scheduler_kwargs(**overrides))


def sd15_scheduler_kwargs(**overrides) -> dict:
    """SD-1.5's published scheduler settings (`sd_configs.SD15_SCHEDULER_CONFIG`) as scheduler keyword arguments,
    with `overrides` applied."""
    from dancegen.core.sd_configs import SD15_SCHEDULER_CONFIG

    cfg = {k: v for k, v in SD15_SCHEDULER_CONFIG.items() if not k.startswith("_")}
    cfg.update(overrides)
    return cfg


def uniform_noising(alphas_cumprod: torch.Tensor, z0: torch.Tensor, num_train_timesteps: int | None = None):
    """The DDPM forward process at one uniform timestep per sample, as training draws it.

    ``t ~ U{0, T-1}`` per item of the batch, ``eps ~ N(0, I)`` like ``z0`` (image ``(N, C, h, w)`` or video
    ``(N, C, F, h, w)`` latents), ``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps``. The draws come in that order
    (timesteps, then noise), so a seeded run is the same whichever trainer calls it.

    Returns:
        ``(t, noise, z_t, a)`` with ``a`` the ``alphas_cumprod[t]`` broadcast to ``z0``'s rank (for the target).
    """
    n = z0.shape[0]
    t = torch.randint(0, int(num_train_timesteps or len(alphas_cumprod)), (n,), device=z0.device)
    noise = torch.randn_like(z0)
    a = alphas_cumprod.to(z0.device)[t].float().view(n, *([1] * (z0.ndim - 1)))
    return t, noise, a.sqrt() * z0 + (1 - a).sqrt() * noise, a


def prediction_target(a: torch.Tensor, z0: torch.Tensor, noise: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """What the network learns to predict: ``v = sqrt(a) eps - sqrt(1 - a) z0`` (v-prediction) or ``eps``."""
    return a.sqrt() * noise - (1 - a).sqrt() * z0 if v_prediction else noise
