"""Temporal smoothing of keypoint jitter: One Euro filter (Casiez et al., CHI 2012), Savitzky-Golay, Gaussian.

Missing joints are handled per track (one joint's x, y over time): gaps of at most `max_gap` frames between two
detections are filled by linear interpolation (x, y and confidence); longer gaps and the ends of a track are left
exactly as they were, and each run of valid frames is smoothed on its own, so nothing is smeared across a long gap
and no joint is invented where the detector lost it for long.
"""

from __future__ import annotations

import math

import numpy as np

from dancegen.pose.sequence import PoseSequence

METHODS = ("one_euro", "savgol", "gaussian")


def fill_short_gaps(tracks: np.ndarray, valid: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate interior gaps of at most `max_gap` frames.

    Args:
        tracks: `(F, N, C)` values (x, y, conf, ...).
        valid: `(F, N)` bool detections.
        max_gap: Longest gap (in frames) that is filled; 0 fills nothing.

    Returns:
        (filled tracks, new valid mask); only interior gaps between two valid frames are touched.
    """
    out, ok = tracks.copy(), valid.copy()
    if max_gap <= 0:
        return out, ok
    f = tracks.shape[0]
    t = np.arange(f)
    for n in range(tracks.shape[1]):
        idx = np.flatnonzero(valid[:, n])
        if len(idx) < 2:
            continue
        gaps = np.diff(idx) - 1
        for k in np.flatnonzero((gaps > 0) & (gaps <= max_gap)):
            a, b = idx[k], idx[k + 1]
            w = ((t[a + 1 : b] - a) / (b - a))[:, None]
            out[a + 1 : b, n] = (1 - w) * tracks[a, n] + w * tracks[b, n]
            ok[a + 1 : b, n] = True
    return out, ok


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau * rate)


def one_euro(
    x: np.ndarray,
    valid: np.ndarray,
    fps: float,
    min_cutoff: float = 1.0,
    beta: float = 0.02,
    d_cutoff: float = 1.0,
    bidirectional: bool = True,
) -> np.ndarray:
    """One Euro filter over time, vectorised over tracks; state restarts after every invalid frame.

    The paper's filter is causal and lags behind fast motion. For offline sequences (`bidirectional=True`, the
    default) the mean of a forward and a time-reversed pass is returned instead: their lags have opposite signs and
    cancel to first order, while a step is still followed within a frame or two by each pass.

    Args:
        x: `(F, N, 2)` positions in pixels.
        valid: `(F, N)` bool.
        fps: Sampling rate (Hz).
        min_cutoff: Cutoff at rest (Hz); lower = smoother when still.
        beta: Speed coefficient (per pixel/s); higher = less lag when moving fast.
        d_cutoff: Cutoff of the speed estimate (Hz).
        bidirectional: Average a forward and a backward pass (zero lag); False = the causal filter.

    Returns:
        `(F, N, 2)` filtered positions (invalid frames copied unchanged).
    """
    fwd = _one_euro_pass(x, valid, fps, min_cutoff, beta, d_cutoff)
    if not bidirectional:
        return fwd
    bwd = _one_euro_pass(x[::-1], valid[::-1], fps, min_cutoff, beta, d_cutoff)[::-1]
    return (fwd + bwd) / 2


def _one_euro_pass(x, valid, fps, min_cutoff, beta, d_cutoff) -> np.ndarray:
    if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
        raise ValueError(
            f"one_euro needs min_cutoff > 0, d_cutoff > 0, beta >= 0 (got {min_cutoff}, {d_cutoff}, {beta})"
        )
    out = x.astype(np.float64).copy()
    x_hat = out[0].copy()
    dx_hat = np.zeros_like(x_hat)
    a_d = _alpha(d_cutoff, fps)
    prev_ok = valid[0].copy()
    for i in range(1, x.shape[0]):
        ok = valid[i]
        cont = ok & prev_ok  # continuing a run; otherwise (re)start the state from the raw sample
        dx = (x[i] - x_hat) * fps
        dx_new = a_d * dx + (1 - a_d) * dx_hat
        speed = np.linalg.norm(dx_new, axis=-1, keepdims=True)
        a = _alpha(min_cutoff + beta * speed, fps)
        filt = a * x[i] + (1 - a) * x_hat
        x_hat = np.where(cont[:, None], filt, x[i])
        dx_hat = np.where(cont[:, None], dx_new, 0.0)
        out[i] = np.where(ok[:, None], x_hat, x[i])
        prev_ok = ok
    return out


def _per_run(x: np.ndarray, valid: np.ndarray, fn, min_len: int) -> np.ndarray:
    """Apply `fn` (filtering along axis 0) to every run of valid frames; tracks sharing a run go in one call."""
    out = x.astype(np.float64).copy()
    groups: dict[tuple[int, int], list[int]] = {}
    for n in range(x.shape[1]):
        for a, b in _runs(valid[:, n]):
            if b - a >= min_len:
                groups.setdefault((int(a), int(b)), []).append(n)
    for (a, b), tracks in groups.items():
        out[a:b, tracks] = fn(out[a:b, tracks])
    return out


def savgol(x: np.ndarray, valid: np.ndarray, window: int = 9, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay filter per run of valid frames (runs shorter than polyorder + 2 are left alone)."""
    from scipy.signal import savgol_filter

    if polyorder < 0 or window < 1:
        raise ValueError(f"invalid savgol window={window}, polyorder={polyorder}")

    def fn(seg):
        w = min(window, len(seg) if len(seg) % 2 else len(seg) - 1)
        if w <= polyorder:
            return seg
        return savgol_filter(seg, w, polyorder, axis=0, mode="interp")

    return _per_run(x, valid, fn, polyorder + 2)


