"""Motion Attention (MA), the adapter between the pose ControlNet and the UNet (paper §III-B, Eq. 7-8, 15; spec §2.4).

Plain ControlNet adds each residual ``c_k`` to the UNet feature ``u_k`` it belongs to. MA replaces ``c_k`` by

    z1 = c + SelfAttn(LN(c))                                 Eq. 7: the skeleton features attend to each other
    z2 = z1 + Attn(Q = LN(z1), K = V = LN(u))                Eq. 8: queries from the skeleton, keys / values from u
    z3 = TemporalAttn(z2)                                    every token attends over the F frames of its clip
    f  = c + ZeroLinear(z3)                                  Eq. 15; new skip = u + f

Tokens are the ``h * w`` positions of one frame, ``(B*F, h*w, C)``; the temporal sub-layer reshapes to
``(B*h*w, F, C)`` (``core.layers.TemporalAttention``). Pre-LayerNorm and a residual in each sub-layer, ``heads``
heads over an inner width of ``inner_dim_ratio * C`` (spec choices). The output gate starts at zero weight and bias,
so at initialisation MA is the identity on ``c``: the model starts as plain ControlNet (the "w/o MA" ablation) and
keeps the pretrained behaviour at step 0.

`MotionAdapterBank` holds one MA per ControlNet residual (13 in SD-1.5: 12 down + mid), keyed by residual index in
diffusers' order, and is called as the video UNet's ``residual_hook`` (``core.controlnet.control_residuals``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dancegen.core.layers import TemporalAttention


def residual_channels(unet_config: dict) -> list[int]:
    """Channels of a ``UNet2DConditionModel``'s ControlNet residuals: ``conv_in``, every down block's resnets and
    downsampler, then the mid block (diffusers' ``down_block_res_samples`` order)."""
    chans = list(unet_config["block_out_channels"])
    layers = unet_config["layers_per_block"]
    layers = [layers] * len(chans) if isinstance(layers, int) else list(layers)
    out = [chans[0]]
    for i, c in enumerate(chans):
        out += [c] * layers[i]
        if i < len(chans) - 1:
            out.append(c)
    return out + [chans[-1]]


def _inner_dim(channels: int, heads: int, ratio: float) -> int:
    return max(heads, int(round(channels * ratio / heads)) * heads)


class _Attention(nn.Module):
    """Multi-head attention with separate query and key/value inputs and pre-LayerNorms (no bias on q, k, v)."""

    def __init__(self, channels: int, heads: int, inner: int, cross: bool):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels) if cross else None
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(channels, inner, bias=False)
        self.to_v = nn.Linear(channels, inner, bias=False)
        self.to_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q_in = self.norm_q(x)
        kv_in = q_in if self.norm_kv is None else self.norm_kv(context)
        n, lq, _ = q_in.shape
        q, k, v = (p(t).reshape(n, t.shape[1], self.heads, -1).transpose(1, 2)
                   for p, t in ((self.to_q, q_in), (self.to_k, kv_in), (self.to_v, kv_in)))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, lq, -1)
        return x + self.to_out(o)


class MotionAttention(nn.Module):
    """One MA module for residuals of ``channels`` channels (module docstring).

    Args:
        channels: C of the residual and of the UNet feature.
        heads: attention heads (must divide C for the temporal sub-layer).
        inner_dim_ratio: attention width of the self / cross sub-layers as a fraction of C.
    """

    def __init__(self, channels: int, heads: int = 8, inner_dim_ratio: float = 1.0):
        super().__init__()
        if channels % heads:
            raise ValueError(f"Motion Attention: {heads} heads do not divide {channels} channels")
        inner = _inner_dim(channels, heads, inner_dim_ratio)
        self.self_attn = _Attention(channels, heads, inner, cross=False)
        self.cross_attn = _Attention(channels, heads, inner, cross=True)
        self.temporal = TemporalAttention(channels, heads, zero_init=False, frame_pos_emb=True)
        self.gate = nn.Linear(channels, channels)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, control: torch.Tensor, feature: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(B*F, C, h, w)`` ControlNet residual and UNet feature -> the residual to add, same shape."""
        bf, c, h, w = control.shape
        tok = control.flatten(2).transpose(1, 2)  # (B*F, h*w, C)
        u = feature.flatten(2).transpose(1, 2).to(tok.dtype)
        z = self.self_attn(tok)
        z = self.cross_attn(z, u)
        z = self.temporal(z, num_frames)
        out = tok + self.gate(z)
        return out.transpose(1, 2).reshape(bf, c, h, w)


class MotionAdapterBank(nn.ModuleDict):
    """One `MotionAttention` per ControlNet residual index (``"0"`` .. ``"n_down"``); indices without one pass the
    residual through unchanged (plain ControlNet).

    Args:
        channels: the residuals' channels in order (`residual_channels`).
        levels: which indices get a module (None: all).
        heads / inner_dim_ratio: as `MotionAttention`.
    """

    def __init__(self, channels: list[int], levels: Iterable[int] | None = None, heads: int = 8,
                 inner_dim_ratio: float = 1.0):
        chosen = range(len(channels)) if levels is None else sorted(set(int(i) for i in levels))
        bad = [i for i in chosen if not 0 <= i < len(channels)]
        if bad:
            raise ValueError(f"model.motion_adapter.levels {bad} are outside 0..{len(channels) - 1}")
        super().__init__({str(i): MotionAttention(channels[i], heads, inner_dim_ratio) for i in chosen})

    def hook(self, num_frames: Callable[[], int]) -> Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The video UNet's ``residual_hook``: ``(k, c_k, u_k) -> MA_k(c_k, u_k)``; ``num_frames()`` gives F."""

        def residual_hook(k: int, control: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
            module = self[str(k)] if str(k) in self else None
            return control if module is None else module(control, feature, num_frames())

        return residual_hook
