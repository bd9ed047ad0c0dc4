"""Edit-Your-Motion inference (spec §2.6, §2.9): DDIM inversion of the source, then DDIM sampling with the target.

    z*  = DDIM-inv(E(x_src))   with the fine-tuned model, the source prompt and the SOURCE skeletons (Eq. 17)
    z_0 = DDIM(z*)             with the same model and prompt and the TARGET skeletons (after the skeleton offset)
    out = D(z_0)

No classifier-free guidance (the paper, citing Ho & Salimans): guidance 1, one conditional pass per step, eta 0, so
the result is a deterministic function of the inputs. Both loops are ``core.sampling.invert`` / ``sample`` on the
video UNet with the ControlNet residuals going through the Motion Attention bank. A function rather than a
``DiffusionPipeline``: the model container already holds every part, and nothing here is stochastic.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def edit_video(model, case: dict, target_keypoints: np.ndarray, steps: int = 50, inversion_steps: int | None = None,
               controlnet_scale: float = 1.0, guidance_scale: float = 1.0, eta: float = 0.0,
               inversion_model=None, callback=None) -> np.ndarray:
    """The source of ``case`` performing ``target_keypoints``.

    Args:
        model: an `EditYourMotionModel` (fine-tuned, or the base for the control).
        case: the case arrays (``frames`` (F, S, S, 3) uint8, ``keypoints`` (F, 18, 3), ``prompt``).
        target_keypoints: ``(F, 18, 3)`` COCO-18 keypoints in the case's pixels, already aligned (Algorithm 1).
        steps / inversion_steps: DDIM sampling / inversion steps (inversion default: ``steps``).
        controlnet_scale: the pose ControlNet's scale.
        guidance_scale: 1 (the paper); > 1 adds an empty-prompt branch (not the paper's setting).
        eta: DDIM eta (0: deterministic).
        inversion_model: the model that inverts (None: ``model``; the recipe's ``inversion_model: base`` passes the
            un-fine-tuned one).
        callback: ``callback(done, total)`` after every inversion and sampling step.

    Returns:
        ``(F, S, S, 3)`` uint8 frames.
    """
    from dancegen.core.latents import decode_latents, encode_video
    from dancegen.core.sampling import invert, sample
    from dancegen.methods.edit_your_motion.data import encode_prompt, frames_to_tensor, pose_images

    frames = case["frames"]
    f, size = frames.shape[0], frames.shape[1]
    if target_keypoints.shape[0] != f:
        raise ValueError(f"target has {target_keypoints.shape[0]} frames, the source {f}")
    p = next(model.unet.parameters())
    inv = inversion_model or model
    inversion_steps = int(inversion_steps or steps)
    total = inversion_steps + steps
    done = [0]

    def tick(*_):
        done[0] += 1
        if callback is not None:
            callback(done[0], total)

    z0 = encode_video(model.vae, frames_to_tensor(frames).to(p)).to(p.dtype)
    ctx = encode_prompt(model, str(case["prompt"])).to(p.dtype)
    src = pose_images(case["keypoints"], size).to(p)
    tgt = pose_images(target_keypoints, size).to(p)

    def denoiser(m, poses):
        return lambda z, t, c: m.predict_noise(z.to(p.dtype), t, c, poses.expand(z.shape[0], *poses.shape[1:]),
                                               controlnet_scale)

    z_t = invert(denoiser(inv, src), z0.float(), model.scheduler, inversion_steps, cond=ctx, callback=tick)
    uncond = encode_prompt(model, "").to(p.dtype) if guidance_scale != 1.0 else None
    z = sample(denoiser(model, tgt), z_t, model.scheduler, steps, cond=ctx, uncond=uncond,
               guidance_scale=guidance_scale, eta=eta, callback=tick)
    video = decode_latents(model.vae, z.to(p.dtype))  # (F, 3, S, S) in [0, 1]
    return (video.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
