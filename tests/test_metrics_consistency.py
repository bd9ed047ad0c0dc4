"""Adjacent-frame MSE/L1, flow warping error and LatentMan's H_MSE on constructed videos."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.metrics import consistency as cs


def test_adjacent_frame_metrics_hand_values():
    v = np.zeros((3, 4, 5, 3), np.uint8)
    v[1] = 10
    v[2] = 40
    assert cs.adjacent_frame_mse(v) == pytest.approx((100 + 900) / 2)
    assert cs.adjacent_frame_l1(v) == pytest.approx((10 + 30) / 2)
    np.testing.assert_allclose(cs.adjacent_frame_l1(v, per_frame=True), [10, 30])
    assert cs.adjacent_frame_mse(v, value_range=1.0) == pytest.approx((100 + 900) / 2 / 255**2)
    assert cs.adjacent_frame_l1(v, reduction="sum") == pytest.approx((10 + 30) / 2 * 60)
    with pytest.raises(InputError):
        cs.adjacent_frame_mse(v[:1])


def _translating(n=4, h=48, w=64, dx=1.5):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = []
    for t in range(n):
        x = xx + dx * t  # content moves left by dx per frame: frame t+1 at p equals frame t at p + dx
        img = 127 + 60 * np.sin(x / 5.0) + 40 * np.cos(yy / 7.0 + x / 11.0)
        frames.append(np.stack([img, 0.5 * img + 30, 255 - img], -1))
    return np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)


def test_warping_error_with_exact_flow_is_small():
    v = _translating(dx=1.5)
    n, h, w = v.shape[0] - 1, v.shape[1], v.shape[2]
    fwd = np.zeros((n, 2, h, w), np.float32)
    fwd[:, 0] = -1.5  # frame t at p is frame t+1 at p - 1.5
    bwd = -fwd
    good = cs.warping_error(v, flow=fwd, backward_flow=bwd)
    bad = cs.warping_error(v, flow=np.zeros_like(fwd), backward_flow=np.zeros_like(fwd))
    assert good < 2e-4 and bad > 20 * good
    # inconsistent forward/backward flows mark pixels occluded; none consistent -> NaN pairs
    assert np.isnan(cs.warping_error(v, flow=fwd, backward_flow=fwd + 50, per_frame=True)).all()


def test_warping_error_estimated_flow_orders_videos():
    v = _translating(dx=2.0)
    rng = np.random.default_rng(0)
    flicker = np.clip(v.astype(int) + rng.integers(-40, 41, (v.shape[0], 1, 1, 3)), 0, 255).astype(np.uint8)
    assert cs.warping_error(v) < cs.warping_error(flicker)


def test_h_mse_explicit_correspondences():
    v = np.zeros((3, 2, 2, 3), np.uint8)
    v[1, 0, 1] = 30  # pixel (0,1) in frame 1 matches (0,0) in frame 0: error 30^2
    v[2, 1, 1] = 10
    pairs = [(np.array([0]), np.array([0]), np.array([0]), np.array([1])),
             (np.array([0, 1]), np.array([1, 0]), np.array([1, 1]), np.array([1, 0]))]
    # pair 2: (0,1)->(1,1): 30 vs 10 -> 400; (1,0)->(1,0): 0 -> mean 200
    np.testing.assert_allclose(cs.h_mse(v, pairs, per_frame=True), [900.0, 200.0])
    assert cs.h_mse(v, pairs) == pytest.approx(550.0)
    with pytest.raises(InputError):
        cs.h_mse(v, pairs[:1])


def _iuv_dancer(n=3, size=32, step=3, flicker=0):
    """A 2-part body moving right by `step` px per frame; colour is a function of (part, u, v) only."""
    iuv = np.zeros((n, size, size, 3), np.float32)
    video = np.zeros((n, size, size, 3), np.uint8)
    for t in range(n):
        for part, (y0, y1) in ((1, (4, 14)), (2, (14, 24))):
            x0 = 4 + step * t
            ys, xs = np.mgrid[y0:y1, x0:x0 + 10]
            u, vv = (xs - x0) / 9.0, (ys - y0) / 9.0
            iuv[t, ys, xs] = np.stack([np.full_like(u, part), u, vv], -1)
            col = np.stack([150 * u + 20 * part, 150 * vv, np.full_like(u, 100 + 50 * part)], -1) + flicker * t
            video[t, ys, xs] = np.clip(np.rint(col), 0, 255).astype(np.uint8)
    return video, iuv


@pytest.mark.parametrize("method", ["hungarian", "nearest"])
def test_h_mse_from_iuv(method):
    video, iuv = _iuv_dancer()
    assert cs.h_mse(video, iuv, size=None, method=method) == pytest.approx(0.0, abs=1e-9)
    video2, _ = _iuv_dancer(flicker=10)
    assert cs.h_mse(video2, iuv, size=None, method=method) == pytest.approx(100.0, abs=1e-9)
    # the default resizes to 256 (bilinear frames, nearest IUV); a same-size resize changes nothing
    assert cs.h_mse(video2, iuv, size=32, method=method) == pytest.approx(100.0, abs=1e-9)
    assert np.isfinite(cs.h_mse(video2, iuv, size=16, method=method))


def test_iuv_correspondences_hungarian_is_injective():
    _, iuv = _iuv_dancer()
    yr, xr, yc, xc = cs.iuv_correspondences(iuv[0], iuv[1])
    assert len(yr) == 200
    assert len(set(zip(yr.tolist(), xr.tolist(), strict=False))) == len(yr)
    np.testing.assert_array_equal(xc - xr, 3)  # every pixel found its moved twin