def gaussian(x: np.ndarray, valid: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gaussian filter (sigma in frames) per run of valid frames, edges by nearest-value padding."""
    from scipy.ndimage import gaussian_filter1d

    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return _per_run(x, valid, lambda seg: gaussian_filter1d(seg, sigma, axis=0, mode="nearest"), 2)


def smooth_tracks(
    points: np.ndarray, fps: float, method: str = "one_euro", conf_thr: float = 0.3, max_gap: int = 5, **params
) -> np.ndarray:
    """Smooth `(F, N, 3)` x, y, confidence tracks (see `smooth_poses`)."""
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method {method!r}; choose one of {', '.join(METHODS)}")
    valid = points[..., 2] > conf_thr  # compared in the array's dtype, like PoseSequence.visible
    flat = points.astype(np.float64)
    filled, ok = fill_short_gaps(flat, valid, max_gap)
    xy = filled[..., :2]
    if method == "one_euro":
        xy = one_euro(xy, ok, fps, **params)
    elif method == "savgol":
        xy = savgol(xy, ok, **params)
    else:
        xy = gaussian(xy, ok, **params)
    out = flat.copy()
    out[ok, :2] = xy[ok]
    out[ok, 2] = filled[ok, 2]
    return out.astype(np.float32)


def smooth_poses(
    seq: PoseSequence,
    method: str = "one_euro",
    conf_thr: float = 0.3,
    max_gap: int = 5,
    smooth_hands: bool = True,
    smooth_face: bool = True,
    **params,
) -> PoseSequence:
    """Reduce temporal jitter of a pose sequence.

    Args:
        seq: Poses in any format.
        method: "one_euro" (adapts to speed; params `min_cutoff`=1.0 Hz, `beta`=0.02 per px/s,
            `d_cutoff`=1.0 Hz, `bidirectional`=True), "savgol" (`window`=9, `polyorder`=2) or "gaussian" (`sigma`=1.5 frames).
        conf_thr: Points with confidence <= conf_thr are missing.
        max_gap: Interior gaps of at most this many frames are interpolated (x, y and confidence linearly) and
            then smoothed; longer gaps stay missing, untouched.
        smooth_hands, smooth_face: Also smooth `hands` / `face`.
        **params: Method parameters (above).

    Returns:
        A new PoseSequence; valid points smoothed, short gaps filled, everything else unchanged.
    """

    def run(a: np.ndarray) -> np.ndarray:
        f = a.shape[0]
        return smooth_tracks(a.reshape(f, -1, 3), seq.fps, method, conf_thr, max_gap, **params).reshape(a.shape)

    return seq.replace(
        keypoints=run(seq.keypoints),
        hands=run(seq.hands) if smooth_hands and seq.hands is not None else seq.hands,
        face=run(seq.face) if smooth_face and seq.face is not None else seq.face,
        meta={**seq.meta, "smoothing": {"method": method, "max_gap": max_gap, **params}},
    )


def jitter(points: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean absolute second difference of `(F, N, 2)` positions over frames where three in a row are valid (px)."""
    d2 = np.abs(points[2:] - 2 * points[1:-1] + points[:-2]).sum(-1)
    if valid is not None:
        m = valid[2:] & valid[1:-1] & valid[:-2]
        return float(d2[m].mean()) if m.any() else 0.0
    return float(d2.mean())
