"""Long videos with overlapping context windows, so denoiser memory does not grow with the frame count.

At every denoising step the clip is cut into windows of ``window`` frames that overlap by ``overlap`` frames
(the last window is shifted back to end at the last frame, so every window is full length, as in DYL spec §3:
"the last window overlaps backwards"); the denoiser runs on one window at a time and the per-frame predictions are
blended with weights that sum to 1 per frame. Activation memory is that of one window; only latent-sized
accumulators grow with the frame count. ``overlap=0`` gives DYL's non-overlapping 16-frame windows.

Weightings: "triangular" (w = min(i + 1, n - i) inside a window, the AnimateDiff-style pyramid), "linear" (1 in the
interior, linear cross-fade exactly over each overlap with a neighbour) and "flat" (plain average).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

WEIGHTINGS = ("triangular", "linear", "flat")


def context_windows(num_frames: int, window: int, overlap: int = 0) -> list[slice]:
    """Frame windows covering ``range(num_frames)``.

    Args:
        num_frames: F >= 1.
        window: frames per window (>= 1); F <= window gives one window over all frames.
        overlap: frames shared by consecutive windows, ``0 <= overlap < window``.

    Returns:
        Contiguous ``slice``s in increasing order; every window has ``min(window, F)`` frames, consecutive windows
        share at least ``overlap`` frames (the last one may share more), and every frame is covered.
    """
    if num_frames < 1 or window < 1:
        raise ValueError(f"num_frames and window must be >= 1, got {num_frames}, {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window), got overlap={overlap}, window={window}")
    if num_frames <= window:
        return [slice(0, num_frames)]
    stride = window - overlap
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [slice(s, s + window) for s in starts]


def window_weights(windows: list[slice], num_frames: int, weighting: str = "triangular") -> torch.Tensor:
    """Per-window, per-frame blending weights, normalised so every frame's weights sum to 1.

    Args:
        windows: from ``context_windows``.
        num_frames: F.
        weighting: "triangular" | "linear" | "flat".

    Returns:
        ``(len(windows), F)`` float64 tensor; zero outside each window; columns sum to 1.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    w = torch.zeros(len(windows), num_frames, dtype=torch.float64)
    for k, sl in enumerate(windows):
        n = sl.stop - sl.start
        i = torch.arange(n, dtype=torch.float64)
        if weighting == "triangular":
            local = torch.minimum(i + 1, n - i)
        elif weighting == "flat":
            local = torch.ones(n, dtype=torch.float64)
        else:
            local = torch.ones(n, dtype=torch.float64)
            left = windows[k - 1].stop - sl.start if k > 0 else 0
            right = sl.stop - windows[k + 1].start if k + 1 < len(windows) else 0
            if left > 0:
                local[:left] = torch.minimum(local[:left], (i[:left] + 1) / (left + 1))
            if right > 0:
                local[n - right:] = torch.minimum(local[n - right:], (n - i[n - right:]) / (right + 1))
        w[k, sl] = local
    total = w.sum(0)
    if (total <= 0).any():
        raise ValueError("windows do not cover every frame")
    return w / total


def windowed_unet_call(
    fn: Callable[[torch.Tensor, slice], torch.Tensor],
    latents: torch.Tensor,
    windows: list[slice],
    weighting: str = "triangular",
    frame_dim: int = 2,
) -> torch.Tensor:
    """Evaluate ``fn`` window by window and blend the overlapping predictions.

    Args:
        fn: ``fn(latents_window, frame_slice) -> prediction`` of the window's shape; the slice lets the caller cut
            per-frame conditioning (pose images, flows, ControlNet inputs) to the same frames.
        latents: ``(B, C, F, H, W)`` (frames on ``frame_dim``).
        windows: from ``context_windows``.
        weighting: see ``window_weights``.
        frame_dim: the frame axis of ``latents`` and of ``fn``'s output.

    Returns:
        Blended prediction with ``latents``' shape; equal to ``fn(latents, slice(0, F))`` for a single window.
    """
    f = latents.shape[frame_dim]
    if len(windows) == 1 and windows[0].start == 0 and windows[0].stop == f:
        return fn(latents, windows[0])
    weights = window_weights(windows, f, weighting)
    out = None
    view = [1] * latents.ndim
    for k, sl in enumerate(windows):
        pred = fn(latents.narrow(frame_dim, sl.start, sl.stop - sl.start), sl)
        if out is None:  # accumulate half-precision predictions in fp32
            acc = torch.float32 if pred.dtype in (torch.float16, torch.bfloat16) else pred.dtype
            out = torch.zeros(*pred.shape[:frame_dim], f, *pred.shape[frame_dim + 1:], dtype=acc, device=pred.device)
        view[frame_dim] = sl.stop - sl.start
        wk = weights[k, sl].to(device=pred.device, dtype=out.dtype).view(view)
        out.narrow(frame_dim, sl.start, sl.stop - sl.start).add_(pred.to(out.dtype) * wk)
    return out.to(pred.dtype)


def windowed(
    unet_fn: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor],
    window: int,
    overlap: int = 0,
    weighting: str = "triangular",
    slice_cond: Callable[[Any, slice], Any] | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """Wrap a ``unet_fn(latents, t, cond)`` for ``schedulers.ddim_sample`` so each call runs window by window.

    Args:
        unet_fn: the full-clip denoiser.
        window / overlap / weighting: see ``context_windows`` and ``window_weights``.
        slice_cond: ``slice_cond(cond, frame_slice) -> cond`` for per-frame conditioning; None passes ``cond``
            unchanged (conditioning shared by all frames).

    Returns:
        A denoiser with the same signature whose peak memory is that of one window.
    """

    def call(latents: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        wins = context_windows(latents.shape[2], window, overlap)
        return windowed_unet_call(
            lambda z, sl: unet_fn(z, t, slice_cond(cond, sl) if slice_cond else cond), latents, wins, weighting
        )

    return call
