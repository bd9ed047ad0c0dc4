"""Flow pictures with the Middlebury colour wheel (Baker et al., IJCV 2011; the `flowToColor` of flow-code).

Hue encodes direction, saturation the magnitude relative to `max_flow`: zero flow is white, a vector of length
`max_flow` is a fully saturated wheel colour, longer vectors are darkened by 0.75. The wheel has 55 colours:
red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13, magenta-red 6.
"""

from __future__ import annotations

import numpy as np

#: Segment lengths of the Middlebury wheel: RY, YG, GC, CB, BM, MR.
WHEEL_SEGMENTS = (15, 6, 4, 11, 13, 6)


def make_colorwheel() -> np.ndarray:
    """The 55-colour Middlebury wheel as a `(55, 3)` float64 array of RGB values in [0, 255]."""
    ry, yg, gc, cb, bm, mr = WHEEL_SEGMENTS
    ramp = lambda n: np.floor(255 * np.arange(n) / n)  # noqa: E731  # 0, 255/n, ... as in flow-code
    full = lambda n: np.full(n, 255.0)  # noqa: E731
    zero = np.zeros
    return np.concatenate([
        np.stack([full(ry), ramp(ry), zero(ry)], 1),          # red -> yellow
        np.stack([255 - ramp(yg), full(yg), zero(yg)], 1),    # yellow -> green
        np.stack([zero(gc), full(gc), ramp(gc)], 1),          # green -> cyan
        np.stack([zero(cb), 255 - ramp(cb), full(cb)], 1),    # cyan -> blue
        np.stack([ramp(bm), zero(bm), full(bm)], 1),          # blue -> magenta
        np.stack([full(mr), zero(mr), 255 - ramp(mr)], 1),    # magenta -> red
    ])


def _colorize(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Wheel colours for flow already divided by the colour scale. Returns `(..., 3)` uint8."""
    wheel = make_colorwheel() / 255.0
    n = wheel.shape[0]
    rad = np.sqrt(u * u + v * v)
    a = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; -v/-u exactly as flow-code (so +x is red, index 0)
    fk = (a + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = (1 - f) * wheel[k0] + f * wheel[k1]
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    # flow-code truncates 255*col; the 1e-6 keeps exact wheel entries (e.g. 43/255) from rounding down to 42.
    return np.floor(255 * col + 1e-6).clip(0, 255).astype(np.uint8)


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """Colour-wheel picture of one flow field.

    Args:
        flow: `(2, H, W)` flow in pixels (numpy or torch). Non-finite vectors are drawn black.
        max_flow: Magnitude (pixels) that maps to a fully saturated colour. Default: the largest finite magnitude
            in `flow` (flow-code's normalisation); zero flow stays white.

    Returns:
        `(H, W, 3)` uint8 RGB.
    """
    flow = _as_numpy(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must have shape (2, H, W), got {flow.shape}")
    img, _ = _colorize_scaled(flow[None], max_flow)
    return img[0]


def flows_to_colors(flows, max_flow: float | None = None, return_scale: bool = False):
    """Colour-wheel pictures of a flow sequence with one shared scale (so a video does not flicker).

    Args:
        flows: `(F-1, 2, H, W)` flow in pixels.
        max_flow: Shared colour scale in pixels; default: the largest finite magnitude of the whole sequence.
        return_scale: Also return the scale used.

    Returns:
        `(F-1, H, W, 3)` uint8 RGB, and the scale (float) if `return_scale`.
    """
    flows = _as_numpy(flows)
    if flows.ndim != 4 or flows.shape[1] != 2:
        raise ValueError(f"flows must have shape (F-1, 2, H, W), got {flows.shape}")
    imgs, scale = _colorize_scaled(flows, max_flow)
    return (imgs, scale) if return_scale else imgs


def _colorize_scaled(flows: np.ndarray, max_flow: float | None) -> tuple[np.ndarray, float]:
    u = flows[:, 0].astype(np.float64)
    v = flows[:, 1].astype(np.float64)
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u = np.where(bad, 0.0, u)
    v = np.where(bad, 0.0, v)
    if max_flow is None:
        max_flow = float(np.sqrt(u * u + v * v).max()) if u.size else 0.0
    scale = max(float(max_flow), np.finfo(np.float32).eps)
    img = _colorize(u / scale, v / scale)
    img[bad] = 0
    return img, float(max_flow)


def colorwheel_legend(size: int = 64) -> np.ndarray:
    """A `(size, size, 3)` uint8 legend: the colour of every vector inside the unit disc, centre = zero flow."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return _colorize((x - c) / c, (y - c) / c)


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)
