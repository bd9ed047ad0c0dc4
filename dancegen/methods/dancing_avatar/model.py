"""Dancing Avatar's networks: the frozen SD-1.5 base, its OpenPose ControlNet and the previous-frame module (spec §2.3).

The previous-frame (inter-frame alignment) module is a ControlNet made from the base UNet's encoder: with
``inter.condition: image`` the paper's ``ControlNetModel.from_unet(unet, conditioning_channels=3)`` on the previous
RGB frame in [0, 1]; with ``latent`` (the toy recipe) a `core.controlnet.LatentControlNetModel` on the previous frame's
VAE latent (its 3x3 condition conv starts as the UNet's ``conv_in``, so the condition reaches the copied encoder from
the first step; the image embedding's zero-initialised last conv kept the toy ControlNets of `t2i` blind to their
condition for hundreds of steps). Both are named ControlNets of one `core.controlnet.ControlNetSet` (``pose``,
``prev``) run with frames folded into the batch.

A Dancing Avatar model folder (`LAYOUT`) holds the resolved recipe (``dancing_avatar.yaml``: which base and pose
ControlNet it was trained with) and ``controlnet_prev/`` (a diffusers ControlNet folder); `train` writes one to
``RUN/model`` and the bundled ``dancing-avatar-tiny`` is one.
"""

from __future__ import annotations

import os
from pathlib import Path

from dancegen.core.method_model import MethodModel
from dancegen.core.model_folder import MODEL_SUBDIR, FolderLayout  # noqa: F401  (MODEL_SUBDIR: train imports it)

PREV_SUBDIR = "controlnet_prev"
T2I_BUNDLED, POSE_BUNDLED, PREV_BUNDLED = "t2i-tiny", "controlnet-openpose-tiny", "dancing-avatar-tiny"
LAYOUT = FolderLayout(
    method="dancing-avatar",
    recipe_file="dancing_avatar.yaml",
    required=(PREV_SUBDIR,),
    bundled=PREV_BUNDLED,
    how_to_get="train one with `dancegen train --recipe recipes/dancing_avatar/prev_frame_tiny.yaml -o RUN` "
               "(the bundled one belongs to t2i-tiny)",
)


class PrevFrameModel(MethodModel):
    """What one training step needs: the frozen base UNet and text encoder, and the ControlNet set (``pose`` frozen,
    ``prev`` trained)."""

    def __init__(self, unet, text_encoder, controlnets):
        super().__init__()
        self.unet, self.text_encoder, self.controlnets = unet, text_encoder, controlnets


def new_prev_controlnet(unet, condition: str, vae_halvings: int):
    """A fresh previous-frame module copied from ``unet``'s encoder (residual outputs at zero: a no-op at init)."""
    from diffusers import ControlNetModel

    from dancegen.core.controlnet import LatentControlNetModel
    from dancegen.core.tiny import controlnet_embedding_channels

    if condition == "latent":
        return LatentControlNetModel.from_unet(unet)
    kw = {}
    if unet.config.block_out_channels[0] < 320:  # a small base: a small embedding with one halving per VAE level
        kw["conditioning_embedding_out_channels"] = controlnet_embedding_channels(vae_halvings)
    # SD-1.5 (three VAE halvings): ControlNet's own (16, 32, 96, 256) embedding, as lllyasviel's nets
    return ControlNetModel.from_unet(unet, conditioning_channels=3, **kw)


def load_base(ref: str | None, allow_download: bool = False, dtype=None):
    """The SD-1.5 components of a base reference (None: bundled t2i-tiny), in ``dtype`` (default fp32)."""
    import torch

    from dancegen.core.weights import load_sd15_components, resolve_model
    from dancegen.errors import InputError

    where = resolve_model(ref or T2I_BUNDLED, kind="sd15", allow_download=allow_download)
    comps = load_sd15_components(where, dtype=dtype or torch.float32)  # bundled weights are fp16
    if comps.text_encoder is None or comps.tokenizer is None:
        raise InputError(f"{ref}: Dancing Avatar needs a text-to-image model with text_encoder/ and tokenizer/")
    return comps


