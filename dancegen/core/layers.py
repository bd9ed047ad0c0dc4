"""Layers shared by the frame-aware blocks: frame position embedding, FF, q/k/v/out projections, temporal attention.

The pieces that both ``core/stsa.py`` (STSA, Dance-Your-Latents §4.3 / spec §2.3) and ``core/attention.py``
(processors) need live here, so neither of those modules imports the other. This module imports neither.
``TemporalAttention`` (VDM-style per-pixel attention over frames, DYL Table 2 "Temporal"; Edit-Your-Motion §2.2's
temporal attention) is here because both need it: ``stsa.make_temporal_block`` builds it and ``attention`` exports it.
Parameter names are those the classes had in ``stsa`` / ``attention`` (saved models load unchanged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dancegen.core.context import FrameContext

__all__ = [
    "sinusoidal_embedding",
    "FramePosEmb",
    "FeedForward",
    "add_qkvo",
    "resolve_frames",
    "TemporalAttention",
]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal embedding ``[sin, cos]`` of integer positions.

    Args:
        positions: ``(L,)`` integer positions.
        dim: Embedding width; an odd ``dim`` gets one zero column.
        max_period: Longest wavelength.

    Returns:
        ``(L, dim)`` float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class FramePosEmb(nn.Module):
    """Frame positional embedding: sinusoidal frame index -> linear (DYL spec §2.3 choice)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim)

    def forward(self, num_frames: int, device=None, dtype=None) -> torch.Tensor:
        """Return ``(num_frames, dim)`` embeddings of frame indices ``0..num_frames-1``."""
        pos = torch.arange(num_frames, device=device if device is not None else self.proj.weight.device)
        emb = sinusoidal_embedding(pos, self.dim).to(self.proj.weight.dtype)
        out = self.proj(emb)
        return out if dtype is None else out.to(dtype)


class FeedForward(nn.Module):
    """Optional position-wise MLP after attention (GELU, ``mult x`` hidden), last layer zero-initialised."""

    def __init__(self, dim: int, mult: int = 4, zero_init: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mult)
        self.fc2 = nn.Linear(dim * mult, dim)
        if zero_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual MLP: ``x + fc2(gelu(fc1(LN(x))))``, any leading shape ``(..., dim)``."""
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def add_qkvo(module: nn.Module, dim: int, zero_init: bool) -> None:
    """Give `module` the projections `to_q`, `to_k`, `to_v` (no bias) and `to_out`; a zero-initialised `to_out` makes
    the residual block it belongs to the identity at initialisation (inflated models start as the image model)."""
    module.to_q = nn.Linear(dim, dim, bias=False)
    module.to_k = nn.Linear(dim, dim, bias=False)
    module.to_v = nn.Linear(dim, dim, bias=False)
    module.to_out = nn.Linear(dim, dim)
    if zero_init:
        nn.init.zeros_(module.to_out.weight)
        nn.init.zeros_(module.to_out.bias)


def resolve_frames(num_frames: int | FrameContext) -> tuple[int, FrameContext | None]:
    """Accept an int or a ``FrameContext`` as the frame argument of a temporal block.

    Returns:
        ``(F, ctx)`` with ``ctx`` None when an int was given.
    """
    if isinstance(num_frames, FrameContext):
        return int(num_frames.num_frames), num_frames
    return int(num_frames), None


class TemporalAttention(nn.Module):
    """VDM-style temporal attention: every spatial position attends over the F frames of its clip.

    Sub-layer ``x + ZeroLinear(MHA(LN(x + pos_f)))`` (same layout as the STSA sub-layers), optional zero-init
    feed-forward. Identity at initialisation when ``zero_init``.

    Args:
        dim: Channels C.
        heads: Heads.
        zero_init: Zero-initialise the output projection.
        frame_pos_emb: Add the sinusoidal->linear frame embedding.
        ff: Add a feed-forward sub-layer.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, zero_init: bool = True, frame_pos_emb: bool = True, ff: bool = False,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.pos_emb = FramePosEmb(dim) if frame_pos_emb else None
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        add_qkvo(self, dim, zero_init)
        self.ff = FeedForward(dim, zero_init=zero_init) if ff else None

    def forward(self, hidden: torch.Tensor, num_frames: int | FrameContext, height: int | None = None,
                width: int | None = None) -> torch.Tensor:
        """Apply temporal attention.

        Args:
            hidden: ``(B*F, N, C)`` tokens, frame-major per clip.
            num_frames: F or the call's ``FrameContext``.
            height, width: Unused (kept for the common temporal-block signature).

        Returns:
            ``(B*F, N, C)``.
        """
        T, _ = resolve_frames(num_frames)
        if hidden.ndim != 3 or hidden.shape[0] % T:
            raise ValueError(f"hidden {tuple(hidden.shape)} does not match F={T}")
        x = rearrange(hidden, "(b f) n c -> (b n) f c", f=T)
        y = x
        if self.pos_emb is not None:
            y = y + self.pos_emb(T, device=x.device, dtype=x.dtype)
        y = self.norm(y)
        q, k, v = (rearrange(p(y), "s f (hd d) -> s hd f d", hd=self.heads) for p in (self.to_q, self.to_k, self.to_v))
        o = rearrange(F.scaled_dot_product_attention(q, k, v), "s hd f d -> s f (hd d)")
        x = x + self.to_out(o)
        if self.ff is not None:
            x = self.ff(x)
        return rearrange(x, "(b n) f c -> (b f) n c", n=hidden.shape[1])
