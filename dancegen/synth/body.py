"""Articulated 3D dancer: the 22 HumanML3D/SMPL joints, per-dancer bone lengths and forward kinematics.

Joint order, parents and the kinematic chain are those of HumanML3D (../shared/specs/prior-art.md §3.5); world axes
are Y-up, metres, the dancer faces +Z at rest and its own left is +X (SMPL's convention). The rest pose is a
T-pose, so a local joint rotation means the same thing as an SMPL pose parameter of that joint (the bone offsets are
our own, not SMPL's template, hence "smpl-like").

Rotations are given as Euler angles in degrees per joint, `(x, y, z)`, composed as `R = Ry @ Rz @ Rx` (twist or
flexion first, then raise, then swing about the vertical). Left-side angles mirror onto the right side by negating y
and z (reflection through the X = 0 plane).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dancegen.pose.skeletons import HUMANML3D22

NUM_JOINTS = 22
#: Parent of each HumanML3D joint (-1 for the pelvis), from the kinematic chain in skeletons.HUMANML3D22.
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19])
J = {name: i for i, name in enumerate(HUMANML3D22.joints)}

#: Rest (T-pose) offsets of each joint from its parent, metres, for an average dancer (about 1.72 m tall).
_REST = {
    "pelvis": (0.0, 0.0, 0.0),
    "l_hip": (0.085, -0.07, 0.0),
    "r_hip": (-0.085, -0.07, 0.0),
    "spine1": (0.0, 0.11, -0.01),
    "l_knee": (0.01, -0.40, 0.0),
    "r_knee": (-0.01, -0.40, 0.0),
    "spine2": (0.0, 0.13, 0.01),
    "l_ankle": (0.0, -0.41, -0.02),
    "r_ankle": (0.0, -0.41, -0.02),
    "spine3": (0.0, 0.06, 0.0),
    "l_foot": (0.01, -0.05, 0.13),
    "r_foot": (-0.01, -0.05, 0.13),
    "neck": (0.0, 0.21, -0.02),
    "l_collar": (0.07, 0.12, 0.0),
    "r_collar": (-0.07, 0.12, 0.0),
    "head": (0.0, 0.09, 0.03),
    "l_shoulder": (0.11, 0.04, 0.0),
    "r_shoulder": (-0.11, 0.04, 0.0),
    "l_elbow": (0.26, 0.0, 0.0),
    "r_elbow": (-0.26, 0.0, 0.0),
    "l_wrist": (0.25, 0.0, 0.0),
    "r_wrist": (-0.25, 0.0, 0.0),
}
_LEG = ("l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle", "l_foot", "r_foot")
_ARM = ("l_elbow", "r_elbow", "l_wrist", "r_wrist")
_TORSO = ("spine1", "spine2", "spine3", "neck", "l_collar", "r_collar", "head")

#: Heights above the floor that feet joints keep when standing (ankle: half the shin radius above the sole).
FLOOR_CLEARANCE = {"l_ankle": 0.075, "r_ankle": 0.075, "l_foot": 0.035, "r_foot": 0.035}


@dataclass(frozen=True)
class BodyShape:
    """Proportions of one dancer (part of its appearance; the same motion plays on any BodyShape).

    Attributes:
        height: Overall scale (1.0 is about 1.72 m).
        legs: Extra scale of leg bones.
        arms: Extra scale of arm bones.
        shoulders: Scale of shoulder/collar width.
        hips: Scale of hip width.
        girth: Scale of limb and torso thickness.
        head: Scale of the head radius.
    """

    height: float = 1.0
    legs: float = 1.0
    arms: float = 1.0
    shoulders: float = 1.0
    hips: float = 1.0
    girth: float = 1.0
    head: float = 1.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> BodyShape:
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        return cls(
            height=u(0.86, 1.12),
            legs=u(0.92, 1.1),
            arms=u(0.92, 1.08),
            shoulders=u(0.85, 1.2),
            hips=u(0.85, 1.2),
            girth=u(0.8, 1.3),
            head=u(0.92, 1.1),
        )

    def offsets(self) -> np.ndarray:
        """`(22, 3)` rest offsets of each joint from its parent, metres."""
        off = np.array([_REST[n] for n in HUMANML3D22.joints], dtype=np.float64)
        for name in _LEG:
            off[J[name]] *= self.legs
        for name in _ARM:
            off[J[name]] *= self.arms
        for name in ("l_hip", "r_hip"):
            off[J[name], 0] *= self.hips
        for name in ("l_collar", "r_collar", "l_shoulder", "r_shoulder"):
            off[J[name], 0] *= self.shoulders
        return off * self.height

    @property
    def radii(self) -> dict[str, float]:
        """Body-part thickness in metres (capsule radii, torso half depth, head radius)."""
        g, s = self.girth, self.height
        return {
            "upper_arm": 0.056 * g * s,
            "forearm": 0.048 * g * s,
            "hand": 0.05 * s,
            "thigh": 0.088 * g * s,
            "shin": 0.065 * g * s,
            "foot": 0.045 * s,
            "neck": 0.055 * g * s,
            "torso_depth": 0.11 * g * s,
            "head": 0.11 * self.head * s,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def euler_to_matrix(deg: np.ndarray) -> np.ndarray:
    """`(..., 3)` Euler angles (x, y, z) in degrees -> `(..., 3, 3)` rotation `Ry @ Rz @ Rx`."""
    a = np.radians(np.asarray(deg, dtype=np.float64))
    cx, cy, cz = np.cos(a[..., 0]), np.cos(a[..., 1]), np.cos(a[..., 2])
    sx, sy, sz = np.sin(a[..., 0]), np.sin(a[..., 1]), np.sin(a[..., 2])
    o, z = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([o, z, z, z, cx, -sx, z, sx, cx], -1).reshape(a.shape[:-1] + (3, 3))
    ry = np.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(a.shape[:-1] + (3, 3))
    rz = np.stack([cz, -sz, z, sz, cz, z, z, z, o], -1).reshape(a.shape[:-1] + (3, 3))
    return ry @ rz @ rx


def yaw_matrix(yaw_deg: np.ndarray) -> np.ndarray:
    """`(...,)` yaw about +Y in degrees -> `(..., 3, 3)`."""
    y = np.asarray(yaw_deg, dtype=np.float64)
    return euler_to_matrix(np.stack([np.zeros_like(y), y, np.zeros_like(y)], -1))


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """`(..., 3, 3)` rotations -> `(..., 3)` axis-angle vectors (radians), as SMPL pose parameters."""
    from scipy.spatial.transform import Rotation

    shape = rot.shape[:-2]
    return Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(shape + (3,))


def forward_kinematics(local_rot: np.ndarray, root_pos: np.ndarray, offsets: np.ndarray):
    """Joint positions and global rotations from local rotations.

    Args:
        local_rot: `(F, 22, 3, 3)` local rotation of each joint relative to its parent (the pelvis one is global).
        root_pos: `(F, 3)` pelvis position in world metres.
        offsets: `(22, 3)` rest offsets from `BodyShape.offsets()`.

    Returns:
        `(positions (F, 22, 3), global_rot (F, 22, 3, 3))`.
    """
    f = local_rot.shape[0]
    pos = np.zeros((f, NUM_JOINTS, 3))
    glob = np.zeros((f, NUM_JOINTS, 3, 3))
    pos[:, 0] = root_pos
    glob[:, 0] = local_rot[:, 0]
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
        glob[:, j] = glob[:, p] @ local_rot[:, j]
    return pos, glob


def pose_body(euler_deg: np.ndarray, yaw_deg: np.ndarray, root_xz: np.ndarray, air: np.ndarray, shape: BodyShape):
    """Place a dancer on the floor: FK, then lift the pelvis so the lowest foot joint rests on y = 0 (plus `air`).

    Args:
        euler_deg: `(F, 22, 3)` local Euler angles in degrees (pelvis angles are applied after the yaw).
        yaw_deg: `(F,)` facing direction about +Y (0 faces +Z).
        root_xz: `(F, 2)` pelvis position on the floor plane.
        air: `(F,)` extra height above the floor contact (jumps), metres.
        shape: The dancer's proportions.

    Returns:
        `(joints (F, 22, 3), global_rot (F, 22, 3, 3), local_rot (F, 22, 3, 3), root_pos (F, 3))`.
    """
    local = euler_to_matrix(euler_deg)
    local[:, 0] = yaw_matrix(yaw_deg) @ local[:, 0]
    offsets = shape.offsets()
    f = euler_deg.shape[0]
    root = np.zeros((f, 3))
    root[:, 0], root[:, 2] = root_xz[:, 0], root_xz[:, 1]
    pos, glob = forward_kinematics(local, root, offsets)
    lift = np.max(np.stack([FLOOR_CLEARANCE[n] * shape.height - pos[:, J[n], 1] for n in FLOOR_CLEARANCE], -1), -1)
    lift = lift + air
    pos[..., 1] += lift[:, None]
    root[:, 1] = lift
    return pos, glob, local, root


def head_frame(joints: np.ndarray, glob: np.ndarray, shape: BodyShape):
    """Centre `(F, 3)` and rotation `(F, 3, 3)` of the head sphere (local axes: +X left, +Y up, +Z face)."""
    r = shape.radii["head"]
    rot = glob[:, J["head"]]
    centre = joints[:, J["head"]] + rot @ np.array([0.0, 0.55 * r, 0.12 * r])
    return centre, rot


#: Face points on the head sphere, unit directions in head-local axes (+X left, +Y up, +Z forward).
FACE_DIRS = {
    "nose": (0.0, -0.05, 1.0),
    "l_eye": (0.34, 0.22, 0.91),
    "r_eye": (-0.34, 0.22, 0.91),
    "l_ear": (1.0, 0.0, -0.05),
    "r_ear": (-1.0, 0.0, -0.05),
}
MOUTH_DIR = (0.0, -0.42, 0.9)


def face_points(centre: np.ndarray, rot: np.ndarray, radius: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (world position `(F, 3)`, world unit direction `(F, 3)`) for nose, eyes and ears."""
    out = {}
    for name, d in FACE_DIRS.items():
        d = np.asarray(d) / np.linalg.norm(d)
        wd = rot @ d
        out[name] = (centre + radius * wd, wd)
    return out
