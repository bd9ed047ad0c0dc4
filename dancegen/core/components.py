"""The parts of an SD-1.x pipeline, however they were loaded (a diffusers folder or a single-file checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SD15Components:
    """The parts of an SD-1.x pipeline loaded from one folder.

    Attributes:
        unet: ``UNet2DConditionModel``.
        vae: ``AutoencoderKL``.
        scheduler: ``DDIMScheduler`` built from ``scheduler/`` (whatever scheduler class the folder names).
        image_encoder: ``CLIPVisionModelWithProjection`` (sd-image-variations) or None.
        text_encoder / tokenizer: ``CLIPTextModel`` / ``CLIPTokenizer`` (text SD-1.5) or None.
        path: the folder.
    """

    unet: Any
    vae: Any
    scheduler: Any
    image_encoder: Any = None
    text_encoder: Any = None
    tokenizer: Any = None
    path: str = ""

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def models(self) -> dict[str, Any]:
        """The torch modules present, by name."""
        return {k: v for k, v in (("image_encoder", self.image_encoder), ("text_encoder", self.text_encoder),
                                  ("unet", self.unet), ("vae", self.vae)) if v is not None}


class UNetDeviceMixin:
    """For a diffusers ``DiffusionPipeline`` that registers plain ``nn.Module`` components (a ``ControlNetSet``, a
    reference encoder): ``DiffusionPipeline.device`` / ``dtype`` read ``.device`` of every module, which those lack,
    so the pipeline's ``unet`` answers for it. Put it before ``DiffusionPipeline`` in the bases."""

    @property
    def device(self):
        return next(self.unet.parameters()).device

    @property
    def dtype(self):
        return next(self.unet.parameters()).dtype


class TextControlNetPipelineMixin(UNetDeviceMixin):
    """What every text-to-image + ControlNet pipeline here shares (LatentMan, Dancing Avatar): the SD-1.x parts and
    a ``core.controlnet.ControlNetSet`` registered under diffusers' usual names, the VAE's scale factor, and one
    cached ``core.text.PromptEncoder``. Put it before ``DiffusionPipeline`` in the bases."""

    model_cpu_offload_seq = "text_encoder->controlnets->unet->vae"

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, controlnets):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler, controlnets=controlnets)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._prompts = None

    @property
    def prompt_encoder(self):
        """The prompt encoder of this pipeline's text encoder and tokenizer (made once; it caches encodings)."""
        from dancegen.core.text import PromptEncoder

        if self._prompts is None:
            self._prompts = PromptEncoder(self.text_encoder, self.tokenizer)
        return self._prompts
