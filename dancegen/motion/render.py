"""Analytic ray-capsule renderer of the capsule body: depth, DensePose-like IUV, normals and a shaded preview.

LatentMan spec (../shared/specs/latentman.md) §2.2 and §6 "render/": a pure numpy caster, pinhole camera, ray vs
cylinder plus the two end spheres of every capsule (`dancegen.motion.body.CapsuleBody`), nearest hit. One fixed
perspective camera (yfov 60 degrees) is framed once on the whole sequence and kept for every frame; an optional pixel
shift moves the picture like the official code's `np.roll` (but new content, not wrapped content, enters at the
border).

Camera conventions (as `dancegen.synth.camera`): OpenCV, `X_cam = R @ X_world + t`, x right, y down, z forward,
pixel centres at integer coordinates (the principal point of a W x H image is ((W-1)/2, (H-1)/2) plus the shift).
`fixed_camera` looks along world -Z from in front of the body (+Z), so a body facing +Z shows its front and its left
(+X) is on the image's right.

Outputs (`BodyRender`), T frames of H x W:

* `depth` float32 `(T, H, W)`: camera z of the nearest hit in metres, **0 on the background**.
* `iuv` float32 `(T, H, W, 3)`: (part label 0..24 with 0 = background, u in [0, 1], v in [0, 1]) as
  `dancegen.metrics.consistency` expects (not quantised; `iuv_uint8` gives DensePose's uint8 form).
* `mask` bool `(T, H, W)` = label > 0 = depth > 0.
* `normals` float32 `(T, H, W, 3)`: unit surface normals in camera coordinates (0 on the background).
* `shaded` uint8 `(T, H, W, 3)`: grey Lambert shading under a head light (0.15 ambient), black background.
* `capsule` int16 `(T, H, W)`: index of the hit capsule into `CAPSULE_NAMES`, -1 on the background.

Speed: per frame and capsule only the pixels inside the capsule's projected bounding box are tested (all in float64,
deterministic); 8 frames of 512 x 512 take well under a second on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dancegen.errors import InputError
from dancegen.motion.body import CapsuleBody, capsule_surface, check_joints
from dancegen.pose.depth import DEPTH_ENCODINGS, depth_control_image

#: Ambient term of the preview shading.
AMBIENT = 0.15
#: Closest camera distance (metres from the body's bounding box) `fixed_camera` allows.
MIN_DISTANCE = 0.5


def _size(size) -> tuple[int, int]:
    """`(H, W)` from an int or a pair."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(x) for x in size)
        except (TypeError, ValueError):
            raise InputError(f"size must be an int or (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"size must be positive, got {(h, w)}")
    return h, w


def _shift(shift_px) -> tuple[float, float]:
    try:
        dx, dy = (float(s) for s in shift_px)
    except (TypeError, ValueError):
        raise InputError(f"shift_px must be (dx, dy) pixels, got {shift_px!r}") from None
    return dx, dy


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera (OpenCV conventions, see the module docstring).

    Attributes:
        K: `(3, 3)` intrinsics (fx, fy, cx, cy in pixels).
        R: `(3, 3)` world -> camera rotation.
        t: `(3,)` world -> camera translation (metres).
        width, height: image size in pixels.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def yfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / 2.0 / self.K[1, 1]))

    def to_camera(self, points) -> np.ndarray:
        """World points `(..., 3)` -> camera coordinates `(..., 3)`."""
        return np.asarray(points, np.float64) @ self.R.T + self.t

    def project(self, points) -> np.ndarray:
        """World points `(..., 3)` -> pixel coordinates `(..., 2)` (x, y); points behind the camera give NaN."""
        xc = self.to_camera(points)
        z = xc[..., 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = (xc[..., :2] / z) * np.diag(self.K)[:2] + self.K[:2, 2]
        return np.where(z > 0, xy, np.nan)

    def shifted(self, dx: float = 0.0, dy: float = 0.0) -> Camera:
        """The same camera with the picture moved by (dx, dy) pixels (right, down): a principal point shift."""
        if dx == 0 and dy == 0:
            return self
        k = self.K.copy()
        k[0, 2] += dx
        k[1, 2] += dy
        return replace(self, K=k)

    def pixel_rays(self) -> np.ndarray:
        """`(H, W, 3)` camera-frame ray directions through the pixel centres, scaled to z = 1 (so ray t = depth)."""
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        x = (np.arange(self.width, dtype=np.float64) - cx) / fx
        y = (np.arange(self.height, dtype=np.float64) - cy) / fy
        d = np.empty((self.height, self.width, 3))
        d[..., 0] = x[None, :]
        d[..., 1] = y[:, None]
        d[..., 2] = 1.0
        return d

    def to_dict(self) -> dict:
        return {"convention": "opencv: X_cam = R @ X_world + t; x right, y down, z forward; world Y-up metres; "
                              "pixel centres at integer coordinates",
                "K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(),
                "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(np.asarray(d["K"], np.float64), np.asarray(d["R"], np.float64), np.asarray(d["t"], np.float64),
                   int(d["width"]), int(d["height"]))


def fixed_camera(joints, size=512, yfov_deg: float = 60.0, margin: float = 0.1, shift_px=(0, 0),
                 body: CapsuleBody | None = None) -> Camera:
    """One perspective camera for the whole sequence: in front of the body (+Z) looking along -Z, no tilt.

    Its axis goes through the centre of the bounding box of every capsule of every frame, and its distance makes that
    box's near face (so the whole box) fill at most `1 - 2 margin` of the image height and width. Placed once, it
    keeps the body in frame in every frame.

    Args:
        joints: `(T, 22, 3)` joints (or a Motion).
        size: image size, int or (H, W).
        yfov_deg: vertical field of view (the official code's pi/3).
        margin: free border on each side, as a fraction of the image size, in [0, 0.5).
        shift_px: (dx, dy) pixels the picture moves (right, down), like the official `np.roll` of the renders.
        body: the body whose capsules are framed (default `CapsuleBody()`).
    """
    caps = (body or CapsuleBody()).capsules(joints)
    return framing_camera(*caps.bounds(), size=size, yfov_deg=yfov_deg, margin=margin, shift_px=shift_px)


def framing_camera(lo, hi, size=512, yfov_deg: float = 60.0, margin: float = 0.1, shift_px=(0, 0)) -> Camera:
    """The `fixed_camera` framing of a world box ``lo`` .. ``hi`` (any body: capsules, a mesh's vertices)."""
    h, w = _size(size)
    if not 0.0 <= margin < 0.5:
        raise InputError(f"margin must be in [0, 0.5), got {margin}")
    if not 0.0 < yfov_deg < 180.0:
        raise InputError(f"yfov_deg must be in (0, 180), got {yfov_deg}")
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    centre = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo)
    tan_y = math.tan(math.radians(yfov_deg) / 2.0)
    tan_x = tan_y * w / h
    fill = 1.0 - 2.0 * margin
    dist = max(half[1] / (fill * tan_y), half[0] / (fill * tan_x), MIN_DISTANCE)
    eye = np.array([centre[0], centre[1], hi[2] + dist])
    rot = np.diag([1.0, -1.0, -1.0])
    f = (h / 2.0) / tan_y
    k = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    cam = Camera(k, rot, -rot @ eye, w, h)
    return cam.shifted(*_shift(shift_px))


