"""PSNR / SSIM / L1 / MSE against scikit-image and hand-computed values, including the DisCo legacy modes."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.metrics import image as im

skm = pytest.importorskip("skimage.metrics")
cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, gt.shape)
    pred = np.clip(gt.astype(int) + noise, 0, 255).astype(np.uint8)
    return pred, gt


def test_psnr_matches_skimage(pair):
    pred, gt = pair
    ref = [skm.peak_signal_noise_ratio(g, p, data_range=255) for p, g in zip(pred, gt, strict=False)]
    np.testing.assert_allclose(im.psnr(pred, gt, per_frame=True), ref, rtol=1e-12)
    assert im.psnr(pred, gt) == pytest.approx(np.mean(ref), rel=1e-12)


def test_psnr_of_known_mse():
    gt = np.zeros((2, 8, 8, 3), np.uint8)
    pred = gt + np.uint8(10)  # MSE = 100 in both frames
    assert im.mse(pred, gt) == pytest.approx(100.0)
    assert im.psnr(pred, gt) == pytest.approx(10 * np.log10(255.0**2 / 100.0), abs=1e-12)
    assert im.mse(pred, gt, scale=1.0) == pytest.approx(100.0 / 255**2)
    assert im.psnr(gt, gt) == np.inf


def test_psnr_disco_legacy_wraps_modulo_256():
    gt = np.full((1, 4, 4, 3), 100, np.uint8)
    # |d| <= 15: d^2 < 256, so the legacy value is the correct one
    small = gt + np.uint8(15)
    assert im.psnr(small, gt, mode="disco") == pytest.approx(im.psnr(small, gt), rel=1e-12)
    # d = 16 and d = -16: 256 wraps to 0 -> "perfect" 100 dB
    assert im.psnr(gt + np.uint8(16), gt, mode="disco") == 100.0
    assert im.psnr(gt - np.uint8(16), gt, mode="disco") == 100.0
    # d = 20: 400 mod 256 = 144 -> 20 log10(255 / 12)
    assert im.psnr(gt + np.uint8(20), gt, mode="disco") == pytest.approx(20 * np.log10(255 / 12.0), abs=1e-12)
    assert im.psnr(gt + np.uint8(20), gt) == pytest.approx(20 * np.log10(255 / 20.0), abs=1e-12)
    # worst case is bounded: every term < 256 -> PSNR > 24.05 dB even for the largest errors
    assert im.psnr(np.full_like(gt, 255), np.zeros_like(gt), mode="disco") > 20 * np.log10(255 / 16)
    assert im.psnr(np.full_like(gt, 255), np.zeros_like(gt)) == pytest.approx(0.0, abs=1e-12)


def test_psnr_disco_equals_literal_legacy_code(pair):
    pred, gt = pair
    legacy = []
    for p, g in zip(pred, gt, strict=False):  # DisCo's psnr_eval on cv2.imread arrays, verbatim semantics
        m = np.mean((p[..., ::-1] - g[..., ::-1]) ** 2)
        legacy.append(100 if m == 0 else 20 * np.log10(255.0 / np.sqrt(m)))
    np.testing.assert_allclose(im.psnr(pred, gt, mode="disco", per_frame=True), legacy, rtol=1e-12)
    assert im.psnr(pred, gt, mode="disco") > im.psnr(pred, gt) + 3  # the inflation the TikTok tables carry


def test_ssim_tiktok_matches_skimage_on_cv2_gray(pair):
    pred, gt = pair
    ref = [skm.structural_similarity(cv2.cvtColor(p[..., ::-1], cv2.COLOR_BGR2GRAY),
                                     cv2.cvtColor(g[..., ::-1], cv2.COLOR_BGR2GRAY)) for p, g in zip(pred, gt, strict=False)]
    np.testing.assert_allclose(im.ssim(pred, gt, per_frame=True), ref, rtol=1e-10)


def test_ssim_gaussian_matches_skimage_rgb(pair):
    pred, gt = pair
    ref = [skm.structural_similarity(p, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=-1) for p, g in zip(pred, gt, strict=False)]
    np.testing.assert_allclose(im.ssim(pred, gt, mode="gaussian", per_frame=True), ref, rtol=1e-10)


def test_ssim_identity_and_order(pair):
    pred, gt = pair
    assert im.ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
    assert im.ssim(gt, gt, mode="gaussian") == pytest.approx(1.0, abs=1e-12)
    noisier = np.clip(gt.astype(int) + 2 * (pred.astype(int) - gt.astype(int)), 0, 255).astype(np.uint8)
    assert im.ssim(noisier, gt) < im.ssim(pred, gt) < 1.0


def test_l1_modes():
    gt = np.zeros((2, 10, 20, 3), np.uint8)
    pred = gt + np.uint8(51)
    assert im.l1(pred, gt) == pytest.approx(0.2)
    assert im.l1(pred, gt, mode="tiktok") == pytest.approx(51.0 / 200.0)
    # DisCo's l1_eval, literally: |a - b| / (H * W) per element, then the mean
    literal = np.mean(np.absolute(pred[0].astype("float") - gt[0].astype("float")) / float(10 * 20))
    assert im.l1(pred, gt, mode="tiktok", per_frame=True)[0] == pytest.approx(literal, rel=1e-12)


def test_errors():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(InputError):
        im.psnr(a, a[:, :8])
    with pytest.raises(InputError):
        im.psnr(a.astype(np.float32), a, mode="disco")
    with pytest.raises(ValueError):
        im.ssim(a, a, mode="nope")
    with pytest.raises(InputError):
        im.ssim(a[:, :5, :5], a[:, :5, :5])
