"""Pure motion flow from skeletons alone (no image, no network), for Dance-Your-Latents §4.4.1 (spec §2.5).

The paper runs RAFT on rendered pose images so that only body motion, never lighting or texture, drives the
flow. This module computes that body-motion flow directly from the keypoints, in milliseconds on a CPU.

Model (our choice; the paper has no keypoint-only flow):
- every bone (i, j) of the skeleton is an affine map taking its segment in frame a onto frame b: rotation,
  scale *along* the bone (foreshortening) and translation; across the bone the limb keeps its width
  (`bone_scale="along"`; `"uniform"` makes it a similarity that also scales the width);
- the torso (shoulders and hips, 3-4 points) moves with the least-squares affine map of those points, and its
  support is the inside of their polygon;
- the head moves with the least-squares similarity of nose/eyes/ears(/neck), its support a disc;
- hands (optional, `(2, 21, 3)`) add their finger bones with a thinner support;
- a pixel p of frame a moves with the blend `sum_k w_k(p) (T_k p - p) / sum_k w_k(p)`, where
  `w_k = exp(-d_k(p)^2 / (2 sigma^2))` and `d_k` is the distance from p to part k, so the field is smooth across
  joints; pixels farther than the support radius from every part do not move (static background);
- a bone, torso or head point missing (confidence <= `min_conf`) in either frame contributes nothing.
Under a pure translation or a rigid rotation of the whole skeleton every part map is that same motion, so the
flow on the body is exact.
"""

from __future__ import annotations

import numpy as np

from dancegen.pose.skeletons import HAND_EDGES, Skeleton, get_skeleton

HEAD_JOINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")
TORSO_JOINTS = ("r_shoulder", "l_shoulder", "l_hip", "r_hip")
#: Default support radius as a fraction of the person size (largest side of the joints' bounding box).
LIMB_WIDTH_FRACTION = 0.05
HAND_WIDTH_FRACTION = 0.35  # of limb_width


def person_size(kps: np.ndarray, min_conf: float = 0.05) -> float:
    """Largest side of the bounding box of the visible joints of one `(J, 3)` pose (1.0 when < 2 visible)."""
    kps = np.asarray(kps, dtype=np.float32)
    vis = kps[:, 2] > min_conf
    if vis.sum() < 2:
        return 1.0
    xy = kps[vis, :2]
    return float(max((xy.max(0) - xy.min(0)).max(), 1.0))


def _bone_maps(a0, a1, b0, b1, uniform: bool) -> tuple[np.ndarray, np.ndarray]:
    """Affine maps `(K, 2, 2)`, `(K, 2)` taking segments a0-a1 onto b0-b1 (all `(K, 2)`)."""
    da, db = a1 - a0, b1 - b0
    la = np.linalg.norm(da, axis=1)
    lb = np.linalg.norm(db, axis=1)
    short = la < 1e-3
    la_safe = np.where(short, 1.0, la)
    ea = da / la_safe[:, None]
    eb = np.where(lb[:, None] > 1e-6, db / np.maximum(lb, 1e-6)[:, None], ea)
    na = np.stack([-ea[:, 1], ea[:, 0]], 1)
    nb = np.stack([-eb[:, 1], eb[:, 0]], 1)
    s_along = lb / la_safe
    s_perp = s_along if uniform else np.ones_like(s_along)
    A = s_along[:, None, None] * eb[:, :, None] * ea[:, None, :] + s_perp[:, None, None] * nb[:, :, None] * na[:, None, :]
    # A bone of (nearly) zero length in frame a has no direction: move it rigidly with its mean displacement.
    A[short] = np.eye(2)
    t = b0 - np.einsum("kij,kj->ki", A, a0)
    t[short] = ((b0 + b1) / 2 - (a0 + a1) / 2)[short]
    return A, t


