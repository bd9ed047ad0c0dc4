"""The analytic capsule body: one capsule per bone of the HumanML3D-22 skeleton, with DensePose-like surface codes.

LatentMan spec (../shared/specs/latentman.md) §6 "body/" item 2, `CapsuleBody`, the default body (no licensed files).
Joints are `(T, 22, 3)` in `dancegen.pose.skeletons.HUMANML3D22` order, metres, Y-up, the body facing +Z at rest with
its own left at +X (`dancegen.motion.io.Motion`).

Capsules (`CAPSULES`): the torso pelvis -> spine3, thighs hip -> knee, shins knee -> ankle, feet ankle -> foot,
upper arms shoulder -> elbow, forearms elbow -> wrist, hands wrist -> wrist + 8 cm along the forearm and the head
neck -> head + 10 cm along neck -> head. Radii are the spec's for a 1.7 m body (torso 13 cm, thigh 8, shin 5.5,
foot 4, upper arm 4.5, forearm 3.8, hand 3.5, head 10), scaled by the sequence's body height (`body_scale`) unless a
fixed scale is given. The scale (and so every radius) is one number per sequence, so a body point keeps its code in
every frame.

Part labels are DensePose's 24 (0 = background): 1/2 torso, 3 right hand, 4 left hand, 5 left foot, 6 right foot,
7/9 right upper leg, 8/10 left upper leg, 11/13 right lower leg, 12/14 left lower leg, 15/17 left upper arm,
16/18 right upper arm, 19/21 left lower arm, 20/22 right lower arm, 23/24 head.

Surface code of a point p on capsule a -> b (axis w = (b - a)/L, length L, radius r):

* v = ((p - a).w + r) / (L + 2r), clamped to [0, 1] (0 at the far side of the start cap, 1 at the end cap's tip);
* phi = atan2(n.e2, n.e1) in [0, 2 pi), n the radial direction (p minus its nearest point on the segment, made
  perpendicular to the bone), e1 the body's forward vector projected perpendicular to the bone (blended into the
  across vector as the bone turns parallel to forward, see `bone_frames`), e2 = w x e1;
* the label is the capsule's first label for phi in [0, pi) and its second for [pi, 2 pi); u = (phi mod pi) / pi.

So each two-label part is split by the plane through the bone and the forward direction: for a vertical bone its
halves are the body's sides, not DensePose's front/back (the spec's formula; the labels only need to be stable for
correspondences). Which half gets the first label: for upward bones (torso, head) the first label is the body's left
half (e2 = up x forward = +X), for downward leg bones the body's right half, for T-pose arms the lower half.

Body forward is `cross(up, across)` with across = (r_hip - l_hip) + (r_shoulder - l_shoulder) (HumanML3D's rule; the
spec's `cross(r_hip - l_hip, up)` points backwards in these axes). Bone twist is not known from joints alone, so a
limb's code follows the body's forward vector, not the limb's own roll.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dancegen.errors import InputError
from dancegen.pose.skeletons import HUMANML3D22

NUM_JOINTS = 22
_J = {name: i for i, name in enumerate(HUMANML3D22.joints)}

#: DensePose part labels (0 = background, 1..24).
NUM_PARTS = 24
BACKGROUND = 0
TORSO = (1, 2)
R_HAND = 3
L_HAND = 4
L_FOOT = 5
R_FOOT = 6
R_UPPER_LEG = (7, 9)
L_UPPER_LEG = (8, 10)
R_LOWER_LEG = (11, 13)
L_LOWER_LEG = (12, 14)
L_UPPER_ARM = (15, 17)
R_UPPER_ARM = (16, 18)
L_LOWER_ARM = (19, 21)
R_LOWER_ARM = (20, 22)
HEAD = (23, 24)

#: Name of each label's body part, indexed by label (both halves of a two-label part share the name).
PART_NAMES: tuple[str, ...] = (
    "background", "torso", "torso", "right_hand", "left_hand", "left_foot", "right_foot",
    "right_upper_leg", "left_upper_leg", "right_upper_leg", "left_upper_leg",
    "right_lower_leg", "left_lower_leg", "right_lower_leg", "left_lower_leg",
    "left_upper_arm", "right_upper_arm", "left_upper_arm", "right_upper_arm",
    "left_lower_arm", "right_lower_arm", "left_lower_arm", "right_lower_arm",
    "head", "head",
)
#: Labels of the body's left and right side parts (the torso and head are neither).
LEFT_LABELS = (L_HAND, L_FOOT, *L_UPPER_LEG, *L_LOWER_LEG, *L_UPPER_ARM, *L_LOWER_ARM)
RIGHT_LABELS = (R_HAND, R_FOOT, *R_UPPER_LEG, *R_LOWER_LEG, *R_UPPER_ARM, *R_LOWER_ARM)

#: Capsule radii (metres) for a 1.7 m body (LatentMan spec §6, marked [assumed] there).
RADII = {
    "torso": 0.13, "thigh": 0.08, "shin": 0.055, "foot": 0.04, "upper_arm": 0.045, "forearm": 0.038,
    "hand": 0.035, "head": 0.10,
}
#: Hand capsule: wrist -> wrist + HAND_LENGTH along elbow -> wrist; head: neck -> head + HEAD_EXTENSION along
#: neck -> head (metres for a 1.7 m body, scaled like the radii).
HAND_LENGTH = 0.08
HEAD_EXTENSION = 0.10
#: Reference body height for `RADII`, and the length of the pelvis -> spine1 -> spine2 -> spine3 -> neck -> head chain
#: plus the mean hip -> knee -> ankle chain of such a body (the synthetic dancer's SMPL-like rest proportions:
#: 1.417 m of chain for 1.72 m of height).
REFERENCE_HEIGHT = 1.7
REFERENCE_CHAIN = 1.40

#: (name, start joint, end, radius key, (label for phi in [0, pi), label for [pi, 2 pi))). An end is a joint name or
#: ("extend", from joint, to joint, length): to + length * unit(to - from).
CAPSULES: tuple[tuple, ...] = (
    ("torso", "pelvis", "spine3", "torso", TORSO),
    ("r_thigh", "r_hip", "r_knee", "thigh", R_UPPER_LEG),
    ("l_thigh", "l_hip", "l_knee", "thigh", L_UPPER_LEG),
    ("r_shin", "r_knee", "r_ankle", "shin", R_LOWER_LEG),
    ("l_shin", "l_knee", "l_ankle", "shin", L_LOWER_LEG),
    ("r_foot", "r_ankle", "r_foot", "foot", (R_FOOT, R_FOOT)),
    ("l_foot", "l_ankle", "l_foot", "foot", (L_FOOT, L_FOOT)),
    ("l_upper_arm", "l_shoulder", "l_elbow", "upper_arm", L_UPPER_ARM),
    ("r_upper_arm", "r_shoulder", "r_elbow", "upper_arm", R_UPPER_ARM),
    ("l_forearm", "l_elbow", "l_wrist", "forearm", L_LOWER_ARM),
    ("r_forearm", "r_elbow", "r_wrist", "forearm", R_LOWER_ARM),
    ("l_hand", "l_wrist", ("extend", "l_elbow", "l_wrist", HAND_LENGTH), "hand", (L_HAND, L_HAND)),
    ("r_hand", "r_wrist", ("extend", "r_elbow", "r_wrist", HAND_LENGTH), "hand", (R_HAND, R_HAND)),
    ("head", "neck", ("extend", "neck", "head", HEAD_EXTENSION), "head", HEAD),
)
CAPSULE_NAMES = tuple(c[0] for c in CAPSULES)

#: Below this length of the forward vector projected perpendicular to a bone (1 = perpendicular), e1 blends
#: linearly into the across vector; at 0 (bone parallel to forward) it is the across vector.
FORWARD_BLEND = 0.5
_EPS = 1e-9


def _unit(x: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    out = x / np.maximum(n, _EPS)
    if fallback is not None:
        out = np.where(n > 1e-6, out, np.broadcast_to(fallback, x.shape))
    return out


def check_joints(joints) -> np.ndarray:
    """`(T, 22, 3)` float64 joints from an array (a single `(22, 3)` frame is promoted) or a `Motion`."""
    j = np.asarray(getattr(joints, "joints", joints), dtype=np.float64)
    if j.ndim == 2:
        j = j[None]
    if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3):
        raise InputError(f"joints must be (T, 22, 3) HumanML3D-22 positions in metres, got shape {j.shape}")
    if j.shape[0] == 0:
        raise InputError("joints have zero frames")
    if not np.isfinite(j).all():
        raise InputError("joints contain NaN or inf")
    return j


def body_scale(joints) -> float:
    """Body height / 1.7 m, estimated from bone lengths (median over frames, so it ignores the pose).

    Height ~ (pelvis..head spine chain + mean hip..ankle leg chain) * REFERENCE_HEIGHT / REFERENCE_CHAIN. Clamped to
    [0.3, 3].
    """
    j = check_joints(joints)

    def chain(names):
        idx = [_J[n] for n in names]
        return np.linalg.norm(np.diff(j[:, idx], axis=1), axis=-1).sum(-1)

    spine = chain(("pelvis", "spine1", "spine2", "spine3", "neck", "head"))
    legs = 0.5 * (chain(("l_hip", "l_knee", "l_ankle")) + chain(("r_hip", "r_knee", "r_ankle")))
    return float(np.clip(np.median(spine + legs) / REFERENCE_CHAIN, 0.3, 3.0))


def body_forward(joints) -> np.ndarray:
    """`(T, 3)` unit horizontal forward vectors: cross(up, (r_hip - l_hip) + (r_shoulder - l_shoulder)); +Z if
    degenerate."""
    j = check_joints(joints)
    across = (j[:, _J["r_hip"]] - j[:, _J["l_hip"]]) + (j[:, _J["r_shoulder"]] - j[:, _J["l_shoulder"]])
    fwd = np.cross(np.array([0.0, 1.0, 0.0]), across)
    return _unit(fwd, np.array([0.0, 0.0, 1.0]))


def body_across(joints) -> np.ndarray:
    """`(T, 3)` unit across vectors (towards the body's right): up-perpendicular part of the hips + shoulders line."""
    j = check_joints(joints)
    across = (j[:, _J["r_hip"]] - j[:, _J["l_hip"]]) + (j[:, _J["r_shoulder"]] - j[:, _J["l_shoulder"]])
    across[:, 1] = 0.0
    return _unit(across, np.array([-1.0, 0.0, 0.0]))


def bone_frames(axis: np.ndarray, forward: np.ndarray, across: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bone frames (e1, e2) for unit bone axes `(..., 3)`: e1 = forward made perpendicular to the axis, e2 = w x e1.

    When the bone turns towards the forward direction (|forward_perp| < FORWARD_BLEND) the across vector (also made
    perpendicular) is blended in, so e1 stays defined and continuous; at |forward_perp| = 0 e1 is the across vector.
    """
    f_perp = forward - (forward * axis).sum(-1, keepdims=True) * axis
    a_perp = across - (across * axis).sum(-1, keepdims=True) * axis
    fn = np.linalg.norm(f_perp, axis=-1, keepdims=True)
    weight = np.clip((FORWARD_BLEND - fn) / FORWARD_BLEND, 0.0, 1.0)
    e1 = f_perp + weight * _unit(a_perp)
    # last resort (the axis is parallel to both, impossible for a valid body): any perpendicular vector
    alt = np.cross(axis, np.array([0.0, 1.0, 0.0]))
    alt = np.where(np.linalg.norm(alt, axis=-1, keepdims=True) > 1e-6, alt, np.cross(axis, np.array([1.0, 0.0, 0.0])))
    e1 = np.where(np.linalg.norm(e1, axis=-1, keepdims=True) > 1e-6, e1, alt)
    e1 = _unit(e1)
    e2 = np.cross(axis, e1)
    return e1, e2


@dataclass
class Capsules:
    """Per-frame capsules of a body (K = len(names)).

    Attributes:
        start, end: `(T, K, 3)` segment end points (world metres).
        radius: `(K,)` radii (metres, constant over the sequence).
        axis: `(T, K, 3)` unit direction start -> end (an arbitrary unit vector for a zero-length bone).
        length: `(T, K)` segment lengths.
        e1, e2: `(T, K, 3)` bone frames (unit, perpendicular to the axis and to each other).
        labels: `(K, 2)` int part labels for phi in [0, pi) and [pi, 2 pi).
        names: capsule names.
        scale: the body scale the radii were multiplied by.
    """

    start: np.ndarray
    end: np.ndarray
    radius: np.ndarray
    axis: np.ndarray
    length: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    scale: float

    @property
    def num_frames(self) -> int:
        return int(self.start.shape[0])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World-space bounding box `(lo (3,), hi (3,))` of every capsule of every frame."""
        r = self.radius[None, :, None]
        lo = np.minimum(self.start - r, self.end - r).reshape(-1, 3).min(0)
        hi = np.maximum(self.start + r, self.end + r).reshape(-1, 3).max(0)
        return lo, hi

    def transformed(self, rot: np.ndarray, trans: np.ndarray) -> Capsules:
        """The same capsules in another frame `x' = rot @ x + trans` (e.g. a camera's)."""
        rot = np.asarray(rot, np.float64)
        trans = np.asarray(trans, np.float64)
        return Capsules(self.start @ rot.T + trans, self.end @ rot.T + trans, self.radius, self.axis @ rot.T,
                        self.length, self.e1 @ rot.T, self.e2 @ rot.T, self.labels, self.names, self.scale)


class CapsuleBody:
    """The analytic capsule body (LatentMan spec §6 body/ item 2).

    Args:
        scale: "auto" (radii and the hand / head extensions times `body_scale(joints)`) or a fixed number.
        radii: override some of `RADII` (metres for a 1.7 m body).
    """

    def __init__(self, scale: float | str = "auto", radii: dict[str, float] | None = None):
        if not (scale == "auto" or (isinstance(scale, (int, float)) and scale > 0)):
            raise ValueError(f"scale must be 'auto' or a positive number, got {scale!r}")
        unknown = set(radii or {}) - set(RADII)
        if unknown:
            raise ValueError(f"unknown radius keys {sorted(unknown)}; known: {sorted(RADII)}")
        self.scale = scale
        self.radii = {**RADII, **(radii or {})}

    def capsules(self, joints) -> Capsules:
        """Capsules of every frame of `joints` `(T, 22, 3)` (or a Motion)."""
        j = check_joints(joints)
        s = body_scale(j) if self.scale == "auto" else float(self.scale)
        starts, ends, radius, labels = [], [], [], []
        for _name, a, b, rkey, lab in CAPSULES:
            starts.append(j[:, _J[a]])
            if isinstance(b, tuple):
                _, frm, to, length = b
                d = _unit(j[:, _J[to]] - j[:, _J[frm]], np.array([0.0, 1.0, 0.0]))
                ends.append(j[:, _J[to]] + (length * s) * d)
            else:
                ends.append(j[:, _J[b]])
            radius.append(self.radii[rkey] * s)
            labels.append(lab)
        start, end = np.stack(starts, 1), np.stack(ends, 1)
        seg = end - start
        length = np.linalg.norm(seg, axis=-1)
        axis = _unit(seg, np.array([0.0, 1.0, 0.0]))
        fwd = body_forward(j)[:, None, :]
        acr = body_across(j)[:, None, :]
        e1, e2 = bone_frames(axis, np.broadcast_to(fwd, axis.shape), np.broadcast_to(acr, axis.shape))
        return Capsules(start, end, np.array(radius), axis, length, e1, e2, np.array(labels, np.int64),
                        CAPSULE_NAMES, s)


def capsule_surface(points: np.ndarray, start: np.ndarray, axis: np.ndarray, length: float, radius: float,
                    e1: np.ndarray, e2: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surface code and normal of points `(N, 3)` on one capsule (any frame, as long as all inputs share it).

    Returns:
        `(label (N,) int64, u (N,), v (N,), normal (N, 3))`: the formulas of the module docstring; the normal is the
        unit direction from the nearest segment point (exact for points on the surface).
    """
    p = np.asarray(points, np.float64) - start
    s_raw = p @ axis
    v = np.clip((s_raw + radius) / (length + 2.0 * radius), 0.0, 1.0)
    s = np.clip(s_raw, 0.0, length)
    radial = p - s[:, None] * axis
    normal = _unit(radial, axis)
    perp = radial - (radial @ axis)[:, None] * axis
    phi = np.arctan2(perp @ e2, perp @ e1)
    phi = np.where(phi < 0.0, phi + 2.0 * np.pi, phi)
    second = phi >= np.pi
    u = np.clip(np.where(second, phi - np.pi, phi) / np.pi, 0.0, 1.0)
    label = np.where(second, int(labels[1]), int(labels[0])).astype(np.int64)
    return label, u, v, normal