def project_joints(joints, camera: Camera, shift_px=(0, 0)) -> np.ndarray:
    """`(T, 22, 2)` pixel coordinates (x, y) of the joints in `camera` moved by `shift_px`, matching `render_body`."""
    j = check_joints(joints)
    return camera.shifted(*_shift(shift_px)).project(j)


@dataclass
class BodyRender:
    """What `render_body` returns (fields in the module docstring)."""

    depth: np.ndarray
    iuv: np.ndarray
    mask: np.ndarray
    normals: np.ndarray
    shaded: np.ndarray
    capsule: np.ndarray
    camera: Camera

    @property
    def labels(self) -> np.ndarray:
        """`(T, H, W)` int part labels (0 = background)."""
        return self.iuv[..., 0].astype(np.int64)

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])


def iuv_uint8(iuv: np.ndarray) -> np.ndarray:
    """DensePose's uint8 form of an IUV map: (label, round(255 u), round(255 v))."""
    a = np.asarray(iuv, np.float64)
    out = np.empty(a.shape, np.uint8)
    out[..., 0] = np.rint(a[..., 0]).astype(np.uint8)
    out[..., 1:] = np.rint(np.clip(a[..., 1:], 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def _screen_box(a: np.ndarray, b: np.ndarray, r: float, cam: Camera) -> tuple[int, int, int, int] | None:
    """Pixel box (x0, x1, y0, y1), end-exclusive, bounding the capsule a -> b (camera frame) in `cam`'s image."""
    lo = np.minimum(a, b) - r
    hi = np.maximum(a, b) + r
    if hi[2] <= 1e-6:
        return None  # wholly behind the camera
    if lo[2] <= 1e-6:
        return 0, cam.width, 0, cam.height  # straddles the camera plane: test every pixel
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    xy = corners[:, :2] / corners[:, 2:3] * np.diag(cam.K)[:2] + cam.K[:2, 2]
    x0 = max(int(math.floor(xy[:, 0].min())) - 1, 0)
    x1 = min(int(math.ceil(xy[:, 0].max())) + 2, cam.width)
    y0 = max(int(math.floor(xy[:, 1].min())) - 1, 0)
    y1 = min(int(math.ceil(xy[:, 1].max())) + 2, cam.height)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def _ray_capsule(d: np.ndarray, a: np.ndarray, w: np.ndarray, length: float, r: float) -> np.ndarray:
    """Nearest positive hit distance of rays `0 + t d` (`(N, 3)`) with a capsule (inf where none)."""
    r2 = r * r
    dd = np.einsum("ij,ij->i", d, d)
    t_best = np.full(len(d), np.inf)
    # end spheres: |t d - c|^2 = r^2  ->  t = (d.c - sqrt((d.c)^2 - dd (c.c - r^2))) / dd
    for c in (a, a + length * w):
        dc = d @ c
        disc = dc * dc - dd * (c @ c - r2)
        hit = disc >= 0.0
        t = np.where(hit, (dc - np.sqrt(np.where(hit, disc, 0.0))) / dd, np.inf)
        t_best = np.minimum(t_best, np.where(t > 1e-9, t, np.inf))
    if length > 1e-12:
        # infinite cylinder about a + s w: |m_perp + t d_perp|^2 = r^2 with m = -a
        dw = d @ w
        mw = -(a @ w)
        aa = dd - dw * dw
        hb = -(d @ a) - dw * mw  # half of B
        cc = (a @ a) - mw * mw - r2
        disc = hb * hb - aa * cc
        hit = (disc >= 0.0) & (aa > 1e-12)
        safe_aa = np.where(hit, aa, 1.0)
        t = np.where(hit, (-hb - np.sqrt(np.where(hit, disc, 0.0))) / safe_aa, np.inf)
        s = mw + t * dw
        ok = hit & (t > 1e-9) & (s >= 0.0) & (s <= length)
        t_best = np.minimum(t_best, np.where(ok, t, np.inf))
    return t_best


def render_body(joints, size=512, camera: Camera | None = None, shift_px=(0, 0),
                body: CapsuleBody | None = None) -> BodyRender:
    """Ray-cast the capsule body of every frame.

    Args:
        joints: `(T, 22, 3)` joints in metres (or a `(22, 3)` frame, or a Motion).
        size: image size, int or (H, W); ignored when `camera` is given (its size is used).
        camera: the camera; default `fixed_camera(joints, size, body=body)` (framed on this whole sequence).
        shift_px: (dx, dy) pixels the picture moves (right, down), applied on top of the camera's own.
        body: the body model (default `CapsuleBody()`).

    Returns:
        A `BodyRender`; `camera` is the camera actually used (shift included).
    """
    j = check_joints(joints)
    body = body or CapsuleBody()
    cam = camera if camera is not None else fixed_camera(j, size, body=body)
    cam = cam.shifted(*_shift(shift_px))
    h, w = cam.height, cam.width
    caps = body.capsules(j).transformed(cam.R, cam.t)
    rays = cam.pixel_rays()
    ray_norm = np.linalg.norm(rays, axis=-1)
    n_frames, n_caps = caps.start.shape[:2]
    depth = np.zeros((n_frames, h, w), np.float32)
    iuv = np.zeros((n_frames, h, w, 3), np.float32)
    normals = np.zeros((n_frames, h, w, 3), np.float32)
    shaded = np.zeros((n_frames, h, w, 3), np.uint8)
    capsule = np.full((n_frames, h, w), -1, np.int16)
    for f in range(n_frames):
        start, axis, length, radius = caps.start[f], caps.axis[f], caps.length[f], caps.radius
        zbuf = np.full((h, w), np.inf)
        kbuf = np.full((h, w), -1, np.int16)
        boxes = [_screen_box(start[k], caps.end[f, k], float(radius[k]), cam) for k in range(n_caps)]
        for k, box in enumerate(boxes):
            if box is None:
                continue
            x0, x1, y0, y1 = box
            t = _ray_capsule(rays[y0:y1, x0:x1].reshape(-1, 3), start[k], axis[k], float(length[k]),
                             float(radius[k])).reshape(y1 - y0, x1 - x0)
            zsub, ksub = zbuf[y0:y1, x0:x1], kbuf[y0:y1, x0:x1]
            closer = t < zsub
            zsub[closer] = t[closer]
            ksub[closer] = k
        for k, box in enumerate(boxes):
            if box is None:
                continue
            x0, x1, y0, y1 = box
            ys, xs = np.nonzero(kbuf[y0:y1, x0:x1] == k)
            if len(ys) == 0:
                continue
            ys, xs = ys + y0, xs + x0
            tk = zbuf[ys, xs]
            pts = tk[:, None] * rays[ys, xs]
            lab, u, v, nrm = capsule_surface(pts, start[k], axis[k], float(length[k]), float(radius[k]),
                                             caps.e1[f, k], caps.e2[f, k], caps.labels[k])
            depth[f, ys, xs] = tk
            iuv[f, ys, xs, 0] = lab
            iuv[f, ys, xs, 1] = u
            iuv[f, ys, xs, 2] = v
            normals[f, ys, xs] = nrm
            lambert = np.clip(-(nrm * rays[ys, xs]).sum(-1) / ray_norm[ys, xs], 0.0, 1.0)
            grey = np.rint(255.0 * (AMBIENT + (1.0 - AMBIENT) * lambert)).astype(np.uint8)
            shaded[f, ys, xs] = grey[:, None]
        capsule[f] = kbuf
    return BodyRender(depth, iuv, capsule >= 0, normals, shaded, capsule, cam)


def depth_control(render: BodyRender, encoding: str = "inverse_norm") -> np.ndarray:
    """`(T, H, W)` uint8 depth ControlNet images of a render (`dancegen.pose.depth.depth_control_image`).

    "inverse_norm" (default): near-bright normalised disparity over the body, background 0; "official_linear":
    uint8(z / 5 * 255) on the body (the official code), background 0.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise InputError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got {encoding!r}")
    return depth_control_image(render.depth, mask=render.mask, encoding=encoding)
