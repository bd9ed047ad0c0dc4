"""Spatial-Temporal Subspace Attention (STSA) with subspace shift (Dance-Your-Latents §4.3; spec §2.3-2.6).

The ``T x h x w`` token volume is cut into regular subspaces of ``s = (s_f, s_h, s_w)`` tokens; attention runs inside
each subspace only (Eq. 4). A block is a pair of sub-layers (spec choice): unshifted windows, then windows shifted by
``s // 2`` done as a cyclic roll plus a Swin attention mask so wrapped tokens cannot see each other. Swin's rule for
small maps applies per axis: a side <= its window clips the window to the side and sets that shift to 0. Sides that
are larger but not a multiple of the window are padded; padded tokens are masked out of the real tokens' keys.

Sub-layer: ``x + ZeroLinear(MHA(LN(x + pos_f)))`` with a sinusoidal frame embedding -> linear (§2.3), output
projection zero-initialised so an inserted block is the identity. With motion-flow guidance (MF, §2.6) each half
aligns the whole volume with its own partition's reference frames, rolls, attends in windows, unrolls and restores.

All windows of all clips go through one fused ``F.scaled_dot_product_attention`` call; there are no Python loops
over windows or frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from dancegen.core.align import align_index, clip_window, subspace_align, subspace_restore
from dancegen.core.context import FrameContext

# Shared layers live in core/layers.py (so stsa and attention need not import each other); re-exported here for
# code that imported them from stsa.
from dancegen.core.layers import (
    FeedForward,
    FramePosEmb,
    TemporalAttention,
    add_qkvo,
    resolve_frames,
    sinusoidal_embedding,
)

__all__ = [
    "partition",
    "merge",
    "cyclic_shift",
    "shift_attn_mask",
    "window_layout",
    "sinusoidal_embedding",
    "FramePosEmb",
    "FeedForward",
    "SubspaceAttention",
    "STSABlock",
    "make_temporal_block",
    "resolve_frames",
]

Size3 = tuple[int, int, int]


def partition(x: torch.Tensor, s: Size3) -> torch.Tensor:
    """Split a volume into non-overlapping subspaces.

    Args:
        x: ``(B, T, H, W, C)`` with ``T, H, W`` multiples of ``s``.
        s: ``(s_f, s_h, s_w)``.

    Returns:
        ``(B * nW, s_f*s_h*s_w, C)`` with windows ordered ``(b, nt, nh, nw)`` and tokens ``(st, sh, sw)``.
    """
    st, sh, sw = s
    return rearrange(x, "b (nt st) (nh sh) (nw sw) c -> (b nt nh nw) (st sh sw) c", st=st, sh=sh, sw=sw)


def merge(win: torch.Tensor, s: Size3, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`partition`: ``(B*nW, W, C) -> (B, T, H, W, C)`` for ``shape = (B, T, H, W)``."""
    st, sh, sw = s
    B, T, H, W = shape
    return rearrange(win, "(b nt nh nw) (st sh sw) c -> b (nt st) (nh sh) (nw sw) c", b=B, nt=T // st, nh=H // sh,
                     nw=W // sw, st=st, sh=sh, sw=sw)


def cyclic_shift(x: torch.Tensor, offset: Size3) -> torch.Tensor:
    """Roll ``(B, T, H, W, C)`` by ``-offset`` (Swin's forward shift); ``cyclic_shift(y, -offset)`` undoes it."""
    if not any(offset):
        return x
    return torch.roll(x, shifts=tuple(-int(o) for o in offset), dims=(1, 2, 3))


def _axis_code(P: int, valid: int, shift: int, device=None) -> torch.Tensor:
    """Per rolled position of one axis: bit 0 = wrapped around by the roll, bit 1 = padding."""
    q = torch.arange(P, device=device)
    p = (q + shift) % P
    wrapped = (q + shift) >= P
    return wrapped.long() + 2 * (p >= valid).long()


def shift_attn_mask(T: int, h: int, w: int, s: Size3, offset: Size3, valid: Size3 | None = None,
                    device=None) -> torch.Tensor:
    """Swin attention mask for windows of the rolled (and padded) volume.

    Two tokens of one window may attend to each other iff, on every axis, both or neither wrapped around under
    the roll, and both or neither are padding. For real tokens this equals Swin's three-slice region mask; it is the
    same as partitioning the unrolled volume into windows starting at ``offset + j*s`` clipped to the borders.

    Args:
        T, h, w: Padded volume size (multiples of ``s``).
        s: Window ``(s_f, s_h, s_w)``.
        offset: Shift ``(o_f, o_h, o_w)`` that was rolled by (0 on unshifted axes).
        valid: Real sizes before padding (default: no padding).
        device: Device of the mask.

    Returns:
        Bool ``(nW, W, W)``, True where attention is allowed, windows ordered as in :func:`partition`.
    """
    valid = valid or (T, h, w)
    ct = _axis_code(T, valid[0], offset[0], device)
    ch = _axis_code(h, valid[1], offset[1], device)
    cw = _axis_code(w, valid[2], offset[2], device)
    code = (ct.view(T, 1, 1) * 16 + ch.view(1, h, 1) * 4 + cw.view(1, 1, w)).view(1, T, h, w, 1)
    win = partition(code, s)[..., 0]  # (nW, W)
    return win.unsqueeze(2) == win.unsqueeze(1)


def window_layout(T: int, h: int, w: int, s: Size3, shift: bool) -> tuple[Size3, Size3, Size3]:
    """Effective window, shift and padded size for a ``T x h x w`` volume (Swin clipping, then padding).

    Returns:
        ``(window, offset, padded)``, each ``(frames, height, width)``.
    """
    win, off = [], []
    for size, sz in zip((T, h, w), s, strict=False):
        wv, ov = clip_window(size, int(sz), int(sz) // 2 if shift else 0)
        win.append(wv)
        off.append(ov)
    padded = tuple(int(math.ceil(n / m) * m) for n, m in zip((T, h, w), win, strict=False))
    return tuple(win), tuple(off), padded


class SubspaceAttention(nn.Module):
    """Multi-head attention inside regular (optionally shifted) spatio-temporal subspaces (Eq. 4).

    Owns ``to_q/to_k/to_v`` (no bias, as in diffusers' ``Attention``) and a zero-initialised ``to_out``. The input is
    the already normalised volume; the caller adds the residual.

    Args:
        dim: Channels C.
        heads: Attention heads (``dim % heads == 0``).
        subspace_size: ``(s_f, s_h, s_w)``.
        shift: Shift windows by ``s // 2`` (cyclic roll + Swin mask).
        zero_init: Zero-initialise ``to_out`` (identity residual at init).
    """

    def __init__(self, dim: int, heads: int, subspace_size: Size3 = (4, 4, 4), shift: bool = False,
                 zero_init: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if len(subspace_size) != 3 or min(subspace_size) < 1:
            raise ValueError(f"subspace_size must be three positive ints, got {subspace_size}")
        self.dim, self.heads = dim, heads
        self.subspace_size = tuple(int(v) for v in subspace_size)
        self.shift = bool(shift)
        add_qkvo(self, dim, zero_init)
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def layout(self, T: int, h: int, w: int) -> tuple[Size3, Size3, Size3]:
        """``(window, offset, padded)`` this layer uses for a ``T x h x w`` volume."""
        return window_layout(T, h, w, self.subspace_size, self.shift)

    def frame_offset(self, T: int) -> int:
        """Temporal shift (after clipping) of this layer's partition: the key of its reference frames / flows."""
        return self.layout(T, 1, 1)[1][0]

    def _mask(self, padded: Size3, win: Size3, off: Size3, valid: Size3, device) -> torch.Tensor | None:
        if not any(off) and tuple(padded) == tuple(valid):
            return None
        key = (padded, win, off, valid, str(device))
        m = self._mask_cache.get(key)
        if m is None:
            m = shift_attn_mask(*padded, win, off, valid=valid, device=device)
            if len(self._mask_cache) >= 8:
                self._mask_cache.clear()
            self._mask_cache[key] = m
        return m

    def forward(self, x: torch.Tensor, align_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Attend inside subspaces.

        Args:
            x: ``(B, T, h, w, C)`` normalised tokens.
            align_idx: Optional ``(B, T, h*w)`` align index for this layer's partition (see ``align.align_index``).

        Returns:
            ``(B, T, h, w, C)`` attention output after ``to_out`` (no residual).
        """
        B, T, h, w, C = x.shape
        win, off, padded = self.layout(T, h, w)
        if align_idx is not None:
            x = subspace_align(x.reshape(B, T, h * w, C), align_idx).view(B, T, h, w, C)
        pt, ph, pw = padded
        if (pt, ph, pw) != (T, h, w):
            x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h, 0, pt - T))
        x = cyclic_shift(x, off)
        heads = self.heads
        q, k, v = (rearrange(partition(proj(x), win), "n l (hd d) -> n hd l d", hd=heads)
                   for proj in (self.to_q, self.to_k, self.to_v))
        mask = self._mask(padded, win, off, (T, h, w), x.device)
        if mask is not None:
            mask = mask.unsqueeze(1).repeat(B, 1, 1, 1)  # (B*nW, 1, W, W): windows are ordered (b, nW)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = merge(rearrange(o, "n hd l d -> n l (hd d)"), win, (B, pt, ph, pw))
        o = cyclic_shift(o, tuple(-v for v in off))[:, :T, :h, :w]
        if align_idx is not None:
            o = subspace_restore(o.reshape(B, T, h * w, C), align_idx).view(B, T, h, w, C)
        return self.to_out(o)


def _as_offset_map(obj) -> dict[int, torch.Tensor]:
    if obj is None:
        return {}
    if isinstance(obj, torch.Tensor):
        return {0: obj}
    if isinstance(obj, Mapping):
        return {int(k): v for k, v in obj.items()}
    raise TypeError(f"expected a Tensor or a dict {{frame_offset: Tensor}}, got {type(obj).__name__}")


def _fit_batch(idx: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat an index made for B clips to a batch of k*B clips (e.g. [uncond; cond] under CFG)."""
    if idx.shape[0] == batch:
        return idx
    if batch % idx.shape[0]:
        raise ValueError(f"align index/flow has batch {idx.shape[0]}, which does not divide the clip batch {batch}")
    return idx.repeat(batch // idx.shape[0], *([1] * (idx.ndim - 1)))


class STSABlock(nn.Module):
    """Dance-Your-Latents STSA 3D block: unshifted then shifted subspace attention (spec §2.4 choice).

    Args:
        dim: Channels C of the host transformer.
        heads: Heads (the host block's head count).
        subspace_size: ``(s_f, s_h, s_w)``; paper default ``(4, 4, 4)``, ablations ``(4, 2, 2)``, ``(8, 4, 4)``.
        shift: Add the shifted half (Swin-style, shift ``s // 2``).
        ff: Add a zero-initialised feed-forward sub-layer after the attention pair.
        frame_pos_emb: Add the sinusoidal->linear frame embedding before each LayerNorm.
        norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, subspace_size: Size3 = (4, 4, 4), shift: bool = True, ff: bool = False,
                 frame_pos_emb: bool = True, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.subspace_size = tuple(int(v) for v in subspace_size)
        self.pos_emb = FramePosEmb(dim) if frame_pos_emb else None
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = SubspaceAttention(dim, heads, self.subspace_size, shift=False)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps) if shift else None
        self.attn2 = SubspaceAttention(dim, heads, self.subspace_size, shift=True) if shift else None
        self.ff = FeedForward(dim) if ff else None

    def reference_offsets(self, num_frames: int) -> list[int]:
        """Temporal offsets whose reference-frame flows the MF path needs (see ``align.required_reference_frames``)."""
        offs = [self.attn1.frame_offset(num_frames)]
        if self.attn2 is not None:
            offs.append(self.attn2.frame_offset(num_frames))
        return sorted(set(offs))

    def _align_from_ctx(self, ctx: FrameContext, T: int, h: int, w: int) -> dict[int, torch.Tensor] | None:
        flows = _as_offset_map(ctx.flow_to_ref)
        if not flows:
            return None
        if ctx.flows is None:
            ctx.flows = {}
        out = {}
        for o in self.reference_offsets(T):
            key = (h, w, o)
            if key not in ctx.flows:
                if o not in flows:
                    raise ValueError(f"FrameContext.flow_to_ref has no flow for temporal offset {o} (STSA half with "
                                     f"s_f={self.subspace_size[0]}); pass {{offset: (B, F, 2, H, W)}} for offsets "
                                     f"{self.reference_offsets(T)} (align.required_reference_frames)")
                ctx.flows[key] = align_index(flows[o], h, w)
            out[o] = ctx.flows[key]
        return out

    def forward(self, hidden: torch.Tensor, num_frames: int | FrameContext, height: int, width: int,
                align_idx: torch.Tensor | Mapping[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Apply the block.

        Args:
            hidden: ``(B*F, h*w, C)`` tokens, frame-major per clip.
            num_frames: F, or the call's ``FrameContext`` (then its ``flow_to_ref`` drives MF alignment when
                ``align_idx`` is None; indices are cached in ``ctx.flows[(h, w, offset)]``).
            height: h.
            width: w.
            align_idx: ``(B, F, h*w)`` align index (used by a half whose temporal offset is 0), or
                ``{frame_offset: (B, F, h*w)}`` for both halves. A batch that is a multiple of B (CFG) is tiled.

        Returns:
            ``(B*F, h*w, C)``; equals ``hidden`` at initialisation.
        """
        T, ctx = resolve_frames(num_frames)
        if hidden.ndim != 3 or hidden.shape[0] % T or hidden.shape[1] != height * width:
            raise ValueError(f"hidden {tuple(hidden.shape)} does not match F={T}, h={height}, w={width}")
        x = rearrange(hidden, "(b t) (h w) c -> b t h w c", t=T, h=height)
        B = x.shape[0]
        if align_idx is None and ctx is not None:
            idx_map = self._align_from_ctx(ctx, T, height, width)
        else:
            idx_map = _as_offset_map(align_idx)
        pe = 0.0
        if self.pos_emb is not None:
            pe = self.pos_emb(T, device=x.device, dtype=x.dtype).view(1, T, 1, 1, -1)
        for norm, attn in ((self.norm1, self.attn1), (self.norm2, self.attn2)):
            if attn is None:
                continue
            idx = None
            if idx_map:
                o = attn.frame_offset(T)
                if o not in idx_map:
                    raise ValueError(f"no align index for temporal offset {o}; got offsets {sorted(idx_map)}")
                idx = _fit_batch(idx_map[o], B)
            x = x + attn(norm(x + pe), idx)
        if self.ff is not None:
            x = self.ff(x)
        return rearrange(x, "b t h w c -> (b t) (h w) c")


def make_temporal_block(kind: str, dim: int, heads: int, **kw) -> nn.Module:
    """Build a temporal block with ``forward(hidden (B*F, h*w, C), ctx | num_frames, height, width)``.

    Args:
        kind: ``"stsa"`` (:class:`STSABlock`) or ``"temporal"`` (``layers.TemporalAttention``, also exported by
            ``dancegen.core.attention``).
        dim: Channels.
        heads: Heads.
        **kw: Passed to the block's constructor (e.g. ``subspace_size``, ``shift``, ``ff``, ``frame_pos_emb``).
    """
    if kind == "stsa":
        return STSABlock(dim, heads, **kw)
    if kind == "temporal":
        return TemporalAttention(dim, heads, **kw)
    raise ValueError(f"unknown temporal block kind {kind!r}; expected 'stsa' or 'temporal'")
