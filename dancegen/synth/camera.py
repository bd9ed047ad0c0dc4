"""Pinhole camera tracks for the synthetic world: automatic framing, static / pan / zoom / shake.

OpenCV conventions (x right, y down, z forward; `X_cam = R @ X_world + t`), pixel centres at integer coordinates
(the principal point of a W x H image is ((W-1)/2, (H-1)/2)). Pan and shake are pure rotations about the camera
centre and zoom changes only the focal length, so their background flow is a homography (K' R' R^T K^-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dancegen.synth.appearance import Scene


@dataclass
class CameraTrack:
    """Per-frame intrinsics and extrinsics.

    Attributes:
        K: `(F, 3, 3)` intrinsics.
        R: `(F, 3, 3)` world -> camera rotation.
        t: `(F, 3)` world -> camera translation (metres).
        width, height: Image size.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    @property
    def centers(self) -> np.ndarray:
        """`(F, 3)` camera centres in world coordinates."""
        return -np.einsum("fji,fj->fi", self.R, self.t)

    def project(self, X: np.ndarray, frame: int | slice = slice(None)):
        """Project world points `(F, N, 3)` (or `(N, 3)` with an int frame) -> `(xy (..., 2), z (...))`."""
        K, R, t = self.K[frame], self.R[frame], self.t[frame]
        if np.ndim(K) == 2:
            xc = X @ R.T + t
            uvw = xc @ K.T
        else:
            xc = np.einsum("fij,fnj->fni", R, X) + t[:, None]
            uvw = np.einsum("fij,fnj->fni", K, xc)
        z = xc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = uvw[..., :2] / uvw[..., 2:3]
        return xy, z

    def to_dict(self) -> dict:
        return {
            "convention": "opencv: X_cam = R @ X_world + t; x right, y down, z forward; world Y-up metres; "
            "pixel centres at integer coordinates",
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """World -> camera rotation for a camera at `eye` looking at `target` (OpenCV axes)."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd])


def _rot_cam(ax: np.ndarray, ay: np.ndarray, az: np.ndarray) -> np.ndarray:
    """`(F,)` small rotations in degrees about the camera's own x (tilt), y (pan), z (roll) axes -> `(F, 3, 3)`."""
    ax, ay, az = (np.radians(a) for a in (ax, ay, az))
    f = ax.shape[0]
    out = np.zeros((f, 3, 3))
    for i in range(f):
        cx, sx, cy, sy, cz, sz = (
            np.cos(ax[i]),
            np.sin(ax[i]),
            np.cos(ay[i]),
            np.sin(ay[i]),
            np.cos(az[i]),
            np.sin(az[i]),
        )
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        out[i] = rz @ ry @ rx
    return out


def _motion(scene: Scene, num_frames: int, rng: np.random.Generator):
    """Relative camera rotation `(F, 3, 3)` and focal factor `(F,)` for the scene's camera motion."""
    f = num_frames
    s = np.linspace(0.0, 1.0, f) if f > 1 else np.zeros(1)
    zero = np.zeros(f)
    focal = np.ones(f)
    if scene.camera_motion == "pan":
        rel = _rot_cam(zero, scene.motion_amount * (s - 0.5), zero)
    elif scene.camera_motion == "zoom":
        rel = _rot_cam(zero, zero, zero)
        focal = scene.motion_amount**s
    elif scene.camera_motion == "shake":
        t = np.arange(f, dtype=float)
        angles = []
        for _ in range(3):
            freqs = rng.uniform(0.05, 0.25, 3)
            phases = rng.uniform(0, 2 * np.pi, 3)
            angles.append(scene.motion_amount * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).mean(0))
        rel = _rot_cam(angles[0], angles[1], 0.3 * angles[2])
    else:
        rel = _rot_cam(zero, zero, zero)
    return rel, focal


def frame_camera(
    points: np.ndarray, width: int, height: int, scene: Scene, rng: np.random.Generator, margin: float = 0.06
) -> CameraTrack:
    """A camera track that keeps every frame's `points` `(F, N, 3)` inside the image (with `margin`).

    The camera sits at the scene's azimuth and height, looks at the centre of the motion's bounding box, and its
    distance is the smallest (binary search) at which all points of all frames fit for the whole camera motion.
    """
    f = points.shape[0]
    pts = points.reshape(-1, 3)
    lo, hi = pts.min(0), pts.max(0)
    target = (lo + hi) / 2
    az = np.radians(scene.azimuth)
    direction = np.array([np.sin(az), 0.0, np.cos(az)])
    fy = (height / 2) / np.tan(np.radians(scene.fov) / 2)
    rel, focal = _motion(scene, f, rng)
    cx, cy = (width - 1) / 2, (height - 1) / 2

    def build(dist: float) -> CameraTrack:
        eye = target + dist * direction
        eye[1] = scene.height
        r0 = look_at(eye, target)
        R = rel @ r0
        t = -R @ eye
        K = np.zeros((f, 3, 3))
        K[:, 0, 0] = K[:, 1, 1] = fy * focal
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1.0
        return CameraTrack(K, R, t, width, height)

    def fits(dist: float) -> bool:
        cam = build(dist)
        xy, z = cam.project(points)
        if (z < 0.3).any():
            return False
        mx, my = margin * width, margin * height
        return bool(
            (xy[..., 0] >= mx).all()
            and (xy[..., 0] <= width - 1 - mx).all()
            and (xy[..., 1] >= my).all()
            and (xy[..., 1] <= height - 1 - my).all()
        )

    lo_d, hi_d = 0.8, 4.0
    while not fits(hi_d) and hi_d < 200:
        hi_d *= 1.6
    for _ in range(22):
        mid = 0.5 * (lo_d + hi_d)
        lo_d, hi_d = (lo_d, mid) if fits(mid) else (mid, hi_d)
    return build(hi_d)
