"""Pose retargeting: driving motion on a reference body (bone-length transfer) and Edit-Your-Motion's skeleton offset.

`retarget` rebuilds every driving frame along the COCO-18 kinematic tree (the 17 OpenPose limbs, rooted at the
neck or at the hip midpoint), keeping each driving bone's direction and the reference's bone length, the usual
pose-alignment step of reference-image animation (e.g. the "pose retargeting" of Animate Anyone-style pipelines).
`skeleton_offset` is Algorithm 1 of Edit-Your-Motion as restated in ../shared/specs/edit-your-motion.md §2.8.
"""

from __future__ import annotations

import warnings

import numpy as np

from dancegen.errors import InputError
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18

_MID_HIP = 18  # virtual node: mean of the two hips
_J = COCO18.index
#: Bones summed to measure body height (nose-neck, neck-hips, thighs, shins).
HEIGHT_BONES = ((1, 0), (1, 8), (1, 11), (8, 9), (11, 12), (9, 10), (12, 13))


def kinematic_tree(root: str = "neck") -> tuple[tuple[int, int], ...]:
    """(parent, child) COCO-18 bones in topological order from `root` ("neck" or "mid_hip"; 18 = hip midpoint)."""
    if root == "neck":
        return COCO18.limbs  # the 17 OpenPose limbs already form a tree rooted at the neck, parents first
    if root == "mid_hip":
        rest = tuple(e for e in COCO18.limbs if e not in ((1, 8), (1, 11)))
        return ((_MID_HIP, 8), (_MID_HIP, 11), (_MID_HIP, 1)) + rest
    raise ValueError(f'root must be "neck" or "mid_hip", got {root!r}')


