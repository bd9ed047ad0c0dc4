"""ControlNet pose maps: COCO-18 body, hands and face drawn exactly as controlnet_aux `dwpose/util.py` draws them.

Follows ../shared/specs/prior-art.md §3.3, checked against controlnet_aux `dwpose/util.py` (`draw_bodypose`,
`draw_handpose`, `draw_facepose`) and `dwpose/__init__.py` (`draw_pose`), re-implemented here:

* Body: for each of the first 17 limbs, a filled convex polygon from `cv2.ellipse2Poly(centre=(int(mx), int(my)),
  axes=(int(length / 2), 4), angle=int(degrees(atan2(dy, dx))), 0, 360, 1)` in `COLORS[i]`; then the whole canvas
  becomes `(canvas * 0.6).astype(uint8)`; then each of the 18 joints is a filled circle of radius 4 at
  `(int(x), int(y))` in `COLORS[j]` (full colour). A body joint is drawn only if its confidence is > 0.3.
* Hands (left then right): 20 edges as `cv2.line(thickness=2)` in `hsv_to_rgb([i / 20, 1, 1]) * 255`, then the 21
  points as filled circles of radius 4 in (0, 0, 255). Face: white filled circles of radius 3.
  controlnet_aux marks hand/face points with score < 0.3 as -1 and skips a point when its truncated pixel
  coordinate `int(x * W)` is not > 0.01 (so it is an integer-pixel test, x >= 1 px, not a normalised one); the
  same happens here, which also skips real points in the first pixel row/column, as it does there.
* Colours are written into channels in the listed order and the result is RGB (ControlNet's pose images), not BGR.
* Arithmetic mirrors the reference: keypoints are normalised in float32 (`x / W`) and scaled back in float32, so
  truncations land on the same pixels as controlnet_aux given the same detections.

Difference from controlnet_aux's detector pipeline: it draws at `detect_resolution` (short side 512, rounded to
a multiple of 64) and then resizes the picture (INTER_LINEAR) to the output size, so its 4 px limbs get thicker or
thinner with the output size and are blurred by the resize. dancegen draws at the output size by default (crisp,
4 px limbs at any size); pass `draw_size=(w, h)` to `render_pose_sequence` to reproduce the draw-then-resize look.
"""

from __future__ import annotations

import math

import numpy as np

from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18, HAND_EDGES

#: The 18 OpenPose colours (RGB), limb i and joint j use COLORS[i] / COLORS[j].
COLORS = (
    (255, 0, 0),
    (255, 85, 0),
    (255, 170, 0),
    (255, 255, 0),
    (170, 255, 0),
    (85, 255, 0),
    (0, 255, 0),
    (0, 255, 85),
    (0, 255, 170),
    (0, 255, 255),
    (0, 170, 255),
    (0, 85, 255),
    (0, 0, 255),
    (85, 0, 255),
    (170, 0, 255),
    (255, 0, 255),
    (255, 0, 170),
    (255, 0, 85),
)
STICKWIDTH = 4
LIMB_DIM = 0.6
EPS = 0.01
HAND_POINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)


def hsv_to_rgb(h: float, s: float = 1.0, v: float = 1.0) -> tuple[float, float, float]:
    """HSV in [0, 1] -> RGB in [0, 1], the same float arithmetic as `matplotlib.colors.hsv_to_rgb`."""
    i = int(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    if s == 0:
        return v, v, v
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]


#: Colour of hand edge i (float RGB in [0, 255]; OpenCV rounds it when drawing, as in controlnet_aux).
HAND_EDGE_COLORS = tuple(
    tuple(c * 255 for c in hsv_to_rgb(i / float(len(HAND_EDGES)))) for i in range(len(HAND_EDGES))
)


def _normalise(points: np.ndarray, width: int, height: int, visible: np.ndarray) -> np.ndarray:
    """Pixels -> float32 normalised coordinates as controlnet_aux holds them; invisible points become -1."""
    xy = points[..., :2].astype(np.float32).copy()
    xy[..., 0] /= float(width)
    xy[..., 1] /= float(height)
    xy[~visible] = -1.0
    return xy


def _draw_body(canvas: np.ndarray, bodies: np.ndarray, visible: np.ndarray) -> np.ndarray:
    import cv2

    h, w = canvas.shape[:2]
    for i, (a, b) in enumerate(COCO18.limbs):  # limb-major, person-minor, like the reference
        for xy, vis in zip(bodies, visible, strict=True):
            if not (vis[a] and vis[b]):
                continue
            px = xy[[a, b], 0] * float(w)  # float32, as candidate[index, 0] * float(W)
            py = xy[[a, b], 1] * float(h)
            mx, my = np.mean(px), np.mean(py)
            length = ((py[0] - py[1]) ** 2 + (px[0] - px[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(py[0] - py[1], px[0] - px[1]))
            poly = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), STICKWIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, COLORS[i])
    canvas = (canvas * LIMB_DIM).astype(np.uint8)
    for j in range(len(COCO18.joints)):
        for xy, vis in zip(bodies, visible, strict=True):
            if vis[j]:
                cv2.circle(canvas, (int(xy[j, 0] * w), int(xy[j, 1] * h)), 4, COLORS[j], thickness=-1)
    return canvas


