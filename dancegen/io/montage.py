"""Pictures for people: labelled panel grids and overlays, for summaries a user would rather look at than read."""

from __future__ import annotations

import numpy as np


def fit(img: np.ndarray, height: int) -> np.ndarray:
    """Resize an `(H, W, 3)` uint8 image to `height`, keeping its aspect ratio."""
    import cv2

    h, w = img.shape[:2]
    if h == height:
        return img
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def label(img: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """Draw `text` in white on a dark strip at the top-left of a copy of `img`."""
    import cv2

    img = np.ascontiguousarray(img.copy())
    h = img.shape[0]
    scale = scale or max(0.35, h / 600)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = max(2, th // 3)
    img[: th + base + 2 * pad, : tw + 2 * pad] = (img[: th + base + 2 * pad, : tw + 2 * pad] * 0.35).astype(np.uint8)
    cv2.putText(img, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def overlay(base: np.ndarray, top: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """Blend a black-background drawing (pose map) over an image: only non-black pixels of `top` show."""
    base, top = base.astype(np.float32), top.astype(np.float32)
    mask = (top.max(axis=-1, keepdims=True) > 0).astype(np.float32) * alpha
    return np.clip(base * (1 - mask) + top * mask, 0, 255).astype(np.uint8)


def grid(rows: list[list[np.ndarray]], height: int = 192, gap: int = 4, bg: int = 24) -> np.ndarray:
    """Tile images into rows (each resized to `height`), separated by `gap` pixels of grey `bg`."""
    rendered = []
    for row in rows:
        cells = [fit(c, height) for c in row]
        parts = []
        for i, c in enumerate(cells):
            if i:
                parts.append(np.full((height, gap, 3), bg, np.uint8))
            parts.append(c)
        rendered.append(np.concatenate(parts, axis=1))
    width = max(r.shape[1] for r in rendered)
    out = []
    for i, r in enumerate(rendered):
        if i:
            out.append(np.full((gap, width, 3), bg, np.uint8))
        out.append(np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=bg))
    return np.concatenate(out, axis=0)
