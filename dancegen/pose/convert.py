"""Converters between pose formats (COCO-18/17, DWPose-133, MediaPipe-33, AIST++) and 3D -> 2D projection.

Follows ../shared/specs/prior-art.md §3.1-3.5: COCO-17 -> COCO-18 inserts the neck as the mean of the shoulders,
visible only when both shoulders score above 0.3 (DWPose `wholebody.py`); DWPose-133 carries feet, a 68-point face
and two 21-point hands; HumanML3D-22 has no face points, so they are synthesised from head, neck and shoulders
(the gap named in §3.5).

Conversion is by joint name: a target joint takes the source joint of the same name (MediaPipe's `foot_index` is
treated as DWPose's `big_toe`), the COCO-18 neck is derived when the source has none, and every other joint is
missing (0, 0, 0). MediaPipe's and COCO's `l_`/`r_` both mean the person's own left/right, so no swap is needed.

Lossy directions (everything else is exact):
    * to coco17/aist/mediapipe33: the neck is dropped (it is re-derived from the shoulders on the way back).
    * to coco18/coco17/aist: DWPose feet (17-22) and MediaPipe's eye corners, mouth, heels, toes and hand points
      (pinky/index/thumb) are dropped.
    * to mediapipe33: DWPose small toes are dropped; eye corners, mouth and hand points come out missing.
    * to dwpose133: a 70-point OpenPose face keeps its first 68 points (the two pupils are dropped); hands and face
      move from `PoseSequence.hands/face` into the keypoint array (the fields are then None).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO17, COCO18, HUMANML3D22, get_skeleton

#: Formats `convert` understands (all 2D image keypoints).
FORMATS = ("coco18", "coco17", "aist", "dwpose133", "mediapipe33")

#: Confidence both shoulders must exceed for a derived neck to count as visible (DWPose wholebody.py).
NECK_THRESHOLD = 0.3

# Joints that are the same point under different names (MediaPipe "foot_index" = toe tip = COCO-WholeBody big toe).
_ALIASES = {"l_foot_index": "l_big_toe", "r_foot_index": "r_big_toe"}

_DW_FACE = slice(23, 91)
_DW_LHAND = slice(91, 112)
_DW_RHAND = slice(112, 133)


def _canonical(name: str) -> str:
    return _ALIASES.get(name, name)


def _index_map(src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (dst_idx, src_idx) of joints present in both layouts (hands/face of DWPose excluded)."""
    s_names = {_canonical(n): i for i, n in enumerate(get_skeleton(src).joints)}
    dst_idx, src_idx = [], []
    for j, name in enumerate(get_skeleton(dst).joints):
        if dst == "dwpose133" and j >= _DW_FACE.start:
            break
        i = s_names.get(_canonical(name))
        if i is not None and not (src == "dwpose133" and i >= _DW_FACE.start):
            dst_idx.append(j)
            src_idx.append(i)
    return np.asarray(dst_idx, dtype=int), np.asarray(src_idx, dtype=int)


def neck_from_shoulders(
    l_shoulder: np.ndarray, r_shoulder: np.ndarray, threshold: float = NECK_THRESHOLD
) -> np.ndarray:
    """COCO-18 neck = mean of the shoulders, visible only if both shoulders score above `threshold`.

    Args:
        l_shoulder: `(..., 3)` x, y, confidence.
        r_shoulder: `(..., 3)` same layout.
        threshold: Shoulder confidence needed (0.3 in DWPose).

    Returns:
        `(..., 3)` neck; confidence = min of the two shoulders, or (0, 0, 0) when either is at or below threshold.
    """
    ok = (l_shoulder[..., 2] > threshold) & (r_shoulder[..., 2] > threshold)
    neck = np.zeros(np.broadcast_shapes(l_shoulder.shape, r_shoulder.shape), dtype=np.float32)
    neck[..., :2] = (l_shoulder[..., :2] + r_shoulder[..., :2]) / 2
    neck[..., 2] = np.minimum(l_shoulder[..., 2], r_shoulder[..., 2])
    neck[~ok] = 0.0
    return neck


def _face68(face: np.ndarray | None, f: int) -> np.ndarray:
    out = np.zeros((f, 68, 3), np.float32)
    if face is not None:
        k = min(68, face.shape[1])
        out[:, :k] = face[:, :k]
    return out


