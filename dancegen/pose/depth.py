"""Depth maps as ControlNet condition images.

Depth ControlNets (lllyasviel's SD-1.5 depth nets) were trained on MiDaS relative inverse depth: near is bright, far
is dark. Two encodings of a metric depth map (camera z in metres) are offered (LatentMan spec §2.2):

- ``inverse_norm`` (default): disparity ``1 / z`` normalised over the foreground to ``[floor, 1]`` (the nearest
  foreground point 1, the farthest ``floor``), background 0. The floor keeps the far edge of the body apart from the
  background; 0.25 is our choice, the spec only fixes "near-bright normalised disparity, background 0".
- ``official_linear``: ``z / 5`` on the foreground, background 0 (the official LatentMan code; near is dark).
"""

from __future__ import annotations

import numpy as np

DEPTH_ENCODINGS = ("inverse_norm", "official_linear")
INVERSE_FLOOR = 0.25


def depth_control_image(depth: np.ndarray, mask: np.ndarray | None = None, encoding: str = "inverse_norm",
                        far: float = 50.0) -> np.ndarray:
    """Encode metric depth ``(..., H, W)`` as uint8 control images ``(..., H, W)`` (repeat to 3 channels for a net).

    Args:
        depth: camera z in metres; values >= ``far`` (or non-finite) count as no surface.
        mask: the foreground (e.g. the person); None: every pixel with a surface. Each image (the last two axes) is
            normalised on its own.
        encoding: one of ``DEPTH_ENCODINGS``.
        far: depth beyond which a pixel has no surface (the synthetic renderer writes 100 there).

    Raises:
        ValueError: an unknown encoding, or a mask of another shape.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got {encoding!r}")
    z = np.asarray(depth, np.float64)
    valid = np.isfinite(z) & (z > 0) & (z < far)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != z.shape:
            raise ValueError(f"mask shape {mask.shape} does not match depth shape {z.shape}")
        valid &= mask
    if encoding == "official_linear":
        out = np.where(valid, np.clip(z / 5.0, 0.0, 1.0), 0.0)
        return (out * 255).round().astype(np.uint8)
    flat_z, flat_v = z.reshape(-1, *z.shape[-2:]), valid.reshape(-1, *z.shape[-2:])
    out = np.zeros(flat_z.shape, np.float64)
    for k in range(len(flat_z)):
        v = flat_v[k]
        if not v.any():
            continue
        d = 1.0 / flat_z[k][v]
        lo, hi = d.min(), d.max()
        scaled = (d - lo) / (hi - lo) if hi > lo else np.ones_like(d)
        out[k][v] = INVERSE_FLOOR + (1.0 - INVERSE_FLOOR) * scaled
    return (out.reshape(z.shape) * 255).round().astype(np.uint8)
