"""Image-based optical flow estimators: OpenCV DIS and Farneback, and RAFT-large (DYL §2.5 uses RAFT on pose renders).

All return the DESIGN.md contract `(F-1, 2, H, W)` float32 pixels; "forward" flow[t] maps frame t -> t+1 and is
estimated on the pair (frame t, frame t+1), "backward" flow[t] on (frame t+1, frame t). Timings on this machine
(stack-notes.md §6, 256x256): DIS MEDIUM ~9 ms, Farneback ~30 ms per pair.
"""

from __future__ import annotations

import os

import numpy as np

from dancegen.errors import InputError

METHODS = ("dis", "farneback", "raft")
DIS_PRESETS = ("ultrafast", "fast", "medium")
#: Farneback parameters (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags): OpenCV's sample values.
FARNEBACK_PARAMS = (0.5, 3, 15, 3, 5, 1.2, 0)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (F, H, W, 3) RGB, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] < 2:
        raise InputError(f"flow needs at least 2 frames, got {frames.shape[0]}")
    return frames


def _pairs(n: int, direction: str) -> list[tuple[int, int]]:
    if direction == "forward":
        return [(t, t + 1) for t in range(n - 1)]
    if direction == "backward":
        return [(t + 1, t) for t in range(n - 1)]
    raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")


def estimate_flow(frames, method: str = "dis", direction: str = "forward", **kw) -> np.ndarray:
    """Optical flow between consecutive frames.

    Args:
        frames: `(F, H, W, 3)` uint8 RGB, F >= 2.
        method: "dis" (OpenCV DIS, `preset="medium"`), "farneback" (OpenCV, `FARNEBACK_PARAMS`) or "raft"
            (RAFT-large; kwargs `weights`, `iters=12`, `device="cpu"`, `batch_size=4`, `model`).
        direction: "forward" or "backward".
        **kw: Method options (above).

    Returns:
        `(F-1, 2, H, W)` float32 flow in pixels.
    """
    frames = _check_frames(frames)
    pairs = _pairs(frames.shape[0], direction)
    if method == "dis":
        return estimate_pairs_dis(frames, pairs, **kw)
    if method == "farneback":
        return estimate_pairs_farneback(frames, pairs, **kw)
    if method == "raft":
        return estimate_pairs_raft(frames, pairs, **kw)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _gray(frames: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])


def estimate_pairs_dis(frames, pairs, preset: str = "medium") -> np.ndarray:
    """DIS flow (Kroeger et al. 2016, cv2.DISOpticalFlow) for index pairs (src, dst) of `frames (F, H, W, 3)`."""
    import cv2

    if preset not in DIS_PRESETS:
        raise ValueError(f"preset must be one of {DIS_PRESETS}, got {preset!r}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    gray = _gray(frames)
    out = np.empty((len(pairs), 2, *gray.shape[1:]), dtype=np.float32)
    for n, (a, b) in enumerate(pairs):
        out[n] = dis.calc(gray[a], gray[b], None).transpose(2, 0, 1)
    return out


def estimate_pairs_farneback(frames, pairs, params: tuple = FARNEBACK_PARAMS) -> np.ndarray:
    """Farneback flow (cv2.calcOpticalFlowFarneback with `params`) for index pairs (src, dst)."""
    import cv2

    gray = _gray(frames)
    out = np.empty((len(pairs), 2, *gray.shape[1:]), dtype=np.float32)
    for n, (a, b) in enumerate(pairs):
        out[n] = cv2.calcOpticalFlowFarneback(gray[a], gray[b], None, *params).transpose(2, 0, 1)
    return out


def estimate_pairs_raft(frames, pairs, weights: str | os.PathLike | None = None, iters: int = 12,
                        device: str = "cpu", batch_size: int = 4, model=None) -> np.ndarray:
    """RAFT-large flow for index pairs (src, dst).

    Frames are scaled to [-1, 1] (torchvision's OpticalFlow preset), padded by edge replication to a multiple of 8
    and the flow cropped back.

    Args:
        frames: `(F, H, W, 3)` uint8.
        pairs: (src, dst) frame indices; flow maps src -> dst.
        weights: Checkpoint path (default: `$DANCEGEN_WEIGHTS_DIR/raft/raft_large_C_T_SKHT_V2-ff5fadd5.pth`).
        iters: GRU iterations (12, the DYL choice).
        device: torch device.
        batch_size: Pairs per forward pass.
        model: A ready `RAFT` module (skips loading; used by tests with random weights).

    Raises:
        MissingWeightsError: no checkpoint found (nothing is downloaded).
    """
    import torch
    import torch.nn.functional as F

    from dancegen.flow.raft import load_raft

    if model is None:
        model = load_raft(weights, device=device)
    model = model.eval()
    dev = next(model.parameters()).device
    _, h, w, _ = frames.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    out = np.empty((len(pairs), 2, h, w), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(pairs), batch_size):
            chunk = pairs[s:s + batch_size]
            src = x[[a for a, _ in chunk]].to(dev)
            dst = x[[b for _, b in chunk]].to(dev)
            flow = model(src, dst, num_flow_updates=iters)[-1]
            out[s:s + len(chunk)] = flow[:, :, :h, :w].float().cpu().numpy()
    return out
