"""PCK (percentage of correct keypoints; Yang & Ramanan 2013, PCKh of Andriluka et al. 2014) for PoseSequences.

A ground-truth joint counts when its confidence is above `gt_threshold`; it is correct when the prediction is
detected (confidence above `pred_threshold`) and within `threshold x scale` pixels. The per-frame scale is
* "torso": distance between the shoulder midpoint and the hip midpoint (needs both shoulders and both hips),
* "bbox": the longer side of the bounding box of the visible ground-truth joints,
* "head": distance between the two ears (a PCKh-like head size; COCO-style skeletons have no head top).
Frames whose scale cannot be measured from the ground truth are skipped and counted in `frames_skipped`.
"""

from __future__ import annotations

import warnings

import numpy as np

from dancegen.errors import InputError
from dancegen.pose.sequence import PoseSequence

NORMALISERS = ("torso", "bbox", "head")


def _scale(gt: PoseSequence, normalise: str, gt_threshold: float) -> np.ndarray:
    """`(F,)` scale in pixels, NaN where it cannot be measured."""
    sk = gt.skeleton
    kp, vis = gt.keypoints, gt.conf > gt_threshold

    def pts(*names):
        idx = [sk.index(n) for n in names]
        ok = vis[:, idx].all(1)
        return kp[:, idx, :2], ok

    if normalise == "torso":
        p, ok = pts("l_shoulder", "r_shoulder", "l_hip", "r_hip")
        s = np.linalg.norm(p[:, :2].mean(1) - p[:, 2:].mean(1), axis=-1)
    elif normalise == "head":
        p, ok = pts("l_ear", "r_ear")
        s = np.linalg.norm(p[:, 0] - p[:, 1], axis=-1)
    elif normalise == "bbox":
        xy = np.where(vis[..., None], kp[..., :2], np.nan)
        with warnings.catch_warnings():  # all-NaN frames give NaN, which is what we want
            warnings.simplefilter("ignore", RuntimeWarning)
            s = np.nanmax(np.nanmax(xy, 1) - np.nanmin(xy, 1), axis=-1)
        ok = vis.sum(1) >= 2
    else:
        raise ValueError(f"normalise must be one of {NORMALISERS}, got {normalise!r}")
    return np.where(ok & (s > 0), s, np.nan)


def pck(
    pred: PoseSequence,
    gt: PoseSequence,
    threshold: float = 0.2,
    normalise: str = "torso",
    gt_threshold: float = 0.0,
    pred_threshold: float = 0.0,
) -> dict:
    """PCK of `pred` against `gt`.

    Args:
        pred: Predicted poses; converted to `gt.format` (dancegen.pose.convert) and rescaled to gt's image size
            when they differ.
        gt: Ground truth, same number of frames.
        threshold: Fraction of the scale (0.2 for PCK@0.2, 0.5 for PCKh@0.5).
        normalise: "torso", "bbox" or "head" (module docstring).
        gt_threshold: Ground-truth joints with confidence <= this are not evaluated.
        pred_threshold: Predicted joints with confidence <= this count as misses.

    Returns:
        {"pck": overall fraction in [0, 1] (NaN if nothing was evaluated), "per_joint": {joint: fraction or None},
        "num_evaluated": joints evaluated, "num_correct", "frames_skipped", "threshold", "normalise"}.
    """
    if pred.num_frames != gt.num_frames:
        raise InputError(f"pred has {pred.num_frames} frames, gt has {gt.num_frames}")
    if pred.format != gt.format:
        from dancegen.pose.convert import convert

        pred = convert(pred, gt.format)
    if (pred.width, pred.height) != (gt.width, gt.height):
        pred = pred.resized(gt.width, gt.height)
    scale = _scale(gt, normalise, gt_threshold)
    frame_ok = np.isfinite(scale)
    evaluated = (gt.conf > gt_threshold) & frame_ok[:, None]
    dist = np.linalg.norm(pred.xy - gt.xy, axis=-1)
    correct = evaluated & (pred.conf > pred_threshold) & (dist <= threshold * np.nan_to_num(scale)[:, None])
    n_eval, n_ok = evaluated.sum(0), correct.sum(0)
    per_joint = {
        name: (float(n_ok[j] / n_eval[j]) if n_eval[j] else None) for j, name in enumerate(gt.skeleton.joints)
    }
    total = int(n_eval.sum())
    return {
        "pck": float(n_ok.sum() / total) if total else float("nan"),
        "per_joint": per_joint,
        "num_evaluated": total,
        "num_correct": int(n_ok.sum()),
        "frames_skipped": int((~frame_ok).sum()),
        "threshold": threshold,
        "normalise": normalise,
    }
