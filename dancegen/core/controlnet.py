"""DisCo ControlNet glue: pose ControlNet + background ControlNet, run per frame, residuals summed (DYL spec §2.2).

Dance-Your-Latents keeps DisCo's disentangled control (paper Eq. 3): a **pose ControlNet** fed the rendered OpenPose
skeleton of each frame, and a **background ControlNet** fed the SD-VAE latent of the masked background (DisCo
``refer_sdvae``). Both are initialised from the image UNet (``ControlNetModel.from_unet``), both take the reference
CLIP embedding as ``encoder_hidden_states`` (DisCo ``forward_sample_multicontrol``), and their residuals are summed and
added to the UNet's skip connections, each scaled by its own conditioning scale (DisCo
``controlnet_conditioning_scale_cond`` / ``_ref``).

The background ControlNet differs from a standard one only in its conditioning embedding: DisCo replaces the 4-layer
image encoder by a single 3x3 conv on the 4-channel latent (no downsampling, no zero conv), initialised from the
UNet's ``conv_in`` (DisCo ``ControlNetConditioningConvin``). ``LatentControlNetModel`` is that model; it saves and
loads like any diffusers ControlNet. Frames are folded into the batch (``(B*F, ...)``, frame-major) so the residuals
line up with ``VideoUNet``'s folded 2D ops; ``frame_chunk`` runs the ControlNets on a few frames at a time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from torch import nn


class LatentConditioningEmbedding(nn.Module):
    """DisCo ``refer_sdvae`` conditioning embedding: one 3x3 conv from the VAE latent to ``block_out_channels[0]``.

    Args:
        in_channels: latent channels (4 for SD).
        out_channels: the ControlNet's first block width (320 for SD-1.5).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        return self.conv_in(conditioning)


