"""2.5D renderer of the synthetic dancer with exact dense ground truth (flow, depth, part coordinates, masks).

Every body part is a shape in its own 2D frame, the projected bone: a limb or the torso is a tapered capsule
(p0 + s d + r W(s) n, s along the bone, r in [-1, 1] across it, elliptic end caps), the head is a sphere textured in
head-local 3D directions. Parts are z-buffered by a per-pixel depth (bone depth minus a rounded bulge), so they are
drawn back to front. Texture is a function of the local coordinates only, so the ground-truth flow of a body pixel is
exact for this rendering: take its local coordinates at frame t and map them with the part's local->image map at
frame t+1 (the sphere's point goes through the next head pose and camera). Background pixels are ray-cast onto the
floor (y = 0) and the wall, so they move with the camera (static camera -> zero flow; pan/zoom -> a homography).

Part indices (the "I" of the DensePose-like IUV maps): see `PART_NAMES`; 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dancegen.synth.appearance import COLOURS, HAIR, SKIN, Appearance, Scene, ValueNoise, pattern
from dancegen.synth.body import FACE_DIRS, MOUTH_DIR, BodyShape, J
from dancegen.synth.camera import CameraTrack

PART_NAMES = (
    "background",
    "torso",
    "head",
    "neck",
    "l_upper_arm",
    "r_upper_arm",
    "l_forearm",
    "r_forearm",
    "l_hand",
    "r_hand",
    "l_thigh",
    "r_thigh",
    "l_shin",
    "r_shin",
    "l_foot",
    "r_foot",
    "hair",
)
NUM_PARTS = len(PART_NAMES) - 1
TORSO, HEAD, HAIR_PART = 1, 2, 16
# Limb parts: (index, start joint, end joint or virtual point, radius key, start scale, end scale, caps (c0, c1)).
_LIMBS = (
    (3, "neck", "head", "neck", 1.0, 0.95, (0.6, 0.6)),
    (4, "l_shoulder", "l_elbow", "upper_arm", 1.0, 0.85, (1.0, 1.0)),
    (5, "r_shoulder", "r_elbow", "upper_arm", 1.0, 0.85, (1.0, 1.0)),
    (6, "l_elbow", "l_wrist", "forearm", 1.0, 0.8, (1.0, 1.0)),
    (7, "r_elbow", "r_wrist", "forearm", 1.0, 0.8, (1.0, 1.0)),
    (8, "l_wrist", "l_handtip", "hand", 0.75, 0.7, (0.8, 1.0)),
    (9, "r_wrist", "r_handtip", "hand", 0.75, 0.7, (0.8, 1.0)),
    (10, "l_hip", "l_knee", "thigh", 1.0, 0.78, (1.0, 1.0)),
    (11, "r_hip", "r_knee", "thigh", 1.0, 0.78, (1.0, 1.0)),
    (12, "l_knee", "l_ankle", "shin", 1.0, 0.68, (1.0, 1.0)),
    (13, "r_knee", "r_ankle", "shin", 1.0, 0.68, (1.0, 1.0)),
    (14, "l_ankle", "l_foot", "foot", 1.0, 0.85, (1.4, 1.0)),
    (15, "r_ankle", "r_foot", "foot", 1.0, 0.85, (1.4, 1.0)),
)
#: u of the IUV maps is (s - S_LO) / (S_HI - S_LO) clipped to [0, 1] for capsules (s runs past [0, 1] in the caps).
S_LO, S_HI = -0.4, 1.4
# Parameter columns of a capsule in one frame.
P0X, P0Y, DX, DY, NX, NY, W0, W1, C0, C1, Z0, Z1, BULGE = range(13)
_NCOL = 13
_SKY_DEPTH = 100.0
_HEAD_LIGHT = np.array([0.0, 0.35, 0.94]) / np.linalg.norm([0.0, 0.35, 0.94])


@dataclass
class FrameGeometry:
    """Per-frame part parameters (what the flow needs).

    Attributes:
        caps: `(K+1, 13)` capsule parameters per part (row 0 and the head row unused); NaN rows are not drawn.
        head_center: `(3,)` head sphere centre in camera coordinates.
        head_rot: `(3, 3)` head-local -> camera rotation.
        head_radius: Metres.
    """

    caps: np.ndarray
    head_center: np.ndarray
    head_rot: np.ndarray
    head_radius: float


def _rgb(name_or_rgb, table=COLOURS) -> np.ndarray:
    v = table[name_or_rgb] if isinstance(name_or_rgb, str) else name_or_rgb
    return np.asarray(v, dtype=np.float32)


class Renderer:
    """Renders one dancer in one scene; `render_frame` per frame, `flow` between frames.

    Args:
        appearance: The dancer's look.
        scene: Background and lighting.
        camera: Per-frame camera track (defines the image size).
        wall_plane: `(normal (3,), offset)` of the wall, `normal . X = offset`, normal pointing at the camera.
    """

    def __init__(self, appearance: Appearance, scene: Scene, camera: CameraTrack, wall_plane):
        self.app, self.scene, self.cam = appearance, scene, camera
        self.w, self.h = camera.width, camera.height
        self.wall_n, self.wall_d = np.asarray(wall_plane[0], float), float(wall_plane[1])
        self.wall_u = np.cross([0.0, 1.0, 0.0], self.wall_n)
        self.radii = appearance.body.radii
        self.noise_body = ValueNoise(appearance.noise_seed)
        self.noise_bg = ValueNoise(scene.noise_seed)
        a = appearance
        self.skin = _rgb(a.skin, SKIN)
        self.hair = _rgb(a.hair_colour, HAIR)
        self.top = (_rgb(a.top_colour), _rgb(a.top_colour2), a.top_pattern)
        self.bottom = (_rgb(a.bottom_colour), _rgb(a.bottom_colour2), a.bottom_pattern)
        self.shoes = _rgb(a.shoes)
        self._rest_lengths(appearance.body)
        self._bg_cache: dict = {}
        self._grid: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------------ geometry
    def _rest_lengths(self, shape: BodyShape) -> None:
        off = shape.offsets()
        # Each limb's end joint is the child of its start joint, so its rest offset is the bone.
        self.bone_len = {b: float(np.linalg.norm(off[J[b]])) for _, _, b, *_ in _LIMBS if b in J}
        self.hand_len = 0.17 * shape.height * shape.arms
        self.bone_len["l_handtip"] = self.bone_len["r_handtip"] = self.hand_len
        self.torso_len = float(
            np.linalg.norm(
                off[J["spine1"]]
                + off[J["spine2"]]
                + off[J["spine3"]]
                + 0.5 * (off[J["l_collar"]] + off[J["l_shoulder"]])
                + 0.5 * (off[J["r_collar"]] + off[J["r_shoulder"]])
                - 0.5 * (off[J["l_hip"]] + off[J["r_hip"]])
            )
        )
        self.torso_halfwidth = float(abs(off[J["l_collar"], 0] + off[J["l_shoulder"], 0]))

    def points_3d(self, joints: np.ndarray) -> dict[str, np.ndarray]:
        """World positions of the joints plus the virtual hand tips, `name -> (F, 3)`."""
        pts = {name: joints[:, i] for name, i in J.items()}
        for side in "lr":
            fore = joints[:, J[f"{side}_wrist"]] - joints[:, J[f"{side}_elbow"]]
            fore /= np.maximum(np.linalg.norm(fore, axis=-1, keepdims=True), 1e-9)
            pts[f"{side}_handtip"] = joints[:, J[f"{side}_wrist"]] + self.hand_len * fore
        return pts

    def geometry(
        self, frame: int, pts: dict[str, np.ndarray], head_center: np.ndarray, head_rot_world: np.ndarray
    ) -> FrameGeometry:
        """Part parameters at `frame` from world points (`points_3d`) and the head frame (world)."""
        K, R, t = self.cam.K[frame], self.cam.R[frame], self.cam.t[frame]
        fx = K[0, 0]

        def proj(X):
            xc = R @ X + t
            return (K @ xc)[:2] / xc[2], xc[2]

        caps = np.full((NUM_PARTS + 1, _NCOL), np.nan)
        for idx, a, b, rkey, sa, sb, (c0, c1) in _LIMBS:
            pa, za = proj(pts[a][frame])
            pb, zb = proj(pts[b][frame])
            if za < 0.05 or zb < 0.05:
                continue
            r = self.radii[rkey]
            caps[idx] = self._capsule(pa, pb, fx * r * sa / za, fx * r * sb / zb, c0, c1, za, zb, r)
        # Torso: from the hip midpoint to the shoulder midpoint, as wide as the projected hips/shoulders.
        lh, rh = proj(pts["l_hip"][frame]), proj(pts["r_hip"][frame])
        ls, rs = proj(pts["l_shoulder"][frame]), proj(pts["r_shoulder"][frame])
        if min(lh[1], rh[1], ls[1], rs[1]) > 0.05:
            p0, p1 = (lh[0] + rh[0]) / 2, (ls[0] + rs[0]) / 2
            z0, z1 = (lh[1] + rh[1]) / 2, (ls[1] + rs[1]) / 2
            d = p1 - p0
            n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9)
            depth_r = self.radii["torso_depth"]
            w0 = max(abs(np.dot(lh[0] - rh[0], n)) / 2 + fx * self.radii["thigh"] * 0.9 / z0, fx * depth_r / z0)
            w1 = max(abs(np.dot(ls[0] - rs[0], n)) / 2 + fx * self.radii["upper_arm"] * 0.6 / z1, fx * depth_r / z1)
            caps[TORSO] = self._capsule(p0, p1, w0, w1, 0.7, 0.35, z0, z1, depth_r)
        if self.app.hair_style == "long":
            # Long hair: a capsule hanging behind the head, from the crown to the shoulders.
            rh, hr = self.radii["head"], head_rot_world[frame]
            top = head_center[frame] + hr @ np.array([0.0, 0.25 * rh, -0.5 * rh])
            bottom = head_center[frame] + hr @ np.array([0.0, -1.9 * rh, -0.75 * rh])
            (pa, za), (pb, zb) = proj(top), proj(bottom)
            if min(za, zb) > 0.05:
                caps[HAIR_PART] = self._capsule(
                    pa, pb, fx * 0.98 * rh / za, fx * 0.8 * rh / zb, 1.0, 0.6, za, zb, 0.5 * rh
                )
        xc = R @ head_center[frame] + t
        return FrameGeometry(caps, xc, R @ head_rot_world[frame], self.radii["head"])

    @staticmethod
    def _capsule(pa, pb, wa, wb, c0, c1, za, zb, bulge) -> np.ndarray:
        d = pb - pa
        length = float(np.linalg.norm(d))
        direction = d / length if length > 1e-6 else np.array([0.0, 1.0])
        # A bone pointing at the camera keeps a minimum projected length so its frame stays invertible.
        length = max(length, 0.3 * max(wa, wb), 1e-3)
        d = direction * length
        n = np.array([-direction[1], direction[0]])
        return np.array([pa[0], pa[1], d[0], d[1], n[0], n[1], wa, wb, c0, c1, za, zb, bulge])

    # ----------------------------------------------------------------------------------------------- background
    def _background(self, frame: int):
        """Colour `(H, W, 3)`, depth `(H, W)` and world points `(H, W, 3)` of the floor and wall."""
        key = (self.cam.K[frame].tobytes(), self.cam.R[frame].tobytes(), self.cam.t[frame].tobytes())
        if key in self._bg_cache:
            return self._bg_cache[key]
        K, R, t = self.cam.K[frame], self.cam.R[frame], self.cam.t[frame]
        ys, xs = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        dc = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
        dw = dc @ R  # R^T applied to each row
        c = -R.T @ t
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = np.where(dw[..., 1] < -1e-9, -c[1] / dw[..., 1], np.inf)
            denom = dw @ self.wall_n
            t_wall = np.where(denom < -1e-9, (self.wall_d - c @ self.wall_n) / denom, np.inf)
        on_floor = t_floor < t_wall
        tt = np.minimum(np.minimum(t_floor, t_wall), _SKY_DEPTH)
        X = c + tt[..., None] * dw
        col = self._bg_texture(X, on_floor)
        out = (col, tt.astype(np.float32), X)
        if len(self._bg_cache) < 2:
            self._bg_cache[key] = out
        return out

    def _bg_texture(self, X: np.ndarray, on_floor: np.ndarray) -> np.ndarray:
        sc = self.scene
        f0, f1 = (np.asarray(c, np.float32) for c in sc.floor_colours)
        w0, w1 = (np.asarray(c, np.float32) for c in sc.wall_colours)
        fx_, fz = X[..., 0], X[..., 2]
        wu, wv = X @ self.wall_u, X[..., 1]
        if sc.background == "room":
            floor_w = pattern("checks", fx_, fz, 2 * sc.tile, None)
            wall_w = np.clip((0.14 - wv) / 0.04, 0, 1)  # skirting board
        elif sc.background == "gradient":
            floor_w = 0.15 * self.noise_bg(fx_ * 2, fz * 2)
            wall_w = np.clip(wv / 3.0, 0, 1)
        elif sc.background == "noise":
            floor_w = self.noise_bg(fx_ * 2.5 + 31, fz * 2.5)
            wall_w = self.noise_bg(wu * 2.5, wv * 2.5)
        else:  # stripes
            floor_w = 0.1 * self.noise_bg(fx_ * 2, fz * 2)
            wall_w = pattern("stripes", wu, wv, 0.5, None)
        floor = f0 + (f1 - f0) * floor_w[..., None]
        wall = w0 + (w1 - w0) * wall_w[..., None]
        # Soft falloff away from the dancer's spot so the figure stays the brightest thing in view.
        dist = np.sqrt(fx_**2 + fz**2)
        floor = floor * (1.0 - 0.25 * np.clip(dist / 8.0, 0, 1))[..., None]
        col = np.where(on_floor[..., None], floor, wall)
        return (col * sc.light).astype(np.float32)

    # -------------------------------------------------------------------------------------------------- drawing
    def render_frame(self, frame: int, geom: FrameGeometry):
        """Draw one frame.

        Returns:
            dict with `rgb (H,W,3) uint8`, `depth (H,W) float32` (camera z, metres), `part (H,W) uint8`,
            `s, r (H,W) float32` local coordinates (head: latitude/longitude in radians), `bg_world (H,W,3)`.
        """
        self._frame = frame
        bg_col, bg_depth, bg_world = self._background(frame)
        rgb = bg_col.copy()
        depth = bg_depth.copy()
        part = np.zeros((self.h, self.w), np.uint8)
        s_map = np.zeros((self.h, self.w), np.float32)
        r_map = np.zeros((self.h, self.w), np.float32)
        for idx in range(1, NUM_PARTS + 1):
            if idx == HEAD:
                self._draw_head(geom, rgb, depth, part, s_map, r_map)
            elif not np.isnan(geom.caps[idx, 0]):
                self._draw_capsule(idx, geom.caps[idx], rgb, depth, part, s_map, r_map)
        return {
            "rgb": np.clip(rgb, 0, 255).astype(np.uint8),
            "depth": depth,
            "part": part,
            "s": s_map,
            "r": r_map,
            "bg_world": bg_world,
        }

    def _bbox(self, x_lo, x_hi, y_lo, y_hi):
        x0, x1 = max(int(np.floor(x_lo)), 0), min(int(np.ceil(x_hi)) + 1, self.w)
        y0, y1 = max(int(np.floor(y_lo)), 0), min(int(np.ceil(y_hi)) + 1, self.h)
        return x0, x1, y0, y1

    def _draw_capsule(self, idx, p, rgb, depth, part, s_map, r_map) -> None:
        wmax = max(p[W0] * max(p[C0], 1.0), p[W1] * max(p[C1], 1.0))
        ends_x, ends_y = (p[P0X], p[P0X] + p[DX]), (p[P0Y], p[P0Y] + p[DY])
        x0, x1, y0, y1 = self._bbox(min(ends_x) - wmax, max(ends_x) + wmax, min(ends_y) - wmax, max(ends_y) + wmax)
        if x0 >= x1 or y0 >= y1:
            return
        qx = np.arange(x0, x1, dtype=np.float64)[None, :] - p[P0X]
        qy = np.arange(y0, y1, dtype=np.float64)[:, None] - p[P0Y]
        l2 = p[DX] ** 2 + p[DY] ** 2
        s = (qx * p[DX] + qy * p[DY]) / l2
        sc = np.clip(s, 0.0, 1.0)
        width = p[W0] + sc * (p[W1] - p[W0])
        r = (qx * p[NX] + qy * p[NY]) / width
        length = np.sqrt(l2)
        cap = np.where(s < 0, s * length / (p[C0] * p[W0]), np.where(s > 1, (s - 1) * length / (p[C1] * p[W1]), 0.0))
        rr = r * r + cap * cap
        inside = rr <= 1.0
        if not inside.any():
            return
        z = p[Z0] + sc * (p[Z1] - p[Z0]) - p[BULGE] * np.sqrt(np.maximum(1.0 - rr, 0.0))
        zb = depth[y0:y1, x0:x1]
        win = inside & (z < zb)
        if not win.any():
            return
        sw, rw, rrw = s[win], r[win], rr[win]
        zb[win] = z[win]
        part[y0:y1, x0:x1][win] = idx
        s_map[y0:y1, x0:x1][win] = sw
        r_map[y0:y1, x0:x1][win] = rw
        rgb[y0:y1, x0:x1][win] = self._shade_capsule(idx, sw, rw, rrw)

    def _material(self, mat, s_m, a_m):
        c1, c2, kind = mat
        wgt = pattern(kind, s_m, a_m, self.app.stripe_period, self.noise_body)
        return c1 + (c2 - c1) * wgt[:, None]

    def _shade_capsule(self, idx, s, r, rr) -> np.ndarray:
        """Texture in bone-local coordinates: clothing/skin by part and position along the bone, cylinder shading."""
        name = PART_NAMES[idx]
        app = self.app
        if idx == TORSO:
            length, across = self.torso_len, self.torso_halfwidth
        elif idx == HAIR_PART:
            length, across = 2.2 * self.radii["head"], self.radii["head"]
        else:
            end = _LIMBS[idx - 3][2]
            length, across = self.bone_len[end], self.radii[_LIMBS[idx - 3][3]] * 1.57
        s_m, a_m = s * length + 0.37 * idx, r * across
        n = s.shape[0]
        col = np.empty((n, 3), np.float32)
        if idx == TORSO:
            waist = s < 0.12
            col[:] = self._material(self.top, s_m, a_m)
            if waist.any():
                col[waist] = self._material(self.bottom, s_m[waist], a_m[waist])
        elif name.endswith("upper_arm"):
            col[:] = self.skin
            cloth = s < (0.55 if app.sleeves == "short" else 9.0)
            col[cloth] = self._material(self.top, s_m[cloth], a_m[cloth])
        elif name.endswith("forearm"):
            col[:] = self._material(self.top, s_m, a_m) if app.sleeves == "long" else self.skin
        elif name.endswith("thigh"):
            col[:] = self.skin
            cloth = s < (0.7 if app.bottom == "shorts" else 9.0)
            col[cloth] = self._material(self.bottom, s_m[cloth], a_m[cloth])
        elif name.endswith("shin"):
            col[:] = self._material(self.bottom, s_m, a_m) if app.bottom == "trousers" else self.skin
        elif name.endswith("foot"):
            col[:] = self.shoes
        elif idx == HAIR_PART:
            col[:] = self.hair * (0.85 + 0.15 * np.sin(2 * np.pi * a_m / 0.025))[:, None]  # strands
        else:  # neck, hands
            col[:] = self.skin
        shade = 0.6 + 0.4 * np.sqrt(np.maximum(1.0 - rr, 0.0))
        return col * (shade * self.scene.light)[:, None]

    def _draw_head(self, geom: FrameGeometry, rgb, depth, part, s_map, r_map) -> None:
        c, R = geom.head_center, geom.head_rot
        if c[2] < 0.1:
            return
        K = self.cam.K[self._frame]
        cx, cy = K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2]
        rho = K[0, 0] * geom.head_radius / c[2]
        x0, x1, y0, y1 = self._bbox(cx - rho, cx + rho, cy - rho, cy + rho)
        if x0 >= x1 or y0 >= y1:
            return
        a = (np.arange(x0, x1, dtype=np.float64)[None, :] - cx) / rho
        b = (np.arange(y0, y1, dtype=np.float64)[:, None] - cy) / rho
        rr = a * a + b * b
        inside = rr <= 1.0
        zc = np.sqrt(np.maximum(1.0 - rr, 0.0))
        z = c[2] - geom.head_radius * zc
        zb = depth[y0:y1, x0:x1]
        win = inside & (z < zb)
        if not win.any():
            return
        n_cam = np.stack([np.broadcast_to(a, win.shape)[win], np.broadcast_to(b, win.shape)[win], -zc[win]], -1)
        n_loc = n_cam @ R  # camera -> head-local (R is head-local -> camera)
        zb[win] = z[win]
        part[y0:y1, x0:x1][win] = HEAD
        lat = np.arcsin(np.clip(n_loc[:, 1], -1, 1))
        lon = np.arctan2(n_loc[:, 0], n_loc[:, 2])
        s_map[y0:y1, x0:x1][win] = lat
        r_map[y0:y1, x0:x1][win] = lon
        # Shading is baked in head-local directions (like the limbs' cylinder shading) so flow-warping is exact.
        shade = 0.72 + 0.28 * (n_loc @ _HEAD_LIGHT)
        rgb[y0:y1, x0:x1][win] = self._shade_head(n_loc) * (shade * self.scene.light)[:, None]

    def _shade_head(self, n: np.ndarray) -> np.ndarray:
        """Skin, hair, eyes and mouth as functions of the head-local surface direction `(N, 3)`."""
        col = np.broadcast_to(self.skin, n.shape).copy()
        for name in ("l_eye", "r_eye"):
            d = np.asarray(FACE_DIRS[name]) / np.linalg.norm(FACE_DIRS[name])
            dot = n @ d
            col[dot > np.cos(0.2)] = (245, 245, 240)
            col[dot > np.cos(0.12)] = (25, 20, 20)
        m = np.asarray(MOUTH_DIR) / np.linalg.norm(MOUTH_DIR)
        mouth = (n @ m > np.cos(0.3)) & (np.abs(n[:, 1] - m[1]) < 0.06)
        col[mouth] = (150, 40, 45)
        style = self.app.hair_style
        if style != "bald":
            hair = (n[:, 1] > 0.5) | ((n[:, 2] < -0.15) & (n[:, 1] > -0.3))
            if style == "long":
                hair |= (n[:, 2] < 0.25) & (n[:, 1] > -0.95) & (np.abs(n[:, 0]) > 0.55)
                hair |= n[:, 2] < -0.1
            col[hair] = self.hair
        return col

    # ----------------------------------------------------------------------------------------------------- flow
    def _same_camera(self, a: int, b: int) -> bool:
        c = self.cam
        return bool(
            np.array_equal(c.K[a], c.K[b]) and np.array_equal(c.R[a], c.R[b]) and np.array_equal(c.t[a], c.t[b])
        )

    def flow(self, src: dict, frame_src: int, geom_dst: FrameGeometry, frame_dst: int) -> np.ndarray:
        """Dense flow `(2, H, W)` float32 from the frame drawn in `src` to frame `frame_dst` (pixels).

        Each body pixel keeps its part and local coordinates and is mapped with the destination frame's part map;
        background pixels are world points projected by the destination camera.
        """
        K, R, t = self.cam.K[frame_dst], self.cam.R[frame_dst], self.cam.t[frame_dst]
        if self._grid is None:
            self._grid = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)
        ys, xs = self._grid
        if self._same_camera(frame_src, frame_dst):
            px, py = xs.copy(), ys.copy()  # exactly zero background flow for a static camera
        else:
            xc = src["bg_world"] @ R.T + t
            with np.errstate(divide="ignore", invalid="ignore"):
                px = K[0, 0] * xc[..., 0] / xc[..., 2] + K[0, 2]
                py = K[1, 1] * xc[..., 1] / xc[..., 2] + K[1, 2]
        part = src["part"]
        body = part > 0
        ids = part[body].astype(np.int64)
        s = src["s"][body].astype(np.float64)
        r = src["r"][body].astype(np.float64)
        nx_, ny_ = np.empty(ids.size), np.empty(ids.size)
        caps = geom_dst.caps
        limb = ids != HEAD
        if limb.any():
            p = caps[ids[limb]]
            sl, rl = s[limb], r[limb]
            width = p[:, W0] + np.clip(sl, 0, 1) * (p[:, W1] - p[:, W0])
            nx_[limb] = p[:, P0X] + sl * p[:, DX] + rl * width * p[:, NX]
            ny_[limb] = p[:, P0Y] + sl * p[:, DY] + rl * width * p[:, NY]
        head = ~limb
        if head.any():
            lat, lon = s[head], r[head]
            n_loc = np.stack([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)], -1)
            # The same sphere model as `_draw_head`: the projected centre plus the projected radius times the
            # camera-space direction of the surface point.
            n_cam = n_loc @ geom_dst.head_rot.T
            c = geom_dst.head_center
            rho = K[0, 0] * geom_dst.head_radius / c[2]
            nx_[head] = K[0, 0] * c[0] / c[2] + K[0, 2] + rho * n_cam[:, 0]
            ny_[head] = K[1, 1] * c[1] / c[2] + K[1, 2] + rho * n_cam[:, 1]
        px[body], py[body] = nx_, ny_
        # A part missing in the destination frame (behind the camera) has no correspondence: zero flow.
        bad = ~np.isfinite(px) | ~np.isfinite(py)
        px[bad], py[bad] = xs[bad], ys[bad]
        return np.stack([px - xs, py - ys]).astype(np.float32)
