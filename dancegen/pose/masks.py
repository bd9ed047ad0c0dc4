"""Person masks drawn from 2D poses, and the masks' dilation and feathering for compositing.

A pose gives the person's extent without looking at an image: the limbs as thick segments, the torso as the
shoulder-hip quadrilateral and the head as a disc, thickness a fraction of the body's height (the median over the
sequence of the confident joints' vertical extent, so one pose's crouch does not thin the limbs). Dancing Avatar
(spec dancing-avatar.md §2.2) uses it as the "pose" segmenter when no image segmenter (SAM, the pose backend's
segmentation) is wanted; any method that composites a generated person onto a plate can.

`dilate_mask` grows a mask by a disc; `feather_mask` turns it into a float weight that is 1 deep inside, ramps down
over ``feather_px`` pixels towards the edge and is exactly 0 outside the mask, so a composite
``m * generated + (1 - m) * plate`` equals the plate bit for bit wherever the mask is off.
"""

from __future__ import annotations

import numpy as np

from dancegen.pose.sequence import PoseSequence

# COCO-18: nose 0, neck 1, r-shoulder 2, r-elbow 3, r-wrist 4, l-shoulder 5, l-elbow 6, l-wrist 7, r-hip 8, r-knee 9,
# r-ankle 10, l-hip 11, l-knee 12, l-ankle 13, eyes 14/15, ears 16/17.
LIMBS = ((1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0),
         (2, 8), (5, 11), (8, 11))
TORSO = (2, 5, 11, 8)
HEAD = (0, 14, 15, 16, 17)


def body_height(keypoints: np.ndarray, threshold: float = 0.3) -> float:
    """Median over frames of the vertical extent of the confident joints of ``(F, 18, 3)`` keypoints (0 if none)."""
    spans = []
    for k in keypoints:
        ys = k[k[:, 2] > threshold, 1]
        if len(ys) >= 2:
            spans.append(float(ys.max() - ys.min()))
    return float(np.median(spans)) if spans else 0.0


def pose_masks(seq: PoseSequence, width_frac: float = 0.09, threshold: float = 0.3,
               height: float | None = None) -> np.ndarray:
    """``(F, H, W)`` bool person masks of a COCO-18 sequence (module docstring).

    Args:
        seq: the poses (converted to COCO-18 when in another format).
        width_frac: limb thickness as a fraction of the body height (the head disc's radius is 1.2 times it).
        threshold: joint confidence below which a joint is ignored.
        height: the body height in pixels that sets the thickness (None: measured on ``seq``); a caller drawing a
            long sequence a frame at a time passes the whole sequence's, so every frame matches.
    """
    import cv2

    if seq.format != "coco18":
        from dancegen.pose.convert import convert

        seq = convert(seq, "coco18")
    kps = seq.keypoints
    h, w = int(seq.height), int(seq.width)
    height = height or body_height(kps, threshold) or 0.5 * h
    thick = max(1, int(round(width_frac * height)))
    out = np.zeros((len(kps), h, w), bool)
    for f, k in enumerate(kps):
        m = np.zeros((h, w), np.uint8)
        vis = k[:, 2] > threshold
        pts = np.round(k[:, :2] * 4).astype(np.int32)  # 2 fractional bits (cv2 shift=2)
        for a, b in LIMBS:
            if vis[a] and vis[b]:
                cv2.line(m, tuple(pts[a]), tuple(pts[b]), 1, thick, lineType=cv2.LINE_8, shift=2)
        if vis[list(TORSO)].all():
            cv2.fillConvexPoly(m, pts[list(TORSO)], 1, shift=2)
        head = [j for j in HEAD if vis[j]]
        if head:
            c = k[head, :2].mean(0)
            cv2.circle(m, tuple(np.round(c * 4).astype(np.int32)), int(round(1.2 * thick * 4)), 1, -1, shift=2)
        out[f] = m.astype(bool)
    return out


def dilate_mask(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow ``(..., H, W)`` bool masks by a disc of radius ``px`` pixels."""
    import cv2

    if px <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    flat = mask.reshape(-1, *mask.shape[-2:]).astype(np.uint8)
    return np.stack([cv2.dilate(m, kernel) for m in flat]).reshape(mask.shape).astype(bool)


def feather_mask(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """``(H, W)`` float32 weight: ``min(1, d / (feather_px + 1))`` with d the distance (px) to the nearest pixel outside
    the mask; exactly 0 outside it, 1 everywhere inside when ``feather_px`` is 0."""
    import cv2

    m = mask.astype(np.uint8)
    if feather_px <= 0:
        return m.astype(np.float32)
    d = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    return np.minimum(1.0, d / (feather_px + 1.0)).astype(np.float32) * m


def latent_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W)`` bool -> ``(H / factor, W / factor)`` bool: a latent cell is on when any of its pixels is."""
    h, w = mask.shape
    if h % factor or w % factor:
        raise ValueError(f"mask {w}x{h} is not a multiple of the latent factor {factor}")
    return mask.reshape(h // factor, factor, w // factor, factor).any(axis=(1, 3))
