"""Dancing Avatar's sampling (spec dancing-avatar.md §2.0 stages B and C): frames made one at a time in pose order.

1. Background plate (``use_background``, §2.2 step 1): the character in the scene for the first pose (base + LoRAs +
   OpenPose ControlNet), its person mask (given, or from ``segment``), and the person inpainted away with the
   background text only: masked-latent inpainting with the base (at every step the latents outside the mask are
   replaced by the first image's latents noised to that step, Blended Latent Diffusion style), or, when an
   inpainting UNet is given (``inpaint_unet``: SD-1.5 inpainting's 9 input channels), that UNet on the latents +
   mask + masked-image latents as diffusers' inpainting pipeline feeds it; then paste-back of the untouched pixels.
   The plate ``B`` is shared by every frame.
2. Per frame t, in order (§2.2 step 3, §2.3): the person is generated inside its mask ``M_t`` on top of ``B`` (the same
   latent blending with ``B``'s latents), guided by the prompt, the pose map ``p_t`` (``pose`` ControlNet) and the
   previous output frame (``prev`` ControlNet, absent for t = 0: scale 0 there, spec §2.3 GAP); with
   ``paste_back`` the frame is ``m~ x_hat + (1 - m~) B`` with the feathered mask (``pose.masks.feather_mask``), so
   outside ``M_t`` it equals ``B`` exactly. Without ``use_background`` every frame is plain T2I + ControlNets.
   With ``segment`` (SAM / pose-backend masks) a frame ``J_t`` is first generated without the plate and segmented.

Every UNet call holds one frame (two with classifier-free guidance): memory does not grow with the pose count, and
``frame_callback(t, frame)`` receives each finished frame. All frames start from the same initial noise unless
``shared_noise`` is off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from dancegen.core.components import TextControlNetPipelineMixin


@dataclass
class DancingAvatarPipelineOutput(BaseOutput):
    """``frames``: ``(F, H, W, 3)`` uint8; ``plate``: ``(H, W, 3)`` uint8 or None; ``masks``: ``(F, H, W)`` bool (the
    person masks the frames were inpainted in) or None."""

    frames: np.ndarray
    plate: np.ndarray | None = None
    masks: np.ndarray | None = None


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N, H, W, 3)`` uint8."""
    return (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


def composite(generated: np.ndarray, plate: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight * generated + (1 - weight) * plate`` in uint8; where ``weight`` is 0 the plate's bytes exactly."""
    w = weight[..., None].astype(np.float32)
    out = np.round(w * generated.astype(np.float32) + (1 - w) * plate.astype(np.float32)).clip(0, 255).astype(np.uint8)
    out[weight == 0] = plate[weight == 0]
    return out


class DancingAvatarPipeline(TextControlNetPipelineMixin, DiffusionPipeline):
    """Prompt + pose maps -> frames with a shared background, made in order (module docstring).

    Args:
        unet / vae / text_encoder / tokenizer / scheduler: an SD-1.x text-to-image model (clothes / face LoRAs, when
            used, are already attached to the UNet); any diffusers scheduler (DPM-Solver++ in the paper's setting).
        controlnets: a ``core.controlnet.ControlNetSet`` with ``pose`` and optionally ``prev`` (may be None).

    Attributes:
        inpaint_unet: an SD-1.x inpainting UNet (``in_channels`` = the latent channels + 5) for the plate, or None
            (the base with latent blending); set after construction, on the pipeline's device.
    """

    inpaint_unet = None

    def check_inputs(self, pose_maps, masks, use_inter: bool) -> None:
        if len(pose_maps) < 1:
            raise ValueError("pose_maps holds no frame")
        first = pose_maps[0]
        if first.ndim != 3 or first.shape[0] != 3:
            raise ValueError(f"pose_maps must be F maps (3, H, W) in [0, 1], got {len(pose_maps)} of "
                             f"{tuple(first.shape)}")
        f, (h, w) = len(pose_maps), first.shape[1:]
        if h % self.vae_scale_factor or w % self.vae_scale_factor:
            raise ValueError(f"size {w}x{h} must be a multiple of {self.vae_scale_factor}")
        if masks is not None and (len(masks) != f or tuple(masks[0].shape) != (h, w)):
            raise ValueError(f"masks must be {f} masks ({h}, {w}), got {len(masks)} of {tuple(masks[0].shape)}")
        if use_inter and (self.controlnets is None or "prev" not in self.controlnets or self.controlnets["prev"] is None):
            raise ValueError("use_inter needs a 'prev' ControlNet in the set")

    # ------------------------------------------------------------------------------------------------ one image
    def _encode(self, image_u8: np.ndarray) -> torch.Tensor:
        from dancegen.core.latents import encode_images

        x = torch.from_numpy(image_u8).permute(2, 0, 1)[None].float().div(255).to(self.device)
        with torch.no_grad():
            return encode_images(self.vae, (x * 2 - 1).to(self.vae.dtype)).float()  # (1, C, h, w)

    def generate_image(self, emb, noise: torch.Tensor, steps: int, guidance_scale: float,
                       conditions: dict | None = None, known: torch.Tensor | None = None,
                       keep: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """One frame: ``(H, W, 3)`` uint8 and its latent ``(1, C, h, w)``.

        Args:
            emb: `PromptEmbeddings` (cond / uncond).
            noise: the initial noise ``(1, C, 1, h, w)``.
            conditions: ``{name: (1, C_i, 1, H_i, W_i) or None}`` for the ControlNet set (None: no ControlNet).
            known / keep: masked-latent inpainting: the known latents ``(1, C, h, w)`` and ``(1, 1, h, w)`` float, 1
                where the known latents are kept (outside the person), 0 where the model generates.
        """
        from dancegen.core.frames import generate_frames

        after_step = None
        if known is not None:
            known5, keep5 = known[:, :, None], keep[:, :, None]
            sched = self.scheduler

            def after_step(state):  # Blended Latent Diffusion: the known region at the next step's noise level
                if state.i + 1 < state.num_steps:
                    t_next = sched.timesteps[state.i + 1].reshape(1)
                    ref = sched.add_noise(known5, noise, t_next)
                else:
                    ref = known5
                return keep5 * ref + (1 - keep5) * state.prev

        nets = self.controlnets
        conditions = {k: v for k, v in (conditions or {}).items() if nets is not None and k in nets}
        active = any(v is not None for v in conditions.values())
        z = generate_frames(self.unet, self.vae, self.scheduler, emb.cond, emb.uncond, num_frames=1,
                            height=noise.shape[-2] * self.vae_scale_factor,
                            width=noise.shape[-1] * self.vae_scale_factor, num_inference_steps=steps,
                            guidance_scale=guidance_scale, controlnets=self.controlnets if active else None,
                            conditions=conditions if active else None, latents=noise, after_step=after_step,
                            output_type="latent")[:, :, 0]
        from dancegen.core.latents import decode_latents

        with torch.no_grad():
            img = decode_latents(self.vae, z, 1)  # (1, 3, H, W) in [0, 1]
        return to_uint8(img)[0], z

    def inpaint_image(self, emb, noise: torch.Tensor, steps: int, guidance_scale: float, image: np.ndarray,
                      person: np.ndarray) -> np.ndarray:
        """``image`` with the ``person`` region regenerated by ``inpaint_unet`` (``(H, W, 3)`` uint8).

        As diffusers' ``StableDiffusionInpaintPipeline`` with strength 1: the UNet's input is the latents, the mask
        (1 = regenerate) at latent size and the latents of the image with the masked pixels set to 0 (mid grey in
        [-1, 1]). Differences: the latent mask is on where any of its pixels is (`pose.masks.latent_mask`, diffusers
        resizes), and the masked image's latents are the posterior mean (diffusers samples them).
        """
        from dancegen.core.frames import generate_frames
        from dancegen.core.latents import decode_latents, encode_images
        from dancegen.pose.masks import latent_mask

        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(self.device) * 2 - 1
        hole = torch.from_numpy(person).to(self.device)[None, None]
        with torch.no_grad():
            masked = encode_images(self.vae, (x * ~hole).to(self.vae.dtype)).float()
        lat = torch.from_numpy(latent_mask(person, self.vae_scale_factor)).float()[None, None].to(self.device)
        extra = torch.cat([lat, masked], dim=1)[:, :, None]  # (1, 1 + C, 1, h, w)
        z = generate_frames(self.inpaint_unet, self.vae, self.scheduler, emb.cond, emb.uncond, num_frames=1,
                            height=image.shape[0], width=image.shape[1], num_inference_steps=steps,
                            guidance_scale=guidance_scale, latents=noise, extra_channels=extra,
                            output_type="latent")[:, :, 0]
        with torch.no_grad():
            return to_uint8(decode_latents(self.vae, z, 1))[0]

    def _keep_mask(self, person: np.ndarray) -> torch.Tensor:
        from dancegen.pose.masks import latent_mask

        lat = latent_mask(person, self.vae_scale_factor)
        return torch.from_numpy(~lat).float()[None, None].to(self.device)

    # ------------------------------------------------------------------------------------------------ the video
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        pose_maps,
        *,
        masks: np.ndarray | None = None,
        segment: Callable[[np.ndarray, int], np.ndarray] | None = None,
        negative_prompt: str = "",
        plate_prompt: str = "",
        plate_negative_prompt: str = "",
        use_background: bool = True,
        use_inter: bool = True,
        paste_back: bool = True,
        feather_px: int = 4,
        inter_condition: str = "image",
        pose_scale: float = 1.0,
        inter_scale: float = 1.0,
        num_inference_steps: int = 25,
        plate_steps: int | None = None,
        guidance_scale: float = 7.5,
        shared_noise: bool = True,
        generator: torch.Generator | None = None,
        plate: np.ndarray | None = None,
        frame_callback: Callable[[int, np.ndarray], None] | None = None,
        callback: Callable[[str, int, int], None] | None = None,
    ) -> DancingAvatarPipelineOutput:
        """Generate ``F`` frames in order.

        Args:
            prompt / negative_prompt: the composed character prompt (spec §2.4) and its negative.
            pose_maps: ``(F, 3, H, W)`` OpenPose maps in [0, 1], or any sequence of ``(3, H, W)`` maps (``len`` and
                indexing: a long video draws each map when its frame is made); sets the size.
            masks: ``(F, H, W)`` bool person masks (already dilated) for the background pipeline, or a sequence of
                them; None needs ``segment``.
            segment: ``segment(image (H, W, 3) uint8, t) -> (H, W) bool`` mask of the person in a generated image
                (SAM / pose backend): then ``J_t`` is generated per frame and segmented (and the plate's image).
            plate_prompt / plate_negative_prompt: the plate's inpainting prompt (background text only).
            use_background / use_inter: the background pipeline and the previous-frame module (ablation switches).
            paste_back / feather_px: composite onto the plate with a feathered mask (exact plate outside the mask).
            inter_condition: "image" (previous frame in [0, 1]) or "latent" (its VAE latent).
            pose_scale / inter_scale: ControlNet scales (the previous-frame net gets 0 at frame 0).
            num_inference_steps / plate_steps / guidance_scale: sampling (``plate_steps`` None: the same).
            shared_noise / generator: one initial noise for every frame (else a new draw per frame).
            plate: a given background plate ``(H, W, 3)`` uint8 (skips its synthesis).
            frame_callback: ``frame_callback(t, frame)`` with each finished ``(H, W, 3)`` uint8 frame; then
                nothing per frame is kept (``frames`` and ``masks`` of the output are None): constant memory.
            callback: ``callback(stage, done, total)``: "plate" then "frames".
        """
        f, (h, w) = len(pose_maps), pose_maps[0].shape[1:]
        if use_background and masks is None and segment is None:
            raise ValueError("use_background needs person masks or a segment function")
        self.check_inputs(pose_maps, masks if use_background else None, use_inter)
        device = self.device
        steps = int(num_inference_steps)
        plate_steps = int(plate_steps or steps)
        guided = guidance_scale != 1.0
        emb = self.prompt_encoder.encode(prompt, negative_prompt, guidance=guided)
        shape = (1, self.unet.config.in_channels, 1, h // self.vae_scale_factor, w // self.vae_scale_factor)
        from diffusers.utils.torch_utils import randn_tensor

        def draw():
            return randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32).to(device)

        noise0 = draw()
        nets = self.controlnets
        if nets is not None:
            nets.set_spec("pose", scale=float(pose_scale))
            if "prev" in nets:
                nets.set_spec("prev", scale=float(inter_scale) if use_inter else 0.0)

        def pose_cond(t):
            return torch.as_tensor(pose_maps[t]).to(device=device, dtype=torch.float32)[None, :, None]

        # 1. the background plate (from the first pose's image)
        known = None
        if use_background:
            if plate is None:
                if callback:
                    callback("plate", 0, 2)
                first, _ = self.generate_image(emb, noise0, plate_steps, guidance_scale,
                                               {"pose": pose_cond(0), "prev": None})
                person0 = masks[0] if segment is None else segment(first, -1)
                pemb = self.prompt_encoder.encode(plate_prompt, plate_negative_prompt, guidance=guided)
                if self.inpaint_unet is not None:
                    filled = self.inpaint_image(pemb, noise0, plate_steps, guidance_scale, first, person0)
                else:
                    filled, _ = self.generate_image(pemb, noise0, plate_steps, guidance_scale, None,
                                                    known=self._encode(first), keep=self._keep_mask(person0))
                from dancegen.pose.masks import feather_mask

                plate = composite(filled, first, feather_mask(person0, feather_px) if paste_back else
                                  np.ones(person0.shape, np.float32))
                if callback:
                    callback("plate", 2, 2)
            known = self._encode(plate)

        # 2. the frames, in pose order
        frames = np.zeros((f, h, w, 3), np.uint8) if frame_callback is None else None
        used_masks = np.zeros((f, h, w), bool) if use_background and frame_callback is None else None
        prev_cond = None
        for t in range(f):
            noise = noise0 if shared_noise or t == 0 else draw()
            cond = {"pose": pose_cond(t), "prev": prev_cond if use_inter else None}
            if use_background:
                if segment is not None:
                    j_t, _ = self.generate_image(emb, noise, steps, guidance_scale, cond)
                    person = segment(j_t, t)
                else:
                    person = masks[t]
                if used_masks is not None:
                    used_masks[t] = person
                gen, z = self.generate_image(emb, noise, steps, guidance_scale, cond, known=known,
                                             keep=self._keep_mask(person))
                if paste_back:
                    from dancegen.pose.masks import feather_mask

                    gen = composite(gen, plate, feather_mask(person, feather_px))
            else:
                gen, z = self.generate_image(emb, noise, steps, guidance_scale, cond)
            if use_inter:  # the previous frame as its module sees it (after paste-back)
                if inter_condition == "latent":
                    prev_cond = (self._encode(gen) if use_background and paste_back else z)[:, :, None]
                else:
                    prev_cond = torch.from_numpy(gen).permute(2, 0, 1)[None, :, None].float().div(255).to(device)
            if frame_callback is not None:
                frame_callback(t, gen)
            else:
                frames[t] = gen
            if callback:
                callback("frames", t + 1, f)
        return DancingAvatarPipelineOutput(frames=frames, plate=plate, masks=used_masks)
