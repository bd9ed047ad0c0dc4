"""Backward warping (cv2 and torch paths), flow resizing and EPE statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dancegen.flow.warp import backward_warp, epe, flow_stats, resize_flow, valid_mask


def _img(c=3, h=24, w=32, seed=0):
    return np.random.default_rng(seed).random((c, h, w)).astype(np.float32)


def _const(dx, dy, h=24, w=32, f=None):
    fl = np.zeros((2, h, w) if f is None else (f, 2, h, w), np.float32)
    fl[..., 0, :, :] = dx
    fl[..., 1, :, :] = dy
    return fl


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_integer_translation_is_exact_in_interior(lib):
    img = _img()
    fl = _const(3, -2)
    x, f = (img, fl) if lib == "numpy" else (torch.from_numpy(img), torch.from_numpy(fl))
    out = backward_warp(x, f)
    out = np.asarray(out)
    # out(y, x) = img(y - 2, x + 3)
    np.testing.assert_allclose(out[:, 2:, :-3], img[:, :-2, 3:], atol=2e-6)
    assert type(out) is np.ndarray


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_identity_flow_returns_input(lib):
    img = (_img() * 255).astype(np.uint8)
    fl = np.zeros((2, 24, 32), np.float32)
    if lib == "numpy":
        np.testing.assert_array_equal(backward_warp(img, fl), img)
    else:
        out = backward_warp(torch.from_numpy(img), torch.from_numpy(fl))
        assert out.dtype == torch.uint8
        np.testing.assert_array_equal(out.numpy(), img)


def test_cv2_and_torch_agree_on_fractional_flow():
    img = _img()
    fl = np.random.default_rng(1).normal(0, 2.5, (2, 24, 32)).astype(np.float32)
    for mode in ("bilinear", "nearest"):
        for pad in ("border", "zeros"):
            a = backward_warp(img, fl, mode=mode, padding_mode=pad)
            b = backward_warp(torch.from_numpy(img), torch.from_numpy(fl), mode=mode, padding_mode=pad).numpy()
            np.testing.assert_allclose(a, b, atol=2e-3, err_msg=f"{mode}/{pad}")


def test_half_pixel_is_bilinear_mean():
    img = _img(1)
    out = backward_warp(torch.from_numpy(img), torch.from_numpy(_const(0.5, 0))).numpy()
    np.testing.assert_allclose(out[0, :, :-1], (img[0, :, :-1] + img[0, :, 1:]) / 2, atol=1e-5)


def test_batched_frames_and_zero_padding():
    imgs = np.stack([_img(seed=s) for s in range(3)])
    fl = _const(0, 0, f=3)
    fl[1, 0] = 4.0
    out = backward_warp(imgs, fl, padding_mode="zeros")
    np.testing.assert_array_equal(out[0], imgs[0])
    np.testing.assert_allclose(out[1][:, :, :-4], imgs[1][:, :, 4:], atol=1e-6)
    assert np.abs(out[1][:, :, -3:]).max() == 0  # sampled outside: zeros
    t = backward_warp(torch.from_numpy(imgs), torch.from_numpy(fl), padding_mode="zeros").numpy()
    np.testing.assert_allclose(t, out, atol=1e-5)
    with pytest.raises(ValueError, match="flow must have shape"):
        backward_warp(imgs, fl[0])


def test_valid_mask():
    m = valid_mask(_const(3, 0))
    assert m[:, :-3].all() and not m[:, -3:].any()


def test_resize_flow_scales_vectors():
    fl = _const(8, -16, h=64, w=64)
    small = resize_flow(fl, (8, 8))  # /8: a constant 8 px flow becomes 1 latent px
    np.testing.assert_allclose(small[0], 1.0)
    np.testing.assert_allclose(small[1], -2.0)
    wide = resize_flow(torch.from_numpy(_const(2, 2, h=16, w=16, f=2)), (16, 32), mode="bilinear")
    assert isinstance(wide, torch.Tensor) and wide.shape == (2, 2, 16, 32)
    torch.testing.assert_close(wide[:, 0], torch.full((2, 16, 32), 4.0))
    torch.testing.assert_close(wide[:, 1], torch.full((2, 16, 32), 2.0))


def test_epe_and_stats():
    gt = _const(0, 0, h=4, w=5)
    pred = gt.copy()
    pred[0, 0, :] = 3.0  # 5 pixels with EPE 3
    pred[1, 1, :2] = 4.0  # 2 pixels with EPE 4 ... one row
    pred[0, 1, :2] = 3.0  # ... those become 5
    assert epe(gt, gt) == 0.0
    assert epe(pred, gt) == pytest.approx((5 * 3 + 2 * 5) / 20)
    s = flow_stats(pred, gt)
    assert s["px1"] == pytest.approx(7 / 20) and s["px3"] == pytest.approx(2 / 20) and s["px5"] == 0.0
    assert s["n"] == 20 and s["epe_median"] == 0.0
    mask = np.zeros((4, 5), bool)
    mask[0] = True
    assert epe(pred, gt, mask) == pytest.approx(3.0)
    assert np.isnan(epe(pred, gt, np.zeros((4, 5), bool)))
    assert epe(torch.from_numpy(pred), torch.from_numpy(gt)) == pytest.approx(epe(pred, gt))
    seq = np.stack([pred, gt])
    assert epe(seq, np.stack([gt, gt])) == pytest.approx(epe(pred, gt) / 2)