def _draw_hands(canvas: np.ndarray, hands: np.ndarray) -> np.ndarray:
    import cv2

    h, w = canvas.shape[:2]
    for peaks in hands:  # (N, 21, 2) normalised, -1 = missing
        px = [(int(x * w), int(y * h)) for x, y in peaks]
        for ie, (a, b) in enumerate(HAND_EDGES):
            (x1, y1), (x2, y2) = px[a], px[b]
            if x1 > EPS and y1 > EPS and x2 > EPS and y2 > EPS:
                cv2.line(canvas, (x1, y1), (x2, y2), HAND_EDGE_COLORS[ie], thickness=2)
        for x, y in px:
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 4, HAND_POINT_COLOR, thickness=-1)
    return canvas


def _draw_face(canvas: np.ndarray, faces: np.ndarray) -> np.ndarray:
    import cv2

    h, w = canvas.shape[:2]
    for lmks in faces:
        for x, y in lmks:
            x, y = int(x * w), int(y * h)
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 3, FACE_COLOR, thickness=-1)
    return canvas


def draw_pose(
    keypoints: np.ndarray,
    width: int,
    height: int,
    hands: np.ndarray | None = None,
    face: np.ndarray | None = None,
    threshold: float = 0.3,
    draw_body: bool = True,
) -> np.ndarray:
    """Draw one frame's pose map (controlnet_aux `draw_pose` order: body, hands, face).

    Args:
        keypoints: `(18, 3)` or `(P, 18, 3)` COCO-18 x, y in pixels of a `width` x `height` image, confidence.
        width, height: Canvas size in pixels.
        hands: Optional `(2, 21, 3)` or `(P, 2, 21, 3)` [left, right] hands.
        face: Optional `(K, 3)` or `(P, K, 3)` face points.
        threshold: Body joints need confidence > threshold; hand/face points need confidence >= threshold
            (controlnet_aux uses `> 0.3` for the body and `< 0.3` -> invisible for the rest).
        draw_body: Draw the body (hands and face are drawn when given).

    Returns:
        `(height, width, 3)` uint8 RGB pose map on black.
    """
    kp = np.asarray(keypoints, np.float32)
    kp = kp[None] if kp.ndim == 2 else kp
    if kp.shape[1:] != (18, 3):
        raise ValueError(f"keypoints must be COCO-18 (18, 3) or (P, 18, 3), got {kp.shape}")
    canvas = np.zeros((height, width, 3), np.uint8)
    if draw_body:
        canvas = _draw_body(canvas, _normalise(kp, width, height, kp[..., 2] > threshold), kp[..., 2] > threshold)
    if hands is not None:
        hd = np.asarray(hands, np.float32)
        hd = hd[None] if hd.ndim == 3 else hd
        # controlnet_aux stacks all left hands, then all right hands.
        hd = np.concatenate([hd[:, 0], hd[:, 1]], axis=0)
        canvas = _draw_hands(canvas, _normalise(hd, width, height, hd[..., 2] >= threshold))
    if face is not None:
        fc = np.asarray(face, np.float32)
        fc = fc[None] if fc.ndim == 2 else fc
        canvas = _draw_face(canvas, _normalise(fc, width, height, fc[..., 2] >= threshold))
    return canvas


def render_pose_sequence(
    seq: PoseSequence,
    width: int | None = None,
    height: int | None = None,
    draw_body: bool = True,
    draw_hands: bool = True,
    draw_face: bool = True,
    threshold: float = 0.3,
    draw_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Render every frame of a sequence as a ControlNet pose map.

    Args:
        seq: Poses (any convertible format; converted to COCO-18 first).
        width, height: Output size; default the sequence's own. Keypoints are rescaled to it.
        draw_body, draw_hands, draw_face: What to draw (hands/face only when the sequence has them).
        threshold: Visibility threshold (see `draw_pose`).
        draw_size: Draw at this (width, height) and resize to the output with INTER_LINEAR, as controlnet_aux does
            with its `detect_resolution`. Default None: draw directly at the output size.

    Returns:
        `(F, H, W, 3)` uint8 RGB.
    """
    if seq.format != "coco18":
        from dancegen.pose.convert import convert

        seq = convert(seq, "coco18")
    width, height = int(width or seq.width), int(height or seq.height)
    dw, dh = draw_size if draw_size is not None else (width, height)
    if (dw, dh) != (seq.width, seq.height):
        seq = seq.resized(dw, dh)
    out = np.zeros((seq.num_frames, height, width, 3), np.uint8)
    for i in range(seq.num_frames):
        img = draw_pose(
            seq.keypoints[i],
            dw,
            dh,
            hands=seq.hands[i] if draw_hands and seq.hands is not None else None,
            face=seq.face[i] if draw_face and seq.face is not None else None,
            threshold=threshold,
            draw_body=draw_body,
        )
        if (dw, dh) != (width, height):
            import cv2

            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
        out[i] = img
    return out


def render_control_maps(seq: PoseSequence, min_draw: int = 256) -> np.ndarray:
    """ControlNet pose maps ``(F, H, W, 3)`` uint8 at the sequence's size, drawn at >= `min_draw` px and resized.

    OpenPose's limb width and joint radius are fixed in pixels (4 px); drawn directly on a small image (e.g. the
    64 px of the bundled toy models) the skeleton becomes blobs. Drawing at 256 px or more and resizing
    (controlnet_aux's ``detect_resolution`` path) keeps the proportions of a 256 px map at every size, in training
    and inference alike. At 256 px and above this is `render_pose_sequence` itself.
    """
    k = max(1, -(-min_draw // max(seq.width, seq.height)))
    return render_pose_sequence(seq, draw_size=(seq.width * k, seq.height * k) if k > 1 else None)

