"""Pose-alignment metrics between two PoseSequences: Dancing Avatar's Pose MSE (DA spec §4 metric 7, on coordinates and,
as its second variant, on the drawn pose maps) and a keypoint distance error. Pose extraction from generated frames happens elsewhere (`dancegen.pose.extract`); these only compare.
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError

NORMALISE = ("size", "none")


def _aligned(pred, gt, normalise: str, conf_thr: float):
    """`(dx, dy)` differences `(F, J, 2)` and the joint mask `(F, J)` (confident in both)."""
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE}, got {normalise!r}")
    if pred.format != gt.format:
        raise InputError(f"pose formats differ: pred {pred.format!r}, gt {gt.format!r}; convert first")
    if pred.num_frames != gt.num_frames:
        raise InputError(f"pose sequences differ in length: pred {pred.num_frames}, gt {gt.num_frames}")
    if normalise == "size":
        a = pred.xy / np.array([pred.width, pred.height], np.float64)
        b = gt.xy / np.array([gt.width, gt.height], np.float64)
    else:
        if (pred.width, pred.height) != (gt.width, gt.height):
            pred = pred.resized(gt.width, gt.height)
        a, b = pred.xy.astype(np.float64), gt.xy.astype(np.float64)
    mask = pred.visible(conf_thr) & gt.visible(conf_thr)
    return a - b, mask


def _frame_reduce(per_joint: np.ndarray, mask: np.ndarray, per_frame: bool):
    cnt = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = np.where(cnt > 0, (per_joint * mask).sum(axis=1) / cnt, np.nan)
    if per_frame:
        return vals
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def pose_mse(pred, gt, normalise: str = "size", conf_thr: float = 0.3, scale: float = 1.0, per_frame: bool = False):
    """Pose MSE (DA §4 metric 7): mean squared keypoint-coordinate error between detected and driving poses.

    Protocol (DA spec GAP, our choice): coordinates divided by the image width and height (normalise "size",
    so x, y in [0, 1]) or kept in pixels of `gt`'s size ("none"); per frame the mean over joints confident
    (> `conf_thr`) in both sequences and over the x and y coordinates of the squared difference; frames with no
    common joint are skipped; mean over frames; times `scale` (DA's `pose_mse_scale`; the paper's units are unknown).

    Args:
        pred: PoseSequence detected on the generated video.
        gt: PoseSequence that drove the generation, same format and frame count.
        normalise: "size" or "none".
        conf_thr: confidence threshold for a joint to count.
        scale: multiplier on the result.
        per_frame: return the `(F,)` array (NaN for skipped frames).
    """
    d, mask = _aligned(pred, gt, normalise, conf_thr)
    vals = _frame_reduce((d * d).mean(axis=-1), mask, per_frame)
    return vals * scale


def pose_keypoint_error(pred, gt, normalise: str = "size", conf_thr: float = 0.3, per_frame: bool = False):
    """Mean Euclidean keypoint distance over joints confident in both (same protocol as `pose_mse`, not squared).

    With normalise "size" the distance is in image-size units (x / W, y / H); with "none" in pixels of `gt`.
    """
    d, mask = _aligned(pred, gt, normalise, conf_thr)
    return _frame_reduce(np.sqrt((d * d).sum(axis=-1)), mask, per_frame)


def pose_map_mse(pred, gt, per_frame: bool = False):
    """Pose MSE, the spec's second variant (DA spec §4 metric 7): mean squared difference of the two sequences'
    OpenPose maps (`dancegen.pose.render.render_control_maps`, the ControlNet drawing) on [0, 1], drawn at `gt`'s size.

    Unlike `pose_mse` it needs no joint-by-joint confidence match: a missing limb counts as the whole limb drawn in one
    map and not the other.

    Args:
        pred: PoseSequence detected on the generated video.
        gt: PoseSequence that drove the generation, same format and frame count.
        per_frame: return the `(F,)` array.
    """
    from dancegen.pose.render import render_control_maps

    if pred.format != gt.format:
        raise InputError(f"pose formats differ: pred {pred.format!r}, gt {gt.format!r}; convert first")
    if pred.num_frames != gt.num_frames:
        raise InputError(f"pose sequences differ in length: pred {pred.num_frames}, gt {gt.num_frames}")
    if (pred.width, pred.height) != (gt.width, gt.height):
        pred = pred.resized(gt.width, gt.height)
    a = render_control_maps(pred).astype(np.float64) / 255.0
    b = render_control_maps(gt).astype(np.float64) / 255.0
    vals = ((a - b) ** 2).mean(axis=(1, 2, 3))
    return vals if per_frame else float(vals.mean())


def keypoint_scores(pred: np.ndarray, gt: np.ndarray, size: float, threshold: float = 0.05,
                    use_confidence: bool = True) -> dict[str, float]:
    """Keypoint error and PCK of `(F, J, 3)` (x, y, confidence) arrays against ground truth with visibility flags.

    Over the joints visible in `gt` (confidence > 0): `error_px` and `error` (divided by `size`, e.g. the image
    side) are the mean distance; `pck` the fraction within `threshold * size` (PCK@0.05 by default: 3.2 px at 64 px).
    With `use_confidence`, a visible joint that `pred` leaves out (confidence 0) is a miss for `pck` and is not in the
    error, and `recall` and `false_positive_rate` (joints reported that `gt` hides) say how often that happens;
    without it every visible joint is scored at `pred`'s location whatever its confidence.
    """
    vis = gt[..., 2] > 0
    found = pred[..., 2] > 0 if use_confidence else np.ones(vis.shape, bool)
    both = vis & found
    d = np.linalg.norm(pred[..., :2].astype(np.float64) - gt[..., :2], axis=-1)
    out = {
        "error_px": float(d[both].mean()) if both.any() else float("nan"),
        "error": float(d[both].mean() / size) if both.any() else float("nan"),
        "pck": float((both & (d <= threshold * size)).sum() / max(vis.sum(), 1)),
    }
    if use_confidence:
        out["recall"] = float(both.sum() / max(vis.sum(), 1))
        out["false_positive_rate"] = float((found & ~vis).sum() / max((~vis).sum(), 1))
    return out