def convert(seq: PoseSequence, to: str) -> PoseSequence:
    """Convert a pose sequence to another keypoint layout.

    Args:
        seq: Input sequence in any of `FORMATS`.
        to: Target format name (one of `FORMATS`).

    Returns:
        A new PoseSequence in format `to`; joints the source lacks are (0, 0, 0). Image size, fps and meta carry
        over. Hands and face stay in `.hands`/`.face`, except for dwpose133, which holds them in its keypoints.

    Raises:
        ValueError: Unknown format.
    """
    for name in (seq.format, to):
        if name not in FORMATS:
            raise ValueError(f"cannot convert pose format {name!r}; convertible formats: {', '.join(FORMATS)}")
    if to == seq.format:
        return seq.replace()
    f = seq.num_frames
    src = seq.keypoints
    out = np.zeros((f, get_skeleton(to).num_joints, 3), np.float32)
    dst_idx, src_idx = _index_map(seq.format, to)
    out[:, dst_idx] = src[:, src_idx]

    if to == "coco18" and "neck" not in get_skeleton(seq.format).joints:
        sk = get_skeleton(seq.format)
        out[:, COCO18.index("neck")] = neck_from_shoulders(
            src[:, sk.index("l_shoulder")], src[:, sk.index("r_shoulder")]
        )

    hands, face = seq.hands, seq.face
    if seq.format == "dwpose133":
        hands = np.stack([src[:, _DW_LHAND], src[:, _DW_RHAND]], axis=1)
        face = src[:, _DW_FACE].copy()
    if to == "dwpose133":
        if hands is not None:
            out[:, _DW_LHAND] = hands[:, 0]
            out[:, _DW_RHAND] = hands[:, 1]
        out[:, _DW_FACE] = _face68(face, f)
        hands = face = None
    meta = dict(seq.meta)
    meta.setdefault("converted_from", seq.format)
    return PoseSequence(
        out, format=to, width=seq.width, height=seq.height, fps=seq.fps, hands=hands, face=face, meta=meta
    )


# ---------------------------------------------------------------------------------------------------------------
# 3D -> 2D
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Camera:
    """Pinhole camera, world -> camera `X_c = R @ X_w + t`, OpenCV axes (x right, y down, z forward).

    Attributes:
        fx, fy: Focal lengths in pixels.
        cx, cy: Principal point in pixels.
        R: `(3, 3)` rotation world -> camera.
        t: `(3,)` translation world -> camera (same length unit as the joints).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self):
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.t = np.asarray(self.t, dtype=np.float64).reshape(3)
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-5):
            raise ValueError("R must be a rotation matrix (R @ R.T == I)")

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, `(3,)`."""
        return -self.R.T @ self.t

    @classmethod
    def look_at(
        cls, eye, target, up=(0.0, 1.0, 0.0), width: int = 512, height: int = 512, fov_deg: float = 40.0
    ) -> Camera:
        """Camera at `eye` looking at `target`; `up` is the world up axis (Y-up for HumanML3D).

        `fov_deg` is the vertical field of view; square pixels, principal point at the image centre.
        """
        eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
        fwd = target - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, up)
        if np.linalg.norm(right) < 1e-8:
            raise ValueError("look_at: view direction is parallel to up")
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd])
        f = (height / 2) / np.tan(np.radians(fov_deg) / 2)
        return cls(f, f, width / 2, height / 2, R, -R @ eye)

    @classmethod
    def from_aist(cls, cam: dict) -> Camera:
        """From one entry of an AIST++ `cameras/setting*.json` (keys `matrix`, `rotation` (Rodrigues), `translation`).

        Lens distortion (`distortions`) is ignored.
        """
        K = np.asarray(cam["matrix"], np.float64).reshape(3, 3)
        return cls(K[0, 0], K[1, 1], K[0, 2], K[1, 2], rodrigues(cam["rotation"]), cam["translation"])