def _affine_lstsq(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares affine `dst ~ A src + t` from n >= 3 point pairs."""
    X = np.concatenate([src, np.ones((len(src), 1))], 1).astype(np.float64)
    sol, *_ = np.linalg.lstsq(X, dst.astype(np.float64), rcond=None)
    return sol[:2].T, sol[2]


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, uniform scale, translation) `dst ~ s R src + t` (Umeyama, no reflection)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    if len(src) < 2:
        return np.eye(2), mu_d - mu_s
    s0, d0 = src - mu_s, dst - mu_d
    # As complex numbers: z_dst = c z_src with c = sum conj(z_s) z_d / sum |z_s|^2.
    zs = s0[:, 0] + 1j * s0[:, 1]
    zd = d0[:, 0] + 1j * d0[:, 1]
    den = float((np.abs(zs) ** 2).sum())
    if den < 1e-9:
        return np.eye(2), mu_d - mu_s
    c = (np.conj(zs) * zd).sum() / den
    A = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return A, mu_d - A @ mu_s


def _polygon_order(pts: np.ndarray) -> np.ndarray:
    c = pts.mean(0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    return pts[np.argsort(ang)]


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _segment_dist2(px, py, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances `(K, N)` from pixels (px, py: `(1, N)`) to K segments a-b (`(K, 2)`)."""
    ax, ay = a[:, 0:1].astype(px.dtype), a[:, 1:2].astype(px.dtype)
    dx, dy = b[:, 0:1].astype(px.dtype) - ax, b[:, 1:2].astype(px.dtype) - ay
    inv_l2 = 1.0 / np.maximum(dx * dx + dy * dy, 1e-12)
    rx, ry = px - ax, py - ay
    t = np.clip((rx * dx + ry * dy) * inv_l2, 0.0, 1.0)
    ex = rx - t * dx
    ey = ry - t * dy
    return ex * ex + ey * ey


def _polygon_dist2(px, py, poly: np.ndarray) -> np.ndarray:
    """Squared distance `(N,)` from pixels (`(1, N)`) to a simple polygon `(V, 2)`; 0 inside (even-odd rule)."""
    a, b = poly, np.roll(poly, -1, axis=0)
    d2 = _segment_dist2(px, py, a, b).min(0)
    ay, by = a[:, 1:2], b[:, 1:2]
    cross_y = (ay > py) != (by > py)
    x_at = a[:, 0:1] + (py - ay) * (b[:, 0:1] - a[:, 0:1]) / np.where(by == ay, 1.0, by - ay)
    inside = (cross_y & (px < x_at)).sum(0) % 2 == 1
    return np.where(inside, 0.0, d2)


class _Parts:
    """Body parts of one pose pair: their affine maps a -> b and their supports in frame a."""

    def __init__(self):
        self.A: list[np.ndarray] = []  # (2, 2)
        self.t: list[np.ndarray] = []  # (2,)
        self.radius: list[float] = []
        self.kind: list[tuple] = []  # ("seg", a, b) | ("poly", pts) | ("disc", centre, r)
        self.extent: list[np.ndarray] = []  # points bounding the support (for the region of interest)

    def add(self, A, t, radius, kind, extent):
        self.A.append(np.asarray(A, np.float64))
        self.t.append(np.asarray(t, np.float64))
        self.radius.append(float(radius))
        self.kind.append(kind)
        self.extent.append(np.asarray(extent, np.float64).reshape(-1, 2))

    def __len__(self):
        return len(self.A)


def _collect_parts(kps_a, kps_b, skel: Skeleton, limb_width, hand_width, min_conf, uniform, hands_a, hands_b):
    parts = _Parts()
    ok = (kps_a[:, 2] > min_conf) & (kps_b[:, 2] > min_conf)
    xa, xb = kps_a[:, :2].astype(np.float64), kps_b[:, :2].astype(np.float64)
    names = skel.joints
    idx = {n: i for i, n in enumerate(names)}
    head = {idx[n] for n in HEAD_JOINTS if n in idx}

    # Bones; the face bones (both ends on the head) are covered by the head part.
    bones = [(i, j) for i, j in skel.limbs if ok[i] and ok[j] and not (i in head and j in head)]
    if bones:
        i, j = np.array(bones).T
        A, t = _bone_maps(xa[i], xa[j], xb[i], xb[j], uniform)
        for k in range(len(bones)):
            parts.add(A[k], t[k], limb_width, ("seg", xa[i[k]], xa[j[k]]), [xa[i[k]], xa[j[k]]])

    # Torso: affine map of the visible shoulders and hips, support = their polygon.
    tj = [idx[n] for n in TORSO_JOINTS if n in idx and ok[idx[n]]]
    if len(tj) >= 3:
        poly = _polygon_order(xa[tj])
        if _polygon_area(poly) > (0.5 * limb_width) ** 2:  # a collapsed torso (side view) is left to the bones
            A, t = _affine_lstsq(xa[tj], xb[tj])
            parts.add(A, t, limb_width, ("poly", poly), poly)

    # Head: similarity of the visible face points (and the neck), support = a disc around the face points.
    face = [idx[n] for n in HEAD_JOINTS if n in idx and ok[idx[n]]]
    if face:
        fit = face + ([idx["neck"]] if "neck" in idx and ok[idx["neck"]] else [])
        A, t = _similarity_lstsq(xa[fit], xb[fit])
        c = xa[face].mean(0)
        r = 1.2 * float(np.linalg.norm(xa[face] - c, axis=1).max())
        if "neck" in idx and ok[idx["neck"]] and "nose" in idx and ok[idx["nose"]]:
            r = max(r, 0.45 * float(np.linalg.norm(xa[idx["nose"]] - xa[idx["neck"]])))
        r = max(r, 1.5 * limb_width)
        parts.add(A, t, limb_width, ("disc", c, r), [c - r, c + r])

    # Hands: finger bones with a thinner support.
    if hands_a is not None and hands_b is not None:
        for ha, hb in zip(np.asarray(hands_a, np.float64), np.asarray(hands_b, np.float64), strict=True):
            hok = (ha[:, 2] > min_conf) & (hb[:, 2] > min_conf)
            hb_list = [(i, j) for i, j in HAND_EDGES if hok[i] and hok[j]]
            if not hb_list:
                continue
            i, j = np.array(hb_list).T
            A, t = _bone_maps(ha[i, :2], ha[j, :2], hb[i, :2], hb[j, :2], uniform)
            for k in range(len(hb_list)):
                parts.add(A[k], t[k], hand_width, ("seg", ha[i[k], :2], ha[j[k], :2]), [ha[i[k], :2], ha[j[k], :2]])
    return parts


def _part_distances2(parts: _Parts, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """`(K, N)` squared distance (float32) of every pixel to every part support (0 inside torso / head core)."""
    px32, py32 = px[None].astype(np.float32), py[None].astype(np.float32)
    d2 = np.empty((len(parts), px.size), dtype=np.float32)
    seg = [k for k, kind in enumerate(parts.kind) if kind[0] == "seg"]
    if seg:
        a = np.stack([parts.kind[k][1] for k in seg])
        b = np.stack([parts.kind[k][2] for k in seg])
        d2[seg] = _segment_dist2(px32, py32, a, b)
    for k, kind in enumerate(parts.kind):
        if kind[0] == "poly":
            d2[k] = _polygon_dist2(px32, py32, kind[1].astype(np.float32))
        elif kind[0] == "disc":
            c, r = kind[1], kind[2]
            d2[k] = np.maximum(np.hypot(px32[0] - c[0], py32[0] - c[1]) - r, 0.0) ** 2
    return d2


def pose_flow(kps_a, kps_b, skeleton: Skeleton | str = "coco18", height: int = 256, width: int = 256,
              limb_width: float | None = None, sigma: float | None = None, min_conf: float = 0.05,
              hands_a=None, hands_b=None, bone_scale: str = "along") -> np.ndarray:
    """Dense motion flow from frame a to frame b computed from two poses.

    Args:
        kps_a, kps_b: `(J, 3)` keypoints (x, y, confidence) in pixels of a `width` x `height` image.
        skeleton: The keypoint layout (a `Skeleton` or its name); 2D layouts only.
        height, width: Output size in pixels.
        limb_width: Body support radius in pixels: pixels farther than this from every part get zero flow.
            Default `0.05 * person_size(kps_a)` (at least 2 px).
        sigma: Blending width (pixels) of the per-part Gaussian weights. Default `limb_width / 2`.
        min_conf: Joints with confidence <= this are missing.
        hands_a, hands_b: Optional `(2, 21, 3)` left/right hand keypoints; their bones get radius
            `0.35 * limb_width` (at least 1.5 px).
        bone_scale: "along" (limbs stretch along the bone, keep their width) or "uniform" (similarity per bone).

    Returns:
        `(2, H, W)` float32 flow in pixels: a pixel at p in frame a is at p + flow(p) in frame b.
    """
    skel = get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
    if skel.dims != 2:
        raise ValueError(f"pose flow needs 2D keypoints, {skel.name} is {skel.dims}D")
    if bone_scale not in ("along", "uniform"):
        raise ValueError(f"bone_scale must be 'along' or 'uniform', got {bone_scale!r}")
    kps_a = np.asarray(kps_a, dtype=np.float64)
    kps_b = np.asarray(kps_b, dtype=np.float64)
    if kps_a.shape != (skel.num_joints, 3) or kps_b.shape != kps_a.shape:
        raise ValueError(f"keypoints must both be ({skel.num_joints}, 3), got {kps_a.shape} and {kps_b.shape}")
    if limb_width is None:
        limb_width = max(2.0, LIMB_WIDTH_FRACTION * person_size(kps_a, min_conf))
    if sigma is None:
        sigma = 0.5 * limb_width
    if limb_width <= 0 or sigma <= 0:
        raise ValueError(f"limb_width and sigma must be positive, got {limb_width}, {sigma}")
    hand_width = max(1.5, HAND_WIDTH_FRACTION * limb_width)

    flow = np.zeros((2, height, width), dtype=np.float32)
    parts = _collect_parts(kps_a, kps_b, skel, limb_width, hand_width, min_conf, bone_scale == "uniform",
                           hands_a, hands_b)
    if not len(parts):
        return flow

    # Region of interest: the parts' bounding box grown by the largest support radius.
    ext = np.concatenate(parts.extent)
    pad = max(parts.radius) + 1
    x0, y0 = np.floor(ext.min(0) - pad).astype(int)
    x1, y1 = np.ceil(ext.max(0) + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return flow
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    px, py = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)

    d2 = _part_distances2(parts, px, py)  # (K, N) squared pixel distances
    radius2 = (np.asarray(parts.radius, dtype=np.float32) ** 2)[:, None]
    support = (d2 <= radius2).any(0)
    if not support.any():
        return flow
    d2, px, py = d2[:, support], px[support], py[support]
    # Weights relative to the nearest part (exp(0) = 1 there), so far pixels never underflow to 0/0.
    w = np.exp(-(d2 - d2.min(0, keepdims=True)) * np.float32(0.5 / (sigma * sigma)))
    w /= w.sum(0, keepdims=True)
    # Displacement of part k at p is (A_k - I) p + t_k: blend the 6 affine coefficients, then apply them once.
    M = np.concatenate([(np.stack(parts.A) - np.eye(2)).reshape(-1, 4), np.stack(parts.t)], 1)  # (K, 6)
    c = w.T.astype(np.float64) @ M  # (N, 6); float64 so a pure translation stays exact
    fx = c[:, 0] * px + c[:, 1] * py + c[:, 4]
    fy = c[:, 2] * px + c[:, 3] * py + c[:, 5]
    xi, yi = px.astype(np.int64), py.astype(np.int64)
    flow[0, yi, xi] = fx
    flow[1, yi, xi] = fy
    return flow


def _seq_kwargs(seq, limb_width, min_conf):
    if limb_width is None:
        sizes = [person_size(k, min_conf) for k in seq.keypoints]
        limb_width = max(2.0, LIMB_WIDTH_FRACTION * float(np.median(sizes)))
    return limb_width


def pose_sequence_flow(seq, direction: str = "forward", reference=None, limb_width: float | None = None,
                       use_hands: bool = True, **kw) -> np.ndarray:
    """Pose-driven flow for a whole `PoseSequence`.

    Args:
        seq: The poses (image size `seq.width` x `seq.height`).
        direction: "forward" (flow[t]: frame t -> t+1) or "backward" (flow[t]: frame t+1 -> t).
        reference: None for consecutive pairs, or an int / `(F,)` int array of reference frames; then this is
            `pose_flow_to_reference(seq, reference)` and `direction` is ignored.
        limb_width: Support radius in pixels; default `0.05 *` the median person size over the sequence (one
            radius for all pairs so the support does not flicker).
        use_hands: Add hand bones when `seq.hands` is set.
        **kw: `sigma`, `min_conf`, `bone_scale` for `pose_flow`.

    Returns:
        `(F-1, 2, H, W)` float32 (or `(F, 2, H, W)` with `reference`).
    """
    if reference is not None:
        return pose_flow_to_reference(seq, reference, limb_width=limb_width, use_hands=use_hands, **kw)
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    lw = _seq_kwargs(seq, limb_width, kw.get("min_conf", 0.05))
    f = seq.num_frames
    out = np.zeros((max(f - 1, 0), 2, seq.height, seq.width), dtype=np.float32)
    for t in range(f - 1):
        a, b = (t, t + 1) if direction == "forward" else (t + 1, t)
        out[t] = _pair(seq, a, b, lw, use_hands, kw)
    return out


def pose_flow_to_reference(seq, ref_idx, limb_width: float | None = None, use_hands: bool = True,
                           **kw) -> np.ndarray:
    """Flow from every frame k to its reference frame r(k) (DYL Eqs. 6-7: `x_r = x_k + F^{k->r}(x_k)`).

    Args:
        seq: The poses.
        ref_idx: int (one reference for all frames) or `(F,)` int array with r(k) for each frame k.
        limb_width, use_hands, **kw: as in `pose_sequence_flow`.

    Returns:
        `(F, 2, H, W)` float32; zero where r(k) == k.
    """
    f = seq.num_frames
    ref = np.broadcast_to(np.asarray(ref_idx, dtype=np.int64), (f,))
    if ((ref < 0) | (ref >= f)).any():
        raise ValueError(f"reference indices must be in [0, {f - 1}], got {ref.tolist()}")
    lw = _seq_kwargs(seq, limb_width, kw.get("min_conf", 0.05))
    out = np.zeros((f, 2, seq.height, seq.width), dtype=np.float32)
    for k in range(f):
        if ref[k] != k:
            out[k] = _pair(seq, k, int(ref[k]), lw, use_hands, kw)
    return out


def _pair(seq, a: int, b: int, limb_width: float, use_hands: bool, kw: dict) -> np.ndarray:
    hands = seq.hands if use_hands else None
    return pose_flow(seq.keypoints[a], seq.keypoints[b], seq.skeleton, seq.height, seq.width, limb_width=limb_width,
                     hands_a=None if hands is None else hands[a], hands_b=None if hands is None else hands[b], **kw)
