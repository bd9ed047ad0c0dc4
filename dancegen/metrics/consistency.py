"""Temporal consistency metrics: adjacent-frame MSE / L1 (Dancing Avatar §4 metrics 9-10), flow warping error, and
LatentMan's H_MSE over dense body correspondences (LatentMan spec §4, paper Eq. 9).

Videos are `(F, H, W, 3)` RGB uint8 (or 0-255 float). Pair metrics average over the F-1 adjacent pairs.
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError

REDUCTIONS = ("mean", "sum")


def _video(video, min_frames: int = 2) -> np.ndarray:
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise InputError(f"video must be (F, H, W, 3) RGB, got shape {v.shape}")
    if v.shape[0] < min_frames:
        raise InputError(f"need at least {min_frames} frames, got {v.shape[0]}")
    return v


def _pair_reduce(err: np.ndarray, reduction: str, per_frame: bool):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    axes = tuple(range(1, err.ndim))
    vals = err.mean(axis=axes) if reduction == "mean" else err.sum(axis=axes)
    return vals if per_frame else float(vals.mean())


def adjacent_frame_mse(video, value_range: float = 255.0, reduction: str = "mean", per_frame: bool = False):
    """Frame MSE: mean over adjacent pairs of `mean((x_{t+1} - x_t)^2)` (DA §4 metric 9).

    Protocol: float64; `value_range` 255 keeps the 0-255 scale (DA default), 1 rescales to [0, 1]; reduction "mean"
    averages over H, W, RGB, "sum" adds them (the paper's scale is unknown; compare methods by order and ratio).

    Args:
        video: `(F, H, W, 3)`, F >= 2.
        value_range: 255 or 1.
        reduction: "mean" or "sum" over pixels.
        per_frame: return the `(F-1,)` per-pair array.
    """
    v = _video(video)
    if reduction == "mean":
        from dancegen.metrics.image import mse

        return mse(v[1:], v[:-1], scale=value_range, per_frame=per_frame)
    v = v.astype(np.float64) * (value_range / 255.0)
    d = v[1:] - v[:-1]
    return _pair_reduce(d * d, reduction, per_frame)


def adjacent_frame_l1(video, value_range: float = 255.0, reduction: str = "mean", per_frame: bool = False):
    """Frame L1: mean over adjacent pairs of `mean(|x_{t+1} - x_t|)` (DA §4 metric 10); options as the MSE."""
    v = _video(video)
    if reduction == "mean":
        from dancegen.metrics.image import l1

        return l1(v[1:], v[:-1], mode="mean", per_frame=per_frame) * value_range
    v = v.astype(np.float64) * (value_range / 255.0)
    return _pair_reduce(np.abs(v[1:] - v[:-1]), reduction, per_frame)


def _flows(video: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Forward (t -> t+1) and backward (t+1 -> t) flows `(F-1, 2, H, W)` via dancegen.flow."""
    from dancegen.flow.estimators import estimate_flow

    return estimate_flow(video, method=method, direction="forward"), estimate_flow(video, method=method,
                                                                                   direction="backward")


def occlusion_mask(fwd: np.ndarray, bwd: np.ndarray, alpha1: float = 0.01, alpha2: float = 0.5) -> np.ndarray:
    """Forward-backward consistency (Sundaram et al. 2010, as in Lai et al. 2018's warping error).

    A pixel p of frame t is visible when `|f(p) + b(p + f(p))|^2 < alpha1 (|f|^2 + |b(p + f)|^2) + alpha2`.

    Args:
        fwd: `(N, 2, H, W)` flow t -> t+1 (defined on frame t).
        bwd: `(N, 2, H, W)` flow t+1 -> t (defined on frame t+1).

    Returns:
        `(N, H, W)` bool, True = visible (not occluded).
    """
    from dancegen.flow.warp import backward_warp

    bwd_at = backward_warp(bwd.astype(np.float32), fwd.astype(np.float32))  # b(p + f(p)) sampled on frame t
    s = fwd + bwd_at
    lhs = (s * s).sum(axis=1)
    rhs = alpha1 * ((fwd * fwd).sum(axis=1) + (bwd_at * bwd_at).sum(axis=1)) + alpha2
    return lhs < rhs


def warping_error(video, flow=None, method: str = "dis", backward_flow=None, per_frame: bool = False):
    """Flow warping error: frame t+1 warped back onto frame t, mean squared error on visible pixels (Lai et al. 2018).

    Protocol: forward flow t -> t+1 (estimated with `dancegen.flow.estimate_flow(method)`, DIS by default, unless
    given); `warped_t = backward_warp(x_{t+1}, flow_t)` (bilinear, border padding); visibility from
    forward-backward consistency (`occlusion_mask`); per pair `sum_p M (x_t - warped_t)^2 / (3 sum_p M)` on [0, 1]
    RGB; mean over pairs. Pairs with no visible pixel are skipped.

    Args:
        video: `(F, H, W, 3)` RGB uint8, F >= 2.
        flow: optional forward flow `(F-1, 2, H, W)` in pixels.
        method: flow estimator when flows are not given ("dis", "farneback", "raft").
        backward_flow: optional backward flow `(F-1, 2, H, W)`; needed with `flow` for the occlusion mask,
            otherwise every pixel counts as visible.
        per_frame: return the `(F-1,)` per-pair array (NaN for skipped pairs).
    """
    from dancegen.flow.warp import backward_warp

    v = _video(video)
    n = v.shape[0] - 1
    if flow is None:
        flow, backward_flow = _flows(v, method)
    flow = np.asarray(flow, np.float32)
    if flow.shape != (n, 2, *v.shape[1:3]):
        raise InputError(f"flow must be {(n, 2, *v.shape[1:3])}, got {flow.shape}")
    frames = np.moveaxis(v.astype(np.float32) / 255.0, -1, 1)  # (F, 3, H, W)
    warped = backward_warp(frames[1:], flow)
    if backward_flow is not None:
        vis = occlusion_mask(flow, np.asarray(backward_flow, np.float32))
    else:
        vis = np.ones((n, *v.shape[1:3]), bool)
    err = ((frames[:-1] - warped) ** 2).sum(axis=1) * vis
    cnt = vis.sum(axis=(1, 2)) * 3.0
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.where(cnt > 0, err.sum(axis=(1, 2), dtype=np.float64) / cnt, np.nan)
    if per_frame:
        return vals
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# LatentMan H_MSE
# ----------------------------------------------------------------------------------------------------------------


def _check_iuv(iuv, shape=None) -> np.ndarray:
    a = np.asarray(iuv)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise InputError(f"iuv must be (F, H, W, 3) = (part, u, v), got shape {a.shape}")
    if shape is not None and a.shape[:3] != tuple(shape):
        raise InputError(f"iuv {a.shape[:3]} and video {tuple(shape)} differ in (F, H, W)")
    return a


#: Matching features of `_part_features`: the official code's and the paper's (LatentMan spec §2.4).
IUV_FEATURES = ("official", "paper")


def _part_features(iuv: np.ndarray, ys: np.ndarray, xs: np.ndarray, features: str = "official") -> np.ndarray:
    """Matching features for one part's pixels, U and V on the 0-255 scale.

    "official" (the LatentMan code): [U - mean U, V - mean V, E'], E' = L1 distance in pixels from the part's
    bounding-box centre, rescaled so its maximum over the part is 63.75.
    "paper" (Eq. 3): [U, V, E], E = Euclidean distance in pixels from the part's centroid (unscaled; the paper gives
    no scale).
    """
    u = iuv[ys, xs, 1].astype(np.float64) * 255.0
    v = iuv[ys, xs, 2].astype(np.float64) * 255.0
    if features == "paper":
        e = np.hypot(ys - ys.mean(), xs - xs.mean())
        return np.stack([u, v, e], axis=1)
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    e = np.abs(ys - cy) + np.abs(xs - cx)
    e = e * (63.75 / e.max()) if e.max() > 0 else e
    return np.stack([u - u.mean(), v - v.mean(), e], axis=1)


def iuv_correspondences(iuv_ref: np.ndarray, iuv_cur: np.ndarray, method: str = "hungarian",
                        max_part_pixels: int = 4000, features: str = "official"):
    """Dense correspondences between two frames' body-part coordinate maps (LatentMan spec §2.4).

    For every part index j >= 1 present in both frames, pixels are matched by their `features` (`_part_features`):
    "hungarian" solves the assignment (`scipy.optimize.linear_sum_assignment`, min(|Q|, |S|) pairs, as the paper);
    "nearest" matches every current pixel to its nearest reference pixel in raw (u, v) (fast, not injective).
    Parts larger than `max_part_pixels` fall back to "nearest" to bound the O(n^3) cost.

    Args:
        iuv_ref: `(H, W, 3)` (part index, u, v) of the reference frame (i-1); part 0 = background; u, v in [0, 1].
        iuv_cur: `(H, W, 3)` of the current frame (i).
        method: "hungarian" or "nearest".
        max_part_pixels: size limit for the Hungarian solver.
        features: "official" (default) or "paper" (see `_part_features`); "nearest" ignores it.

    Returns:
        `(y_ref, x_ref, y_cur, x_cur)` int arrays of equal length.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial import cKDTree

    if method not in ("hungarian", "nearest"):
        raise ValueError(f"method must be 'hungarian' or 'nearest', got {method!r}")
    if features not in IUV_FEATURES:
        raise ValueError(f"features must be one of {IUV_FEATURES}, got {features!r}")
    lab_r = np.rint(iuv_ref[..., 0]).astype(np.int64)
    lab_c = np.rint(iuv_cur[..., 0]).astype(np.int64)
    out = [[], [], [], []]
    for j in np.intersect1d(np.unique(lab_r[lab_r > 0]), np.unique(lab_c[lab_c > 0])):
        yr, xr = np.nonzero(lab_r == j)
        yc, xc = np.nonzero(lab_c == j)
        if method == "hungarian" and max(len(yr), len(yc)) <= max_part_pixels:
            fr, fc = _part_features(iuv_ref, yr, xr, features), _part_features(iuv_cur, yc, xc, features)
            cost = np.sqrt(((fc[:, None, :] - fr[None, :, :]) ** 2).sum(-1))
            ic, ir = linear_sum_assignment(cost)
        else:
            tree = cKDTree(iuv_ref[yr, xr, 1:].astype(np.float64))
            _, ir = tree.query(iuv_cur[yc, xc, 1:].astype(np.float64))
            ic = np.arange(len(yc))
        for lst, arr in zip(out, (yr[ir], xr[ir], yc[ic], xc[ic]), strict=False):
            lst.append(arr)
    return tuple(np.concatenate(a) if a else np.zeros(0, np.int64) for a in out)


def _resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_NEAREST) for x in a])


def _resize_bilinear(a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_LINEAR) for x in a])


def h_mse(video, correspondences, size: int | None = 256, method: str = "hungarian", per_frame: bool = False):
    """LatentMan's H_MSE (Eq. 9): colour MSE between consecutive frames along dense body correspondences.

    `H_MSE = 1/(N-1) sum_{i=2..N} 1/|M_i| sum_{(q,s) in M_i} mean_c (I_i[q] - I_{i-1}[s])^2` on the 0-255 scale
    (float64), averaged over RGB and over the N-1 pairs (the paper's i = 1 term is undefined). Background pixels
    never match, so only the character counts.

    Args:
        video: `(F, H, W, 3)` RGB 0-255.
        correspondences: either a body-part coordinate map `iuv (F, H, W, 3)` (part index 0..24 with 0 =
            background, u and v in [0, 1], e.g. from `dancegen synth`), from which `iuv_correspondences(method)`
            computes M; or a list of F-1 tuples `(y_ref, x_ref, y_cur, x_cur)` in pixels of `video` for the pairs
            (i-1, i).
        size: with an iuv map, frames are resized to `size x size` (bilinear) and the map (nearest) before matching
            (LatentMan spec: 256); None keeps the native size. Ignored for explicit correspondences.
        method: "hungarian" or "nearest" (see `iuv_correspondences`).
        per_frame: return the `(F-1,)` per-pair array (NaN for pairs with no correspondence).
    """
    v = _video(video)
    if isinstance(correspondences, (list, tuple)):
        pairs = list(correspondences)
        if len(pairs) != v.shape[0] - 1:
            raise InputError(f"need {v.shape[0] - 1} correspondence sets, got {len(pairs)}")
        frames = v.astype(np.float64)
    else:
        iuv = _check_iuv(correspondences, v.shape[:3])
        if size is not None and v.shape[1:3] != (size, size):
            v = _resize_bilinear(v, size)
            iuv = _resize_nearest(iuv.astype(np.float32), size)
        frames = v.astype(np.float64)
        pairs = [iuv_correspondences(iuv[i - 1], iuv[i], method=method) for i in range(1, v.shape[0])]
    vals = np.full(len(pairs), np.nan)
    for i, (yr, xr, yc, xc) in enumerate(pairs, start=1):
        if len(yr) == 0:
            continue
        d = frames[i][yc, xc] - frames[i - 1][yr, xr]
        vals[i - 1] = np.mean(d * d)
    if per_frame:
        return vals
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
