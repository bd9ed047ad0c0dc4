"""LatentMan's sampling (spec latentman.md §2.3-2.8, Algorithm 1): depth-controlled frames of one prompt, made
consistent by cross-frame attention (or MasaCtrl), Spatial Latent Alignment and Pixel-Wise Guidance.

All frames are denoised together (frames folded into the batch), which is equivalent to Algorithm 1's frame-outer
loop (spec §2.8): at every step,

1. SLA (steps in window A, before the UNet call): for frames i = 2..N in order, the latents of frame i at its matched
   pixels are replaced by frame i-1's latents at the matching pixels (Eq. 6, a hard copy of all channels, cascading
   from the anchor frame, which is never changed).
2. The UNet + depth ControlNet predict the noise of every frame (cross-frame attention: every frame's self-attention
   reads frame 1's keys and values, detached, in the UNet and the ControlNet; classifier-free guidance).
3. DDIM step (eta 0).
4. PWG (steps in window B): decode x0_hat of every frame with the VAE, take the pixel loss along the 256 px
   correspondences between frame i and (the detached) frame i-1, and move x_{t-1} against its gradient w.r.t. x_t
   (Eq. 7-8). ``grad_mode="official"`` reproduces the code's mechanics that delta = 0.01 was tuned on: the gradient
   flows only through the UNet's unconditional half (the conditional half and the ControlNet residuals are constants,
   and x0_hat is built from the non-differentiated x_t), the decoded image in [0, 1] is scaled by 25, and the loss is
   a per-frame mean. ``"full"`` takes the literal gradient of Eq. 8 through x0_hat and both halves.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from dancegen.core.components import TextControlNetPipelineMixin

Pairs = Sequence[tuple[Any, Any, Any, Any]]  # per pair (i-1, i): (y_ref, x_ref, y_cur, x_cur) int arrays


@dataclass
class LatentManPipelineOutput(BaseOutput):
    """``frames``: ``(F, 3, H, W)`` float32 in [0, 1] on the CPU ("pt") or the latents ``(1, C, F, h, w)``."""

    frames: torch.Tensor


def _index(pairs: Pairs, device) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(torch.as_tensor(a, dtype=torch.long, device=device) for a in p) for p in pairs]


def align_latents(latents: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """Spatial Latent Alignment (Eq. 6): ``x^i[:, q] <- x^{i-1}[:, s]`` for the matches of each pair, i = 2..N in order.

    Args:
        latents: ``(B, C, F, h, w)``.
        pairs: F-1 correspondence sets at ``h x w``: pair k maps frame k (reference) to frame k+1.

    Returns:
        A new tensor; frame 0, background and unmatched latents are unchanged.
    """
    if len(pairs) != latents.shape[2] - 1:
        raise ValueError(f"need {latents.shape[2] - 1} correspondence sets for {latents.shape[2]} frames, "
                         f"got {len(pairs)}")
    z = latents.clone()
    for i, (yr, xr, yc, xc) in enumerate(_index(pairs, z.device), start=1):
        if len(yc):
            z[:, :, i, yc, xc] = z[:, :, i - 1, yr, xr]
    return z


def pixel_loss(images: torch.Tensor, pairs: Pairs, reduction: str = "mean") -> torch.Tensor:
    """Pixel-Wise Guidance loss (Eq. 7 as the code computes it): ``sum_{i>=2} red_{c,(q,s)} (X_i[q] - sg(X_{i-1}[s]))^2``.

    Args:
        images: ``(F, C, H, W)`` at the correspondences' resolution.
        pairs: F-1 sets of pixel correspondences.
        reduction: "mean" (per frame over channels and pairs, the code) or "sum" (the paper's Eq. 7).
    """
    total = images.new_zeros(())
    for i, (yr, xr, yc, xc) in enumerate(_index(pairs, images.device), start=1):
        if len(yc) == 0:
            continue
        d = images[i][:, yc, xc] - images[i - 1][:, yr, xr].detach()
        total = total + (d.pow(2).mean() if reduction == "mean" else d.pow(2).sum())
    return total


class _NoGradControl:
    """A ControlNet set whose residuals are constants (no graph): the official PWG's ControlNet under no_grad."""

    def __init__(self, nets):
        self.nets = nets

    def __call__(self, *args, **kwargs):
        with torch.no_grad():
            return self.nets(*args, **kwargs)


def _unconditional_grad_only(denoiser: Callable) -> Callable:
    """Keep the autograd graph of the unconditional half ``[uncond; cond]`` only (official PWG)."""

    def fn(latents, t, cond):
        out = denoiser(latents, t, cond)
        if torch.is_grad_enabled() and out.shape[0] == 2:
            out = torch.cat([out[:1], out[1:].detach()])
        return out

    return fn


@contextmanager
def attention_mode(unet, controlnets, base: str, modules: Sequence[str] = ("unet", "controlnet"),
                   masactrl_start_step: int = 4, masactrl_start_layer: int = 10):
    """Install the base's frame attention for the duration of one sampling run; the holder to call them with.

    "t2v-zero": cross-frame attention to frame 1 (detached K/V) in the listed modules; "masactrl": MasaCtrl's
    mutual self-attention in the UNet; "per-frame": plain self-attention (no holder needed).
    """
    from dancegen.core.attention import set_frame_attention, set_mutual_self_attention
    from dancegen.core.context import FrameContextHolder

    holder = FrameContextHolder()
    saved = []
    nets = list(controlnets.values()) if controlnets is not None else []
    try:
        if base == "t2v-zero":
            targets = ([unet] if "unet" in modules else []) + (nets if "controlnet" in modules else [])
            for m in targets:
                saved.append((m, set_frame_attention(m, holder, "first", detach_kv=True)))
        elif base == "masactrl":
            saved.append((unet, set_mutual_self_attention(unet, holder, masactrl_start_step, masactrl_start_layer)))
        elif base != "per-frame":
            raise ValueError(f"unknown base {base!r}")
        yield holder if saved else None
    finally:
        for m, procs in saved:
            m.set_attn_processor(procs)


class LatentManPipeline(TextControlNetPipelineMixin, DiffusionPipeline):
    """Text + rendered depth maps + dense correspondences -> consistent frames of one character.

    Args:
        unet / vae / text_encoder / tokenizer / scheduler: an SD-1.x text-to-image model (any diffusers scheduler;
            LatentMan uses DDIM with eta 0).
        controlnets: a ``core.controlnet.ControlNetSet`` holding a ``"depth"`` ControlNet.
    """

    def check_inputs(self, depth: torch.Tensor, latent_pairs: Pairs | None, pixel_pairs: Pairs | None,
                     sla_steps, pwg_steps) -> None:
        if depth.ndim != 4 or depth.shape[1] != 3:
            raise ValueError(f"depth must be (F, 3, H, W) in [0, 1], got {tuple(depth.shape)}")
        f, _, h, w = depth.shape
        if h % self.vae_scale_factor or w % self.vae_scale_factor:
            raise ValueError(f"size {w}x{h} must be a multiple of {self.vae_scale_factor}")
        if sla_steps and (latent_pairs is None or len(latent_pairs) != f - 1):
            raise ValueError(f"SLA needs {f - 1} latent correspondence sets")
        if pwg_steps and (pixel_pairs is None or len(pixel_pairs) != f - 1):
            raise ValueError(f"PWG needs {f - 1} pixel correspondence sets")

    def __call__(
        self,
        prompt: str,
        depth: torch.Tensor,
        *,
        negative_prompt: str = "",
        num_inference_steps: int = 100,
        guidance_scale: float = 9.0,
        controlnet_scale: float = 1.0,
        eta: float = 0.0,
        shared_noise: bool = True,
        base: str = "t2v-zero",
        cross_frame_modules: Sequence[str] = ("unet", "controlnet"),
        masactrl_start_step: int = 4,
        masactrl_start_layer: int = 10,
        latent_pairs: Pairs | None = None,
        sla_steps: Container[int] = (),
        pixel_pairs: Pairs | None = None,
        pwg_steps: Container[int] = (),
        pwg_res: int = 256,
        pwg_delta: float = 0.01,
        pwg_pixel_scale: float = 25.0,
        pwg_loss: str = "mean",
        pwg_grad_mode: str = "official",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pt",
        callback: Callable | None = None,
    ) -> LatentManPipelineOutput:
        """Generate ``F`` frames.

        Args:
            prompt / negative_prompt: the character prompt (the recipe adds the quality suffix) and the negative.
            depth: ``(F, 3, H, W)`` depth control images in [0, 1] (near bright); sets the output size.
            num_inference_steps / guidance_scale / controlnet_scale / eta: DDIM and guidance.
            shared_noise: one initial noise for every frame.
            base: "t2v-zero" | "masactrl" | "per-frame" (see `attention_mode`).
            latent_pairs / sla_steps: correspondences at the latent resolution and SLA's step indices (window A).
            pixel_pairs / pwg_steps: correspondences at ``pwg_res`` and PWG's step indices (window B).
            pwg_delta / pwg_pixel_scale / pwg_loss / pwg_grad_mode: see the module docstring.
            generator / latents: the initial noise (drawn once for all frames with ``shared_noise``) or given.
            output_type: "pt" or "latent".
            callback: ``callback(i, t, latents)`` after each step (progress).
        """
        from dancegen.core.frames import generate_frames
        from dancegen.core.sampling import predicted_x0

        sla_steps = sla_steps or ()
        pwg_steps = pwg_steps or ()
        self.check_inputs(depth, latent_pairs, pixel_pairs, sla_steps, pwg_steps)
        if pwg_grad_mode not in ("official", "full"):
            raise ValueError(f"pwg_grad_mode must be official or full, got {pwg_grad_mode!r}")
        f, _, h, w = depth.shape
        device = self.device
        emb = self.prompt_encoder.encode(prompt, negative_prompt, guidance=guidance_scale != 1.0)
        self.controlnets.set_spec("depth", scale=float(controlnet_scale))
        conditions = {"depth": depth.to(device=device, dtype=torch.float32)[None].transpose(1, 2)}
        latent_pairs = _index(latent_pairs, device) if latent_pairs is not None else None  # once, not per step
        pixel_pairs = _index(pixel_pairs, device) if pixel_pairs is not None else None
        official = pwg_grad_mode == "official"
        use_pwg = any(i in pwg_steps for i in range(num_inference_steps)) and pwg_delta > 0

        def before_model(state):
            if state.i in sla_steps:
                return align_latents(state.latents, latent_pairs)
            return None

        def after_step(state):
            if state.latents_grad is None:
                return None
            with torch.enable_grad():
                if official:  # x0 from the non-differentiated x_t: only the UNet path carries the gradient
                    x0 = predicted_x0(state.scheduler, state.model_output, state.t, state.latents, step_index=state.i)
                else:
                    x0 = state.x0
                z = x0[0].transpose(0, 1) / self.vae.config.scaling_factor  # (F, C, h, w)
                img = (self.vae.decode(z.to(self.vae.dtype)).sample.float() / 2 + 0.5).clamp(0, 1)
                if img.shape[-1] != pwg_res:
                    img = F.interpolate(img, size=(pwg_res, pwg_res), mode="nearest")
                loss = pixel_loss(img * pwg_pixel_scale, pixel_pairs, pwg_loss)
                (grad,) = torch.autograd.grad(loss, state.latents_grad) if loss.requires_grad else (None,)
            if grad is None:
                return None
            return state.prev - pwg_delta * grad.to(state.prev.dtype)

        controls = self.controlnets
        wrapper = None
        if use_pwg and official:
            controls, wrapper = _NoGradControl(self.controlnets), _unconditional_grad_only
        with attention_mode(self.unet, self.controlnets, base, cross_frame_modules, masactrl_start_step,
                            masactrl_start_layer) as holder:
            frames = generate_frames(
                self.unet, self.vae, self.scheduler, emb.cond, emb.uncond, num_frames=f, height=h, width=w,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, controlnets=controls,
                conditions=conditions, generator=generator, latents=latents, shared_noise=shared_noise,
                holder=holder, before_model=before_model if sla_steps else None,
                after_step=after_step if use_pwg else None, grad_steps=pwg_steps if use_pwg else None,
                denoiser_wrapper=wrapper, output_type=output_type, callback=callback, eta=eta)
        return LatentManPipelineOutput(frames=frames)