class LatentControlNetModel(ControlNetModel):
    """A diffusers ``ControlNetModel`` whose condition is a VAE latent at the sample's resolution (DisCo background).

    Same config and forward as ``ControlNetModel``; ``config.conditioning_channels`` is the latent channel count.
    Build with ``LatentControlNetModel.from_unet(unet)``; ``save_pretrained`` / ``from_pretrained`` round-trip it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_cond_embedding = LatentConditioningEmbedding(
            self.config.conditioning_channels, self.config.block_out_channels[0]
        )

    @classmethod
    def from_unet(
        cls, unet: UNet2DConditionModel, load_weights_from_unet: bool = True, **kwargs
    ) -> LatentControlNetModel:
        """Copy the UNet's encoder half (diffusers ``from_unet``) and init the latent embedding from ``unet.conv_in``.

        Args:
            unet: the image UNet (its ``in_channels`` is also the latent condition's channel count).
            load_weights_from_unet: copy weights (True) or keep random init.
        """
        kwargs.setdefault("conditioning_channels", unet.config.in_channels)
        kwargs.setdefault("conditioning_embedding_out_channels", (unet.config.block_out_channels[0],))
        model = super().from_unet(unet, load_weights_from_unet=load_weights_from_unet, **kwargs)
        if load_weights_from_unet and kwargs["conditioning_channels"] == unet.config.in_channels:
            model.controlnet_cond_embedding.conv_in.load_state_dict(unet.conv_in.state_dict())
        return model


# ConfigMixin reads the accepted config keys from the __init__ signature: expose ControlNetModel's.
LatentControlNetModel.__init__.__signature__ = inspect.signature(ControlNetModel.__init__)


@dataclass
class ControlResiduals:
    """Summed ControlNet residuals for the folded batch, ready for ``VideoUNet.forward``.

    Attributes:
        down: per skip connection, ``(B*F, C_k, H_k, W_k)`` (12 for SD-1.5).
        mid: ``(B*F, C_mid, H_mid, W_mid)``.
    """

    down: list[torch.Tensor]
    mid: torch.Tensor

    def as_kwargs(self) -> dict:
        """``down_block_additional_residuals`` / ``mid_block_additional_residual`` keyword arguments."""
        return {"down_block_additional_residuals": self.down, "mid_block_additional_residual": self.mid}


class DisCoControlNets(nn.Module):
    """Pose + background ControlNets of DisCo, applied frame by frame to a clip.

    Args:
        pose: ControlNet on rendered pose images (RGB in [0, 1], image resolution).
        background: ``LatentControlNetModel`` on the masked-background VAE latent, or None (pose only).
    """

    def __init__(self, pose: ControlNetModel | None, background: ControlNetModel | None = None):
        super().__init__()
        if pose is None and background is None:
            raise ValueError("DisCoControlNets needs at least one ControlNet")
        self.pose = pose
        self.background = background

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        pose: bool = True,
        background: bool = True,
        pose_embedding_channels: tuple[int, ...] = (16, 32, 96, 256),
    ) -> DisCoControlNets:
        """Initialise both ControlNets from the image UNet (DisCo ``Net.__init__``).

        Args:
            unet: the pretrained image UNet (``VideoUNet.unet`` works: it keeps the original module tree).
            pose / background: which ControlNets to build.
            pose_embedding_channels: the pose image encoder widths; each stage after the first halves the
                resolution, so ``len - 1`` halvings must equal the VAE downsampling (3 for SD: 256 px -> 32 latent).
        """
        pose_cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(pose_embedding_channels)) \
            if pose else None
        bg_cn = LatentControlNetModel.from_unet(unet) if background else None
        p = next(unet.parameters())
        out = cls(pose_cn, bg_cn)
        return out.to(device=p.device, dtype=p.dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        pose_images: torch.Tensor | None = None,
        background_latents: torch.Tensor | None = None,
        pose_scale: float = 1.0,
        background_scale: float = 1.0,
        frame_chunk: int | None = None,
    ) -> ControlResiduals | None:
        """Run the ControlNets on every frame and sum their residuals.

        Args:
            sample: ``(B, C, F, H, W)`` noisy latents (or already folded ``(B*F, C, H, W)``; then pass ``(B*F,)``-
                shaped conditions).
            timestep: scalar, ``(B,)`` or ``(B*F,)``.
            encoder_hidden_states: ``(B, L, D)`` reference embedding shared by frames, or ``(B*F, L, D)``.
            pose_images: ``(B, 3, F, Hi, Wi)`` or ``(B*F, 3, Hi, Wi)`` rendered skeletons in [0, 1].
            background_latents: ``(B, 4, H, W)`` (shared by the clip), ``(B, 4, F, H, W)`` or ``(B*F, 4, H, W)``;
                already multiplied by the VAE scaling factor.
            pose_scale / background_scale: conditioning scales (0 skips that ControlNet).
            frame_chunk: run at most this many folded frames at once (memory); None = all at once.

        Returns:
            Summed residuals for the folded batch, or None when no ControlNet ran.
        """
        if sample.ndim == 5:
            b, _, f = sample.shape[:3]
            x = sample.permute(0, 2, 1, 3, 4).reshape(b * f, *sample.shape[1:2], *sample.shape[3:])
        else:
            b, f, x = sample.shape[0], 1, sample
        n = x.shape[0]
        t = _fold_timestep(timestep, b, f, x.device)
        ehs = _fold(encoder_hidden_states, b, f)
        runs = []
        if self.pose is not None and pose_images is not None and pose_scale != 0:
            runs.append((self.pose, _fold(pose_images, b, f), pose_scale))
        if self.background is not None and background_latents is not None and background_scale != 0:
            runs.append((self.background, _fold(background_latents, b, f), background_scale))
        if not runs:
            return None
        step = n if not frame_chunk else int(frame_chunk)
        downs: list[list[torch.Tensor]] = []
        mids: list[torch.Tensor] = []
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            down_sum, mid_sum = None, None
            for net, cond, scale in runs:
                d, m = net(x[sl], t[sl], encoder_hidden_states=ehs[sl], controlnet_cond=cond[sl].to(x.dtype),
                           conditioning_scale=scale, return_dict=False)
                down_sum = list(d) if down_sum is None else [a + c for a, c in zip(down_sum, d, strict=True)]
                mid_sum = m if mid_sum is None else mid_sum + m
            downs.append(down_sum)
            mids.append(mid_sum)
        if len(downs) == 1:
            return ControlResiduals(down=downs[0], mid=mids[0])
        return ControlResiduals(down=[torch.cat(z, 0) for z in zip(*downs, strict=True)], mid=torch.cat(mids, 0))


def _fold_timestep(t: torch.Tensor | float | int, b: int, f: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0 or t.shape[0] == 1:
        return t.reshape(1).expand(b * f)
    if t.shape[0] == b * f:
        return t
    if t.shape[0] == b:
        return t.repeat_interleave(f)
    raise ValueError(f"timestep has {t.shape[0]} entries; expected 1, B={b} or B*F={b * f}")


def _fold(x: torch.Tensor, b: int, f: int) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W); (B, ...) shared -> repeated per frame; (B*F, ...) unchanged."""
    if x.ndim == 5:
        if x.shape[0] != b or x.shape[2] != f:
            raise ValueError(f"condition {tuple(x.shape)} does not match B={b}, F={f}")
        return x.permute(0, 2, 1, 3, 4).reshape(b * f, x.shape[1], *x.shape[3:])
    if x.shape[0] == b * f:
        return x
    if x.shape[0] == b:
        return x.repeat_interleave(f, dim=0)
    raise ValueError(f"condition has batch {x.shape[0]}; expected B={b} or B*F={b * f}")
