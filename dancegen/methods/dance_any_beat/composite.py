""""Choreograph anyone" (paper §4.4): put a new person into a dance scene before generating.

The paper finds the person in a new photo with YOLO, cuts them out with SAM and lets the cut-out replace the dancer of
an AIST++ frame; the composite is the reference x0. Here the masks come from files or from the default pose backend's
person segmentation (BlazePose, `masks="auto"`), the scene's dancer is removed by inpainting (OpenCV Telea) and the
new person is scaled to the dancer's height and stands where the dancer stood (bottom centres of the two boxes meet).
A model trained on a scene's camera and framing then makes the new person dance in it.
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def place_person(person: np.ndarray, person_mask: np.ndarray, scene: np.ndarray, scene_mask: np.ndarray,
                 feather: float = 1.0) -> np.ndarray:
    """The scene with its dancer replaced by the masked person.

    Args:
        person / scene: `(H, W, 3)` uint8 photos (any sizes).
        person_mask / scene_mask: `(H, W)` bool (or 0-255) masks of the person and of the scene's dancer.
        feather: Gaussian sigma (pixels of the scene) softening the pasted edge.

    Returns:
        `(H_scene, W_scene, 3)` uint8 composite.

    Raises:
        InputError: an empty mask, or a mask whose size differs from its image.
    """
    import cv2

    pm, sm = np.asarray(person_mask) > 0, np.asarray(scene_mask) > 0
    for name, img, m in (("person", person, pm), ("scene", scene, sm)):
        if m.shape != img.shape[:2]:
            raise InputError(f"{name} mask is {m.shape[1]}x{m.shape[0]} but the {name} image is "
                             f"{img.shape[1]}x{img.shape[0]}")
        if not m.any():
            raise InputError(f"the {name} mask is empty")
    # 1. remove the scene's dancer (a slightly grown mask also takes the anti-aliased edge)
    grown = cv2.dilate(sm.astype(np.uint8), np.ones((5, 5), np.uint8))
    background = cv2.inpaint(np.ascontiguousarray(scene), grown, 5, cv2.INPAINT_TELEA)
    # 2. scale the person to the dancer's height
    y0, y1, x0, x1 = _bbox(pm)
    sy0, sy1, sx0, sx1 = _bbox(sm)
    scale = (sy1 - sy0) / (y1 - y0)
    w = max(1, int(round((x1 - x0) * scale)))
    h = max(1, sy1 - sy0)
    crop = cv2.resize(np.ascontiguousarray(person[y0:y1, x0:x1]), (w, h), interpolation=cv2.INTER_AREA
                      if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(pm[y0:y1, x0:x1].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # 3. stand where the dancer stood: bottom centres meet; clip to the frame
    top, left = sy0, int(round((sx0 + sx1) / 2 - w / 2))
    H, W = scene.shape[:2]
    canvas_a = np.zeros((H, W), np.float32)
    canvas_p = np.zeros_like(background)
    a0, b0 = max(top, 0), max(left, 0)
    a1, b1 = min(top + h, H), min(left + w, W)
    canvas_a[a0:a1, b0:b1] = alpha[a0 - top:a1 - top, b0 - left:b1 - left]
    canvas_p[a0:a1, b0:b1] = crop[a0 - top:a1 - top, b0 - left:b1 - left]
    if feather > 0:
        canvas_a = np.clip(cv2.GaussianBlur(canvas_a, (0, 0), feather), 0, 1)
    out = canvas_p.astype(np.float32) * canvas_a[..., None] + background.astype(np.float32) * (1 - canvas_a[..., None])
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_mask(spec: str, image: np.ndarray, what: str) -> np.ndarray:
    """A mask from a file path (white = person) or "auto" (the pose backend's person segmentation)."""
    from dancegen.io.video import read_image

    if spec == "auto":
        from dancegen.pose.extract import person_mask

        try:
            return person_mask(image)
        except InputError as e:
            raise InputError(f"{what}: {e.message}") from None
    m = read_image(spec)
    return m.max(-1) > 127
