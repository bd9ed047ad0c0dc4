"""CLIP image conditioning of the reference image (sd-image-variations style, DisCo ``combine_clip_local``).

DYL spec §2.2 [DisCo-code]: the cross-attention context is the CLIP ViT-L/14 feature of the masked foreground.
Two modes:

- "global": ``CLIPVisionModelWithProjection(...).image_embeds`` as a single token ``(B, 1, 768)`` -- what
  ``lambdalabs/sd-image-variations-diffusers`` was trained with.
- "local" (DisCo ``combine_clip_local``): all last-layer tokens (257 for ViT-L/14 at 224 px) -> the vision model's
  ``post_layernorm`` -> a trainable linear layer initialised from ``visual_projection`` (1024 -> 768, no bias),
  giving ``(B, 257, 768)``. At initialisation token 0 (CLS) equals the global ``image_embeds``.

Classifier-free guidance (DisCo ``drop_ref``): training replaces the reference of a sample with probability p by the
unconditional reference, and sampling uses it for the unconditional branch. The spec's choice is a zero embedding
("zero_embed"); "zero_image" encodes an all-zero (normalised) image instead, as DisCo's
``clip_encode_image_local_uncond`` does.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REFERENCE_MODES = ("global", "local")
UNCOND_MODES = ("zero_embed", "zero_image")


def clip_preprocess(
    images: torch.Tensor, size: int = 224, value_range: tuple[float, float] = (-1.0, 1.0)
) -> torch.Tensor:
    """Resize to ``size x size`` (bicubic) and normalise with the CLIP mean/std, on tensors (no PIL).

    Follows the sd-image-variations model card (square resize to 224, bicubic, no centre crop).

    Args:
        images: ``(B, 3, H, W)`` RGB in ``value_range``.
        size: the vision model's ``image_size``.
        value_range: range of ``images`` ((-1, 1) for model-space tensors, (0, 1) for ToTensor images).

    Returns:
        ``(B, 3, size, size)`` float32 CLIP input.
    """
    lo, hi = value_range
    x = (images.float() - lo) / (hi - lo)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ReferenceProjection(ModelMixin, ConfigMixin):
    """DisCo's trainable ``refer_clip_proj``: ``Linear(in_dim, out_dim, bias=False)`` on post-LN CLIP tokens."""

    @register_to_config
    def __init__(self, in_dim: int = 1024, out_dim: int = 768):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


class ReferenceEncoder(nn.Module):
    """Reference image -> cross-attention context ``(B, L, D)`` with a CLIP vision tower (frozen) + optional proj.

    Args:
        image_encoder: a transformers ``CLIPVisionModelWithProjection`` (``image_encoder/`` of sd-image-variations).
        mode: "global" (``(B, 1, D)`` image embeds) or "local" (``(B, N+1, D)`` projected tokens).
        projection: the local-mode projection; None builds one initialised from ``visual_projection``.
        uncond: "zero_embed" or "zero_image" (see module docstring).
    """

    def __init__(self, image_encoder: nn.Module, mode: str = "local", projection: ReferenceProjection | None = None,
                 uncond: str = "zero_embed"):
        super().__init__()
        if mode not in REFERENCE_MODES:
            raise ValueError(f"mode must be one of {REFERENCE_MODES}, got {mode!r}")
        if uncond not in UNCOND_MODES:
            raise ValueError(f"uncond must be one of {UNCOND_MODES}, got {uncond!r}")
        self.image_encoder = image_encoder
        self.mode = mode
        self.uncond_mode = uncond
        self.image_encoder.requires_grad_(False)
        self.projection = None
        if mode == "local":
            if projection is None:
                vp = image_encoder.visual_projection
                projection = ReferenceProjection(vp.in_features, vp.out_features)
                projection.proj.load_state_dict(vp.state_dict())
                p = next(image_encoder.parameters())
                if p.device.type != "cpu" or p.dtype != torch.float32:  # new modules are fp32 on CPU
                    projection = projection.to(device=p.device, dtype=p.dtype)
            self.projection = projection

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.config.image_size)

    @property
    def num_tokens(self) -> int:
        """Context length L: 1 (global) or patches + CLS (local; 257 for ViT-L/14 at 224 px)."""
        cfg = self.image_encoder.config
        return 1 if self.mode == "global" else (cfg.image_size // cfg.patch_size) ** 2 + 1

    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised ``(B, 3, S, S)`` pixels -> context ``(B, L, D)``."""
        enc = self.image_encoder
        pixel_values = pixel_values.to(device=enc.device, dtype=enc.dtype)
        if self.mode == "global":
            return enc(pixel_values=pixel_values).image_embeds.unsqueeze(1)
        hidden = enc(pixel_values=pixel_values).last_hidden_state
        hidden = enc.vision_model.post_layernorm(hidden)
        return self.projection(hidden.to(self.projection.dtype))

    def uncond_embedding(self, like: torch.Tensor) -> torch.Tensor:
        """The unconditional context for ``like``'s batch: zeros, or the encoding of an all-zero input image."""
        if self.uncond_mode == "zero_embed":
            return torch.zeros_like(like)
        zeros = torch.zeros(like.shape[0], 3, self.image_size, self.image_size, device=like.device)
        return self.encode_pixels(zeros).to(like.dtype)

    def forward(
        self,
        images: torch.Tensor,
        value_range: tuple[float, float] = (-1.0, 1.0),
        drop_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Encode reference images, dropping each one with probability ``drop_prob`` (training CFG).

        Args:
            images: ``(B, 3, H, W)`` RGB in ``value_range`` (the masked foreground in DisCo).
            value_range: input range.
            drop_prob: DisCo ``drop_ref`` probability (0.05 in the CFG recipe); 0 at inference.
            generator: for the drop decisions (reproducible training).

        Returns:
            ``(B, L, D)`` context; dropped rows are the unconditional context.
        """
        ctx = self.encode_pixels(clip_preprocess(images, self.image_size, value_range))
        if drop_prob > 0:  # (only then is the unconditional context computed: a CLIP pass in zero_image mode)
            from dancegen.core.guidance import drop_condition

            ctx = drop_condition(ctx, drop_prob, generator, null=self.uncond_embedding(ctx))
        return ctx

    def cond_uncond(self, images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)`` contexts for classifier-free guidance at sampling time."""
        cond = self(images, value_range)
        return cond, self.uncond_embedding(cond)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The projection's parameters (DYL stage 2 trains it; the CLIP tower stays frozen)."""
        return [] if self.projection is None else list(self.projection.parameters())


def tiny_clip_vision_config(**overrides):
    """A tiny ``CLIPVisionConfig`` (32 px, patch 8 -> 17 tokens, width 32) for tests and smoke recipes."""
    from transformers import CLIPVisionConfig

    cfg = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
               patch_size=8, projection_dim=32)
    cfg.update(overrides)
    return CLIPVisionConfig(**cfg)
