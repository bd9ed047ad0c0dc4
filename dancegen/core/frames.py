"""Frames from a text-to-image model with named ControlNets: the frame-by-frame generator the text methods build on.

LatentMan's baseline (spec latentman.md §2.3: SD-1.5 + depth ControlNet per frame, one initial noise for every frame,
cross-frame attention), Dancing Avatar's frames (SD-1.5 + OpenPose ControlNet, DPM-Solver++) and the inversion-free
parts of Edit-Your-Motion all run an image UNet on frames folded into the batch. `generate_frames` is that loop, on
the core's pieces: a `PromptEncoder`'s embeddings, a `ControlNetSet` (each net with its scale and step window), any
diffusers scheduler through `core.sampling.sample` (with its `before_model` / `after_step` hooks and gradient switch,
e.g. for LatentMan's latent alignment and pixel-wise guidance), and an optional `FrameContextHolder` whose
``FrameContext`` (frame count, ``extra["step_index"]``) reaches cross-frame / mutual self-attention processors of the
UNet and the ControlNets. With one frame, no frame attention and DDIM, it equals diffusers'
`StableDiffusionControlNetPipeline` (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from einops import rearrange

from dancegen.core.context import FrameContext, FrameContextHolder


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, H, W)`` -> ``(B*F, C, H, W)`` (frame-major per clip)."""
    return rearrange(x, "b c f h w -> (b f) c h w")


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``(B*F, C, H, W)`` -> ``(B, C, F, H, W)``."""
    return rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)


def initial_latents(shape: tuple[int, ...], generator: torch.Generator | None, shared: bool = True,
                    device=None, dtype=torch.float32) -> torch.Tensor:
    """Initial noise ``(1, C, F, h, w)``: one draw repeated over the frames (``shared``) or one per frame."""
    from diffusers.utils.torch_utils import randn_tensor

    from dancegen.core.schedulers import shared_noise

    if shared:
        return shared_noise(shape, generator=generator, device=device, dtype=dtype)
    return randn_tensor(shape, generator=generator, device=torch.device(device or "cpu"), dtype=dtype)


def frame_denoiser(unet, controlnets=None, conditions: Mapping[str, torch.Tensor | None] | None = None,
                   holder: FrameContextHolder | None = None, step: dict | None = None,
                   residual_hook: Callable | None = None, extra_channels: torch.Tensor | None = None) -> Callable:
    """``denoiser(latents (B, C, F, h, w), t, cond) -> prediction`` for `core.sampling.sample`.

    ``cond`` is the context ``(B, L, D)`` shared by a clip's frames (text or image tokens); under batched
    classifier-free guidance B holds the unconditional and the conditional clip. The ControlNet conditions are the
    same for both halves (as in diffusers), ``(1, C_i, F, Hi, Wi)`` in [0, 1], repeated over the batch.

    Args:
        unet: an image ``UNet2DConditionModel`` (frames folded into the batch).
        controlnets: a ``ControlNetSet`` or None.
        conditions: ``{name: (1, C_i, F, Hi, Wi)}`` for the set.
        holder: the frame context holder of frame-aware attention processors (UNet and ControlNets), or None.
        step: a dict whose ``"i"`` / ``"n"`` the caller keeps at the current step (the ControlNet windows and the
            processors' ``step_index`` read it).
        residual_hook: ``hook(index, control, skip) -> residual`` between ControlNet outputs and the UNet's skip
            features (`core.controlnet.control_residuals`); None: plain addition.
        extra_channels: ``(1, C_e, F, h, w)`` appended to the (scaled) latents of the UNet's input only, as an
            inpainting UNet takes its mask and masked-image latents (diffusers' order: latents, mask, masked image);
            the ControlNets see the latents alone.
    """
    step = step if step is not None else {}

    def denoise(latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        from contextlib import nullcontext

        b, _, f = latents.shape[:3]
        unet_in = latents if extra_channels is None else torch.cat(
            [latents, extra_channels.to(latents).expand(b, -1, -1, -1, -1)], dim=1)
        x = fold_frames(unet_in.to(unet.dtype))
        ehs = context.to(unet.dtype).repeat_interleave(f, dim=0)
        ctx = FrameContext(num_frames=f, extra={"step_index": step.get("i")})
        with holder.use(ctx) if holder is not None else nullcontext():
            kwargs: dict[str, Any] = {}
            if controlnets is not None and conditions:
                conds = {k: None if v is None else v.expand(b, *v.shape[1:]) for k, v in conditions.items()}
                res = controlnets(latents.to(unet.dtype), t, context.to(unet.dtype), conds, step=step.get("i"),
                                  num_steps=step.get("n"))
                if res is not None:
                    if residual_hook is not None:
                        from dancegen.core.controlnet import control_residuals

                        with control_residuals(unet, res, residual_hook) as kw:
                            return unfold_frames(unet(x, t, encoder_hidden_states=ehs, **kw).sample, f).float()
                    kwargs = res.as_kwargs()
            out = unet(x, t, encoder_hidden_states=ehs, **kwargs).sample
        return unfold_frames(out, f).float()

    return denoise


def generate_frames(
    unet,
    vae,
    scheduler,
    prompt_embeds: torch.Tensor,
    negative_embeds: torch.Tensor | None = None,
    *,
    num_frames: int,
    height: int,
    width: int,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    controlnets=None,
    conditions: Mapping[str, torch.Tensor | None] | None = None,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    shared_noise: bool = True,
    holder: FrameContextHolder | None = None,
    before_model: Callable | None = None,
    after_step: Callable | None = None,
    grad_steps=None,
    residual_hook: Callable | None = None,
    denoiser_wrapper: Callable | None = None,
    extra_channels: torch.Tensor | None = None,
    output_type: str = "pt",
    decode_chunk_size: int = 8,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Generate ``num_frames`` frames of one prompt, frame by frame in one batch.

    Args:
        unet / vae / scheduler: an SD-1.x image UNet, its VAE and any diffusers scheduler.
        prompt_embeds / negative_embeds: ``(1, L, D)`` contexts (`core.text.PromptEncoder.encode`); the negative
            one is needed for guidance.
        num_frames / height / width: the output.
        num_inference_steps / guidance_scale: sampling (guidance 1 or no negative: no guidance).
        eta: DDIM's eta (0: deterministic).
        controlnets / conditions: a ``ControlNetSet`` and ``{name: (1, C_i, F, H, W)}`` in [0, 1] (e.g. rendered
            pose maps or depth); the set's specs give each net's scale and step window.
        generator / latents / shared_noise: initial noise ``(1, C, F, h, w)`` (given, or drawn: one draw for all
            frames when ``shared_noise``).
        holder: frame context for frame-aware processors (cross-frame, anchor, MasaCtrl).
        before_model / after_step / grad_steps: `core.sampling.sample` hooks (e.g. latent alignment, pixel guidance).
        residual_hook: see `frame_denoiser`.
        denoiser_wrapper: ``wrapper(denoiser) -> denoiser`` around the frame denoiser (e.g. LatentMan's official
            pixel guidance keeps the gradient of the unconditional half only).
        extra_channels: ``(1, C_e, F, h, w)`` for an inpainting UNet (see `frame_denoiser`); the latents then have
            ``unet.config.in_channels - C_e`` channels.
        output_type: "pt" (frames ``(F, 3, H, W)`` in [0, 1], float32, CPU) or "latent" (``(1, C, F, h, w)``).
        decode_chunk_size: frames per VAE decode.
        callback: ``callback(i, t, latents)`` after each step (progress).
    """
    from dancegen.core.latents import decode_latents
    from dancegen.core.sampling import sample

    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    extra = 0 if extra_channels is None else extra_channels.shape[1]
    shape = (1, unet.config.in_channels - extra, num_frames, height // factor, width // factor)
    if extra_channels is not None and tuple(extra_channels.shape[2:]) != shape[2:]:
        raise ValueError(f"extra_channels must be (1, C_e, {', '.join(map(str, shape[2:]))}), got "
                         f"{tuple(extra_channels.shape)}")
    device = unet.device
    if latents is None:
        latents = initial_latents(shape, generator, shared_noise, device=device)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
    step: dict[str, int | None] = {"i": None, "n": None}

    def track(state):
        step["i"], step["n"] = state.i, state.num_steps
        return before_model(state) if before_model is not None else None

    denoiser = frame_denoiser(unet, controlnets, conditions, holder, step, residual_hook, extra_channels)
    if denoiser_wrapper is not None:
        denoiser = denoiser_wrapper(denoiser)
    guided = negative_embeds is not None and guidance_scale != 1.0
    z = sample(denoiser, latents.to(device=device, dtype=torch.float32), scheduler, num_inference_steps,
               cond=prompt_embeds.to(device), uncond=negative_embeds.to(device) if guided else None,
               guidance_scale=guidance_scale, eta=eta, generator=generator, before_model=track, after_step=after_step,
               grad_steps=grad_steps, callback=callback)
    if output_type == "latent":
        return z
    with torch.no_grad():
        return decode_latents(vae, z, decode_chunk_size)
