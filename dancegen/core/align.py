"""Motion-flow-guided subspace Align & Restore (Dance-Your-Latents §4.4.2; spec dance-your-latents.md §2.5-2.6).

Every token of frame ``k`` moves spatially (it stays in frame ``k``) to where the flow ``F^{k->r(k)}`` carries it in
the reference frame ``r(k)`` of its subspace, so all frames of a subspace share the reference layout and a regular
box partition can run on the aligned volume. Align is a forward scatter with mean reduction on the whole volume
(collisions average, holes keep their own features); Restore is the matching gather, always defined. Zero flow is
the identity, which is the "SA" (no MF) ablation.

Token layout used here: ``(B, F, N, C)`` with ``N = h*w`` row-major (index = y*w + x).
"""

from __future__ import annotations

import torch

__all__ = [
    "clip_window",
    "reference_index",
    "required_reference_frames",
    "align_index",
    "subspace_align",
    "subspace_restore",
]


def clip_window(size: int, window: int, shift: int) -> tuple[int, int]:
    """Swin's rule for small maps: if a side is <= its window, the window becomes the side and the shift 0.

    Args:
        size: Length of the axis (frames, height or width).
        window: Requested window length along it.
        shift: Requested shift (usually ``window // 2``, or 0 for the unshifted partition).

    Returns:
        ``(window, shift)`` actually used along this axis.
    """
    if size <= window:
        return size, 0
    return window, shift


def reference_index(T: int, s_f: int, offset: int = 0) -> torch.Tensor:
    """Central frame ``r = floor((b + e) / 2)`` of each frame's temporal subspace (spec §2.6).

    ``b..e`` (``e`` inclusive) is the contiguous, unwrapped run of real frames that share the frame's window. With a
    shift, windows start at ``offset + j*s_f``; the cyclically wrapped last window splits into two runs (its end and
    the clip's start), each with its own centre, e.g. ``T=16, s_f=4, offset=2``: ``[0,1] -> 0`` and ``[14,15] -> 14``.
    When ``T <= s_f`` the window is clipped to ``T`` with no shift (Swin rule).

    Args:
        T: Number of frames.
        s_f: Temporal subspace size.
        offset: Temporal shift of the partition (0 for the unshifted half, ``s_f // 2`` for the shifted one).

    Returns:
        LongTensor ``(T,)``: reference frame of every frame.
    """
    if T < 1 or s_f < 1:
        raise ValueError(f"T and s_f must be >= 1, got T={T}, s_f={s_f}")
    s_f, offset = clip_window(T, s_f, offset)
    offset = offset % s_f
    k = torch.arange(T)
    start = torch.div(k - offset, s_f, rounding_mode="floor") * s_f + offset
    b = start.clamp(min=0)
    e = (start + s_f - 1).clamp(max=T - 1)
    return torch.div(b + e, 2, rounding_mode="floor")


def required_reference_frames(T: int, s_f: int, shift: bool = True) -> dict[int, torch.Tensor]:
    """Reference frames a caller must provide flows for, keyed by the temporal offset of each STSA half.

    Args:
        T: Number of frames per clip (after any context windowing).
        s_f: Temporal subspace size.
        shift: Whether the STSA block has its shifted half.

    Returns:
        ``{offset: LongTensor (T,)}``; offset 0 always, and ``s_f // 2`` (after clipping) if it differs.
        The flow for key ``o`` is ``F^{k -> ref[o][k]}`` for every frame ``k``.
    """
    out = {0: reference_index(T, s_f, 0)}
    if shift:
        _, off = clip_window(T, s_f, s_f // 2)
        if off not in out:
            out[off] = reference_index(T, s_f, off)
    return out


def align_index(flow_to_ref: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Target grid index of every token under its flow to the reference frame (Eqs. 6-7, psi = nearest).

    Args:
        flow_to_ref: ``(B, F, 2, H, W)`` flow ``(dx, dy)`` from each frame to its reference frame, in pixels of an
            ``H x W`` grid. If ``(H, W) != (h, w)`` it is area-downsampled and its vectors rescaled with
            ``dancegen.flow.warp.resize_flow`` first.
        h: Height of the UNet level.
        w: Width of the UNet level.

    Returns:
        LongTensor ``(B, F, h*w)``: ``idx[b, k, y*w + x] = clamp(round(y + dy), 0, h-1) * w + clamp(round(x + dx),
        0, w-1)``. ``round`` is half-to-even (torch.round).
    """
    if flow_to_ref.ndim != 5 or flow_to_ref.shape[2] != 2:
        raise ValueError(f"flow_to_ref must be (B, F, 2, H, W), got {tuple(flow_to_ref.shape)}")
    B, F = flow_to_ref.shape[:2]
    flow = flow_to_ref.float()
    if tuple(flow.shape[-2:]) != (h, w):
        from dancegen.flow.warp import resize_flow

        flow = resize_flow(flow.reshape(B * F, 2, *flow.shape[-2:]), (h, w), mode="area").reshape(B, F, 2, h, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, w)
    tx = torch.round(xs + flow[:, :, 0]).clamp(0, w - 1).long()
    ty = torch.round(ys + flow[:, :, 1]).clamp(0, h - 1).long()
    return (ty * w + tx).reshape(B, F, h * w)


def _check(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4 or idx.ndim != 3 or tuple(x.shape[:3]) != tuple(idx.shape):
        raise ValueError(f"expected x (B, F, N, C) and idx (B, F, N), got {tuple(x.shape)} and {tuple(idx.shape)}")
    return idx.to(x.device).unsqueeze(-1).expand_as(x)


def subspace_align(x: torch.Tensor, idx: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """Align: move each token to its target position in its own frame (scatter; collisions reduced; holes keep x).

    Args:
        x: ``(B, F, N, C)`` tokens.
        idx: ``(B, F, N)`` target index from :func:`align_index`.
        reduce: ``"mean"`` (spec), ``"sum"``, ``"amax"`` or ``"amin"``: how colliding sources combine.

    Returns:
        ``(B, F, N, C)`` aligned tokens ``X_hat``. Positions reached by no source keep ``x``; reached positions hold
        only the reduction of their sources (``include_self=False``).
    """
    if reduce not in ("mean", "sum", "amax", "amin"):
        raise ValueError(f"reduce must be mean/sum/amax/amin, got {reduce!r}")
    index = _check(x, idx)
    return x.scatter_reduce(2, index, x, reduce=reduce, include_self=False)


def subspace_restore(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Restore: every token reads the output at the position it was aligned to (gather).

    Args:
        y: ``(B, F, N, C)`` outputs computed on the aligned volume.
        idx: ``(B, F, N)`` the index used for the align.

    Returns:
        ``(B, F, N, C)`` with ``out[b, k, p] = y[b, k, idx[b, k, p]]``.
    """
    return torch.gather(y, 2, _check(y, idx))