def rodrigues(rvec) -> np.ndarray:
    """Axis-angle `(3,)` -> rotation matrix `(3, 3)` (same as cv2.Rodrigues)."""
    r = np.asarray(rvec, np.float64).reshape(3)
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def project_joints(joints3d: np.ndarray, camera: Camera, return_depth: bool = False):
    """Project world joints through a pinhole camera.

    Args:
        joints3d: `(F, J, 3)` world positions.
        camera: The camera.
        return_depth: Also return the camera-space depth.

    Returns:
        `(F, J, 2)` pixel coordinates (float64); with `return_depth`, also `(F, J)` depth z_c. Points at or behind
        the camera (z_c <= 1e-6) get NaN coordinates.
    """
    x = np.asarray(joints3d, np.float64)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"joints3d must have shape (F, J, 3), got {x.shape}")
    xc = x @ camera.R.T + camera.t
    z = xc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([camera.fx * xc[..., 0] / z + camera.cx, camera.fy * xc[..., 1] / z + camera.cy], axis=-1)
    uv[z <= 1e-6] = np.nan
    return (uv, z) if return_depth else uv


def fit_camera(
    joints3d: np.ndarray,
    width: int,
    height: int,
    up_axis: int = 1,
    azimuth_deg: float = 0.0,
    fov_deg: float = 40.0,
    margin: float = 0.1,
) -> Camera:
    """A camera that keeps the whole motion in frame, looking at the actor's front (+Z for HumanML3D).

    Args:
        joints3d: `(F, J, 3)` world positions (all frames are framed).
        width, height: Image size in pixels.
        up_axis: World up axis index (1 = Y-up, HumanML3D).
        azimuth_deg: Rotate the camera about the up axis (0 = in front, on +Z when up is Y).
        fov_deg: Vertical field of view.
        margin: Fraction of the image kept free on each side.
    """
    pts = np.asarray(joints3d, np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        raise ValueError("fit_camera: no finite joints")
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    up = np.zeros(3)
    up[up_axis] = 1.0
    fwd_axis, side_axis = (2, 0) if up_axis == 1 else ((0, 1) if up_axis == 2 else (2, 1))
    a = np.radians(azimuth_deg)
    direction = np.zeros(3)
    direction[fwd_axis], direction[side_axis] = np.cos(a), np.sin(a)
    half_extent = np.linalg.norm(hi - lo) / 2 + 1e-6
    tan_v = np.tan(np.radians(fov_deg) / 2) * (1 - 2 * margin)
    tan_h = tan_v * width / height
    dist = half_extent / min(tan_v, tan_h) + half_extent
    return Camera.look_at(centre + dist * direction, centre, up, width, height, fov_deg)


#: Face points synthesised for HumanML3D, as offsets from the head joint in units of |head - neck|, along
#: (forward, up, person's left). Heuristic proportions of an average head (SMPL's head joint sits near the skull
#: base); they only need to look like OpenPose's face points to a pose ControlNet.
FACE_OFFSETS = {
    "nose": (1.3, 0.6, 0.0),
    "l_eye": (1.1, 1.1, 0.45),
    "r_eye": (1.1, 1.1, -0.45),
    "l_ear": (0.0, 0.9, 1.0),
    "r_ear": (0.0, 0.9, -1.0),
}
#: A synthesised face point counts as visible when (unit offset) . (unit direction to the camera) > this.
FACE_VISIBILITY_COS = -0.25

#: HumanML3D-22 -> COCO-18 body joints with the same name (neck is the shoulder midpoint, as everywhere else in
#: dancegen; the face comes from `synthesize_face_3d`).
HUMANML3D_TO_COCO18 = {
    "r_shoulder": "r_shoulder",
    "r_elbow": "r_elbow",
    "r_wrist": "r_wrist",
    "l_shoulder": "l_shoulder",
    "l_elbow": "l_elbow",
    "l_wrist": "l_wrist",
    "r_hip": "r_hip",
    "r_knee": "r_knee",
    "r_ankle": "r_ankle",
    "l_hip": "l_hip",
    "l_knee": "l_knee",
    "l_ankle": "l_ankle",
}


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def synthesize_face_3d(joints3d: np.ndarray) -> dict[str, np.ndarray]:
    """Nose, eyes and ears in 3D from HumanML3D head, neck and shoulders.

    The head frame is: up = head - neck; forward = (person's left x up), left = shoulder l - r, orthogonalised.

    Args:
        joints3d: `(F, 22, 3)` HumanML3D joints.

    Returns:
        Name -> `(F, 3)` positions for `FACE_OFFSETS`, plus "_head" (F, 3) and "_dirs" (F, 5, 3) unit offsets.
    """
    j = np.asarray(joints3d, np.float64)
    hi = HUMANML3D22.index
    head, neck = j[:, hi("head")], j[:, hi("neck")]
    up_v = head - neck
    s = np.linalg.norm(up_v, axis=-1, keepdims=True)
    up = _unit(up_v)
    left = j[:, hi("l_shoulder")] - j[:, hi("r_shoulder")]
    fwd = _unit(np.cross(left, up))
    left = np.cross(up, fwd)
    out = {}
    dirs = []
    for name, (a, b, c) in FACE_OFFSETS.items():
        off = a * fwd + b * up + c * left
        out[name] = head + s * off
        dirs.append(_unit(off))
    out["_head"] = head
    out["_dirs"] = np.stack(dirs, axis=1)
    return out


def _to_sequence(
    uv: np.ndarray, conf: np.ndarray, fmt: str, width: int, height: int, fps: float, meta: dict
) -> PoseSequence:
    bad = ~np.isfinite(uv).all(-1)
    kps = np.concatenate([np.where(bad[..., None], 0.0, uv), np.where(bad, 0.0, conf)[..., None]], -1)
    return PoseSequence(kps.astype(np.float32), format=fmt, width=width, height=height, fps=fps, meta=meta)


def humanml3d_to_coco18(
    joints3d: np.ndarray, camera: Camera | None, width: int, height: int, fps: float = 20.0, occlude_face: bool = True
) -> PoseSequence:
    """Project HumanML3D / MDM joints to a COCO-18 PoseSequence, synthesising nose, eyes and ears.

    Args:
        joints3d: `(F, 22, 3)` positions (Y-up, metres), e.g. HumanML3D `new_joints/*.npy` or MDM output.
        camera: Projection camera; None frames the motion with `fit_camera` from the front.
        width, height: Image size in pixels.
        fps: Frame rate (HumanML3D is 20 fps).
        occlude_face: Mark nose/eyes/ears turned away from the camera as missing (confidence 0), as a 2D detector
            would not see them (a back view keeps the ears only).

    Returns:
        PoseSequence (coco18), confidence 1 for projected joints, 0 for joints behind the camera or occluded.
    """
    j = np.asarray(joints3d, np.float64)
    if j.ndim != 3 or j.shape[1:] != (22, 3):
        raise ValueError(f"HumanML3D joints must have shape (F, 22, 3), got {j.shape}")
    if camera is None:
        camera = fit_camera(j, width, height)
    f = j.shape[0]
    body = np.zeros((f, 18, 3))
    conf = np.ones((f, 18))
    for c_name, h_name in HUMANML3D_TO_COCO18.items():
        body[:, COCO18.index(c_name)] = j[:, HUMANML3D22.index(h_name)]
    body[:, COCO18.index("neck")] = (j[:, HUMANML3D22.index("l_shoulder")] + j[:, HUMANML3D22.index("r_shoulder")]) / 2
    face = synthesize_face_3d(j)
    to_cam = _unit(camera.center[None] - face["_head"])
    for k, name in enumerate(FACE_OFFSETS):
        body[:, COCO18.index(name)] = face[name]
        if occlude_face:
            visible = (face["_dirs"][:, k] * to_cam).sum(-1) > FACE_VISIBILITY_COS
            conf[:, COCO18.index(name)] = visible.astype(np.float64)
    uv = project_joints(body, camera)
    return _to_sequence(uv, conf, "coco18", width, height, fps, {"source": "humanml3d22"})


def aist_keypoints3d_to_coco18(
    keypoints3d: np.ndarray, camera: Camera, width: int, height: int, fps: float = 60.0
) -> PoseSequence:
    """Project AIST++ `keypoints3d` (COCO-17 order) through a camera and convert to COCO-18.

    Args:
        keypoints3d: `(F, 17, 3)` world positions (AIST++ units, cm); NaN rows count as missing.
        camera: e.g. `Camera.from_aist(...)` for one of the nine views.
        width, height: Image size (AIST++ videos are 1920x1080).
        fps: AIST++ is 60 fps.

    Returns:
        PoseSequence (coco18) with confidence 1 for projected joints and the neck derived from the shoulders.
    """
    k = np.asarray(keypoints3d, np.float64)
    if k.ndim != 3 or k.shape[1:] != (COCO17.num_joints, 3):
        raise ValueError(f"AIST++ keypoints3d must have shape (F, 17, 3), got {k.shape}")
    uv = project_joints(k, camera)
    seq = _to_sequence(uv, np.ones(k.shape[:2]), "aist", width, height, fps, {"source": "aist++ keypoints3d"})
    return convert(seq, "coco18")