def load_inpaint_unet(ref: str, base_unet, allow_download: bool = False, dtype=None):
    """The UNet of an SD-1.x inpainting model (``model.inpaint``) for the background plate, checked against the base:
    it takes the base's latents plus a mask and the masked image's latents (``in_channels`` = latent channels * 2 + 1,
    9 for SD-1.5 inpainting) and the same text embeddings (``cross_attention_dim``)."""
    import torch
    from diffusers import UNet2DConditionModel

    from dancegen.core.weights import resolve_model
    from dancegen.errors import InputError

    if Path(ref).is_dir():  # an inpainting model folder (its unet/ is what is used) or that unet/ folder itself
        where = resolve_model(ref, kind="any")
        sub = "unet" if Path(ref, "unet", "config.json").is_file() else None
        if sub is None and not Path(ref, "config.json").is_file():
            raise InputError("model.inpaint needs an SD-1.x inpainting model folder (unet/config.json) or its unet/ "
                             "folder", ref)
    else:  # a hub id (cached, or downloaded when allowed)
        where, sub = resolve_model(ref, kind="sd15", allow_download=allow_download), "unet"
        if where.source == "single-file":
            raise InputError("model.inpaint takes an inpainting model folder (diffusers layout, unet/ inside) or a hub "
                             "id, not a single checkpoint file", ref)
    unet = UNet2DConditionModel.from_pretrained(where.location, subfolder=sub, dtype=dtype or torch.float32,
                                                local_files_only=where.source != "hub")
    latent = base_unet.config.in_channels
    if unet.config.in_channels != 2 * latent + 1:
        raise InputError(f"model.inpaint is not an inpainting model for this base: its UNet takes "
                         f"{unet.config.in_channels} input channels, an inpainting UNet takes {2 * latent + 1} "
                         f"(e.g. stable-diffusion-v1-5/stable-diffusion-inpainting)", ref)
    if unet.config.cross_attention_dim != base_unet.config.cross_attention_dim:
        raise InputError(f"model.inpaint's UNet reads {unet.config.cross_attention_dim}-d text embeddings, the base's "
                         f"text encoder gives {base_unet.config.cross_attention_dim}-d", ref)
    return unet.eval().requires_grad_(False)


def load_controlnets(pose: str | None, prev: str | None, allow_download: bool = False, dtype=None):
    """A ``ControlNetSet`` with ``pose`` (None: bundled controlnet-openpose-tiny) and ``prev`` (None: absent)."""
    import torch

    from dancegen.core.controlnet import ControlNetSet

    nets = ControlNetSet.from_pretrained_folders({"pose": pose or POSE_BUNDLED, "prev": prev},
                                                 allow_download=allow_download, dtype=dtype or torch.float32)
    return nets.eval().requires_grad_(False)


def find_model_folder(path: str | os.PathLike) -> Path | None:
    """The Dancing Avatar model folder at ``path`` or ``path/model``, or None."""
    return LAYOUT.find(path)


def bundled_prev_folder() -> Path | None:
    """The bundled previous-frame module's folder (``dancing-avatar-tiny/controlnet_prev``) when installed."""
    found = LAYOUT.find(LAYOUT.bundled_path())
    return found / PREV_SUBDIR if found is not None else None


def make_scheduler(cfg, base_scheduler):
    """DPM-Solver++ 2M (the paper's "DPM adaptive", spec §2.4) or DDIM (`cfg.sampler.scheduler` of a
    `DancingAvatarConfig`), from the base's scheduler config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if cfg.sampler.scheduler == "ddim":
        return DDIMScheduler.from_config(base_scheduler.config)
    return DPMSolverMultistepScheduler.from_config(base_scheduler.config, algorithm_type="dpmsolver++",
                                                   solver_order=2)