def _with_mid_hip(kps: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """`(F, 19, 2)` positions and `(F, 19)` visibility, node 18 = hip midpoint (visible iff both hips are)."""
    xy = kps[..., :2].astype(np.float64)
    vis = kps[..., 2] > thr
    mid = (xy[:, 8] + xy[:, 11]) / 2
    return np.concatenate([xy, mid[:, None]], 1), np.concatenate([vis, (vis[:, 8] & vis[:, 11])[:, None]], 1)


def _bone_lengths(xy: np.ndarray, vis: np.ndarray, bones) -> np.ndarray:
    """`(F, B)` lengths, NaN where either end is invisible."""
    p, c = np.array(bones).T
    length = np.linalg.norm(xy[:, c] - xy[:, p], axis=-1)
    return np.where(vis[:, p] & vis[:, c], length, np.nan)


def height_ratio(driving: PoseSequence, reference: PoseSequence, conf_thr: float = 0.3) -> float:
    """Reference / driving body size from the bones both show (median over driving frames).

    Uses `HEIGHT_BONES` when any of them is seen in both, else every COCO-18 bone seen in both.

    Raises:
        InputError: The two share no measurable bone.
    """
    dxy, dvis = _with_mid_hip(driving.keypoints, conf_thr)
    rxy, rvis = _with_mid_hip(reference.keypoints[:1], conf_thr)
    for bones in (HEIGHT_BONES, COCO18.limbs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: bones the driving never shows
            ld = np.nanmedian(_bone_lengths(dxy, dvis, bones), axis=0)
        lr = _bone_lengths(rxy, rvis, bones)[0]
        both = np.isfinite(ld) & np.isfinite(lr) & (ld > 0)
        if both.any():
            return float(lr[both].sum() / ld[both].sum())
    raise InputError("driving and reference poses share no visible bone; cannot compare body sizes")


def retarget(
    driving: PoseSequence, reference: PoseSequence, root: str = "neck", conf_thr: float = 0.3, scale_parts: bool = True
) -> PoseSequence:
    """Put the driving motion on the reference body.

    Every frame is rebuilt along `kinematic_tree(root)`: child = parent + (reference bone length) x (driving bone
    direction). The root lands on the reference's root in the first driving frame where it is visible and then
    follows the driving root trajectory scaled by s = reference / driving body size (`height_ratio`), i.e. through
    the map G(p) = root_ref + s * (p - root_driving_0). A bone the reference lacks uses the driving length times s;
    a visible joint whose driving parent is missing is placed by G and its subtree continues from there. Hands
    follow their wrist and the face follows the nose as rigid pieces, scaled by s when `scale_parts`.

    Args:
        driving: The motion (any convertible format; COCO-18 is used).
        reference: The reference image's pose; only its first frame is used.
        root: "neck" or "mid_hip".
        conf_thr: Joints with confidence <= conf_thr are missing.
        scale_parts: Scale hands and face by s about their parent joint (False: translate only).

    Returns:
        COCO-18 PoseSequence with the driving's frames, confidences and fps and the reference's image size.
        Missing driving joints stay missing: confidence-0 points stay (0, 0, 0), other sub-threshold points are
        mapped by G with their confidence unchanged.

    Raises:
        InputError: The reference root is not visible, the driving root is never visible, or no bone is shared.
    """
    from dancegen.pose.convert import convert

    drv = driving if driving.format == "coco18" else convert(driving, "coco18")
    ref = reference if reference.format == "coco18" else convert(reference, "coco18")
    bones = kinematic_tree(root)
    r = _MID_HIP if root == "mid_hip" else _J("neck")
    dxy, dvis = _with_mid_hip(drv.keypoints, conf_thr)
    rxy, rvis = _with_mid_hip(ref.keypoints[:1], conf_thr)
    if not rvis[0, r]:
        raise InputError(f"the reference pose has no visible {root} (confidence > {conf_thr}); cannot place the body")
    seen = np.flatnonzero(dvis[:, r])
    if len(seen) == 0:
        raise InputError(f"the driving poses never show the {root} (confidence > {conf_thr})")
    s = height_ratio(drv, ref, conf_thr)
    origin_d, origin_r = dxy[seen[0], r], rxy[0, r]

    def g(p: np.ndarray) -> np.ndarray:
        return origin_r + s * (p - origin_d)

    ref_len = _bone_lengths(rxy, rvis, bones)[0]
    new = g(dxy)  # fallback placement for every node; chained nodes are overwritten below
    for k, (p, c) in enumerate(bones):
        vec = dxy[:, c] - dxy[:, p]
        norm = np.linalg.norm(vec, axis=-1, keepdims=True)
        direction = np.divide(vec, norm, out=np.zeros_like(vec), where=norm > 0)
        length = ref_len[k] if np.isfinite(ref_len[k]) else s * norm
        ok = dvis[:, p] & dvis[:, c]
        new[ok, c] = new[ok, p] + (length * direction)[ok]

    kps = drv.keypoints.copy()
    kps[..., :2] = new[:, :18]
    kps[kps[..., 2] <= 0] = 0.0

    def attach(points: np.ndarray | None, parent: int, which) -> None:
        if points is None:
            return
        seg = points[which]  # view: (F, K, 3)
        shift = new[:, parent] - (s if scale_parts else 1.0) * dxy[:, parent]
        moved = (s if scale_parts else 1.0) * seg[..., :2] + shift[:, None]
        has_parent = dvis[:, parent][:, None]
        seg[..., :2] = np.where(has_parent[..., None], moved, g(seg[..., :2].astype(np.float64)))
        seg[seg[..., 2] <= 0] = 0.0

    hands = None if drv.hands is None else drv.hands.copy()
    face = None if drv.face is None else drv.face.copy()
    attach(hands, _J("l_wrist"), (slice(None), 0))
    attach(hands, _J("r_wrist"), (slice(None), 1))
    attach(face, _J("nose"), (slice(None),))
    meta = {**drv.meta, "retarget": {"root": root, "scale": s, "reference_size": [ref.width, ref.height]}}
    return PoseSequence(
        kps, format="coco18", width=ref.width, height=ref.height, fps=drv.fps, hands=hands, face=face, meta=meta
    )


# ---------------------------------------------------------------------------------------------------------------
# Edit-Your-Motion, Algorithm 1 (Skeleton Offset)
# ---------------------------------------------------------------------------------------------------------------


def skeleton_box(seq: PoseSequence, conf_thr: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """GetCenter / GetHW per frame: bounding box of body keypoints with confidence > conf_thr.

    Returns:
        centre `(F, 2)` (x, y) and size `(F, 2)` (h, w); NaN in frames without any confident keypoint.
    """
    xy = seq.xy.astype(np.float64)
    vis = seq.conf > conf_thr
    lo = np.where(vis[..., None], xy, np.inf).min(1)
    hi = np.where(vis[..., None], xy, -np.inf).max(1)
    none = ~vis.any(1)
    lo[none], hi[none] = np.nan, np.nan
    return (lo + hi) / 2, np.stack([hi[:, 1] - lo[:, 1], hi[:, 0] - lo[:, 0]], -1)


def _summarise(centre: np.ndarray, hw: np.ndarray, mode: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(centre).all(1)
    if not ok.any():
        raise InputError(f"the {name} skeleton has no keypoint above the confidence threshold in any frame")
    if mode == "first_frame":
        i = np.flatnonzero(ok)[0]
        return centre[i][None], hw[i][None]
    if mode == "median":
        return np.median(centre[ok], 0)[None], np.median(hw[ok], 0)[None]
    return centre, hw


def skeleton_offset(
    source: PoseSequence,
    reference: PoseSequence,
    mode: str = "first_frame",
    conf_thr: float = 0.3,
    keep_aspect: bool = False,
    min_size: float = 1e-6,
) -> PoseSequence:
    """Edit-Your-Motion Algorithm 1: scale the reference skeletons about their centre and move them onto the source.

    For each keypoint (x_sk, y_sk) of the reference (lines 8-13):
        x_ro = x_r + (x_sk - x_r) * scale_w - x_d,   y_ro = y_r + (y_sk - y_r) * scale_h - y_d,
    with p_r, p_s the bounding-box centres (GetCenter), dis = p_r - p_s, scale_h = h_s / h_r, scale_w = w_s / w_r
    (GetHW), over keypoints with confidence > conf_thr. Spec choices (§2.8): centre and size are computed once per
    sequence (`first_frame`, the default, or `median` over frames) so one affine map serves every frame and the
    reference's own trajectory survives; `per_frame` recomputes both in every frame.

    Args:
        source: Source video skeletons (the person being edited); its image size is the output's.
        reference: Reference (motion) skeletons to shift.
        mode: "first_frame", "median" or "per_frame". In per_frame mode the source must have one frame or as many
            as the reference.
        conf_thr: Keypoints with confidence > conf_thr define the boxes.
        keep_aspect: Use scale_h for both axes (isotropic) instead of the paper's anisotropic scaling.
        min_size: Box sides at or below this (pixels) are an error.

    Returns:
        The shifted reference (same format, frames, fps and confidences; width/height of the source). Keypoints with
        confidence 0 (missing) are left untouched; hands and face move with the same map.

    Raises:
        InputError: A skeleton has no confident keypoint, or a zero-width/height box (scale undefined or zero).
    """
    if mode not in ("first_frame", "median", "per_frame"):
        raise ValueError(f'mode must be "first_frame", "median" or "per_frame", got {mode!r}')
    c_s, hw_s = _summarise(*skeleton_box(source, conf_thr), mode, "source")
    c_r, hw_r = _summarise(*skeleton_box(reference, conf_thr), mode, "reference")
    f = reference.num_frames
    if mode == "per_frame":
        if len(c_s) not in (1, f):
            raise InputError(f"per_frame skeleton offset needs 1 or {f} source frames, got {len(c_s)}")
        if not (np.isfinite(c_s).all() and np.isfinite(c_r).all()):
            raise InputError("per_frame skeleton offset: some frames have no keypoint above the confidence threshold")
    for name, hw in (("reference", hw_r), ("source", hw_s)):
        if (hw <= min_size).any():
            raise InputError(
                f"the {name} skeleton has zero height or width (its confident keypoints lie on a line "
                "or are a single point); the skeleton offset scale is undefined"
            )
    scale_h = hw_s[:, 0] / hw_r[:, 0]
    scale_w = scale_h if keep_aspect else hw_s[:, 1] / hw_r[:, 1]
    dis = c_r - c_s  # (x_d, y_d)

    def apply(points: np.ndarray | None) -> np.ndarray | None:
        if points is None:
            return None
        out = points.astype(np.float64).copy()
        shape = (-1,) + (1,) * (points.ndim - 2)
        x_r, y_r = c_r[:, 0].reshape(shape), c_r[:, 1].reshape(shape)
        x_d, y_d = dis[:, 0].reshape(shape), dis[:, 1].reshape(shape)
        sw, sh = scale_w.reshape(shape), scale_h.reshape(shape)
        x_ro = x_r + (out[..., 0] - x_r) * sw - x_d
        y_ro = y_r + (out[..., 1] - y_r) * sh - y_d
        keep = out[..., 2] > 0
        out[..., 0] = np.where(keep, x_ro, out[..., 0])
        out[..., 1] = np.where(keep, y_ro, out[..., 1])
        return out.astype(np.float32)

    meta = {
        **reference.meta,
        "skeleton_offset": {
            "mode": mode,
            "source_center": c_s.tolist() if mode != "per_frame" else "per_frame",
            "reference_center": c_r.tolist() if mode != "per_frame" else "per_frame",
            "scale_hw": [float(scale_h[0]), float(scale_w[0])] if mode != "per_frame" else "per_frame",
        },
    }
    return reference.replace(
        keypoints=apply(reference.keypoints),
        hands=apply(reference.hands),
        face=apply(reference.face),
        width=source.width,
        height=source.height,
        meta=meta,
    )
