"""NIQE / BRISQUE: golden values from reference implementations, monotonicity, AGGD fits, regions.

Golden values were computed once in development (not at test time, the references are not dependencies):
- NIQE: BasicSR 1.4.2 `basicsr.metrics.niqe.niqe` (which matches MATLAB's `computequality.m`, baboon 5.7296), with
  its `imresize` switched from float32 to float64 torch tensors, on MATLAB-`rgb2gray` images.
- BRISQUE: image-quality 1.2.7 `imquality.brisque.calculate_features` (shims only for scikit-image arguments
  removed since), scored by scikit-learn's libsvm `SVR.predict` carrying the same 770 support vectors.
"""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.metrics import noref

data = pytest.importorskip("skimage.data")

# name: (NIQE reference, BRISQUE reference)
GOLDEN = {
    "astronaut": (3.066637499629109, 10.917445810318412),
    "coffee": (4.058462007488338, 2.0011945157143316),
    "chelsea": (2.572084043014872, 1.129376887337429),
    # big flat sky: AGGD fits of flat patches depend on round-off signs (noref._mscn) -> looser tolerance
    "rocket": (7.036267751677354, 2.7335760210787328),
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_values(name):
    img = getattr(data, name)()
    niqe_ref, brisque_ref = GOLDEN[name]
    rel = 2e-4 if name == "rocket" else 1e-9
    assert noref.niqe(img) == pytest.approx(niqe_ref, rel=rel)
    assert noref.brisque(img) == pytest.approx(brisque_ref, rel=rel, abs=1e-3 if name == "rocket" else 1e-9)


def test_blur_and_noise_raise_both_scores():
    import cv2

    img = data.chelsea()
    blur = cv2.GaussianBlur(img, (0, 0), 2.0)
    noise = np.clip(img + np.random.default_rng(0).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    v = np.stack([img, blur, noise])
    n, b = noref.niqe(v, per_frame=True), noref.brisque(v, per_frame=True)
    assert n[1] > n[0] + 3 and n[2] > n[0] + 3
    assert b[1] > b[0] + 20 and b[2] > b[0] + 20
    assert noref.niqe(v) == pytest.approx(n.mean())


def _aggd_samples(rng, alpha, sl, sr, n):
    # scale beta so that E[x^2] on each side equals s^2: beta = s sqrt(G(1/a) / G(3/a))
    from scipy.special import gamma
    from scipy.stats import gennorm

    k = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    mag = np.abs(gennorm.rvs(alpha, size=n, random_state=rng))
    left = rng.random(n) < sl / (sl + sr)  # AGGD side probabilities are proportional to the scales
    return np.where(left, -mag * sl * k, mag * sr * k)


@pytest.mark.parametrize("alpha,sl,sr", [(0.8, 1.0, 1.0), (2.0, 0.5, 1.5), (1.3, 2.0, 1.0)])
def test_aggd_fits_recover_parameters(alpha, sl, sr):
    rng = np.random.default_rng(0)
    x = _aggd_samples(rng, alpha, sl, sr, 200_000)[None]
    a, bl, br = noref.aggd_fit_grid(x)
    a2, mean, sl2, sr2 = noref.aggd_fit_root(x)
    assert a[0] == pytest.approx(alpha, rel=0.03)
    assert a2[0] == pytest.approx(a[0], abs=1e-3)  # the grid is the root rounded to 0.001
    assert sl2[0] == pytest.approx(sl, rel=0.02) and sr2[0] == pytest.approx(sr, rel=0.02)
    from scipy.special import gamma

    k = np.sqrt(gamma(1 / a[0]) / gamma(3 / a[0]))
    assert bl[0] == pytest.approx(sl2[0] * k, rel=1e-12) and br[0] == pytest.approx(sr2[0] * k, rel=1e-12)


def test_aggd_hand_computed():
    x = np.array([[-3.0, -0.5, -0.1, 0.2, 0.4, 2.5]])
    alpha, mean, sl, sr = noref.aggd_fit_root(x)
    assert sl[0] == pytest.approx(np.sqrt((9 + 0.25 + 0.01) / 3)) and sr[0] == pytest.approx(np.sqrt(6.45 / 3))
    gh = sl[0] / sr[0]
    rhat = (6.7 / 6) ** 2 / (15.71 / 6)
    target = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    assert target < 0.75  # phi's supremum, so a root exists
    assert noref._phi(alpha)[0] == pytest.approx(target, rel=1e-10)
    from scipy.special import gamma

    expect_mean = (sr[0] - sl[0]) * np.sqrt(gamma(1 / alpha[0]) / gamma(3 / alpha[0])) * gamma(2 / alpha[0]) / gamma(
        1 / alpha[0])
    assert mean[0] == pytest.approx(expect_mean, rel=1e-12)
    assert noref.aggd_fit_grid(x)[0][0] == pytest.approx(alpha[0], abs=6e-4)
    assert np.isnan(noref.aggd_fit_grid(np.array([[1.0, 2.0, 3.0]]))[0][0])  # no negative side


def test_matlab_imresize_properties():
    ramp = np.add.outer(np.arange(64.0), 2 * np.arange(96.0))
    out = noref.matlab_imresize(ramp, 0.5)
    assert out.shape == (32, 48)
    # bicubic reproduces linear functions away from the mirrored border: output pixel i samples 2i + 0.5
    ii, jj = np.meshgrid(np.arange(32), np.arange(48), indexing="ij")
    np.testing.assert_allclose(out[3:-3, 3:-3], (2 * ii + 0.5 + 2 * (2 * jj + 0.5))[3:-3, 3:-3], atol=1e-10)
    np.testing.assert_allclose(noref.matlab_imresize(np.full((10, 7), 3.0), 0.5), 3.0)


def test_skimage_equivalents():
    color = pytest.importorskip("skimage.color")
    transform = pytest.importorskip("skimage.transform")
    img = data.chelsea()[:101, :77]
    g = noref.skimage_rgb2gray(img)
    np.testing.assert_allclose(g, color.rgb2gray(img), atol=1e-12)
    ref = transform.rescale(g, 0.5, order=2, mode="constant", anti_aliasing=False)
    np.testing.assert_allclose(noref._rescale_half(g), ref, atol=1e-12)


def test_regions():
    frame = data.chelsea()[:200, :300]
    mask = np.zeros(frame.shape[:2], bool)
    mask[50:120, 100:160] = True
    body = noref.region_image(frame, mask, "body", "zero")
    assert body.shape == (70, 60, 3)
    np.testing.assert_array_equal(body, frame[50:120, 100:160])
    bg = noref.region_image(frame, mask, "background", "mean")
    assert bg.shape == frame.shape
    np.testing.assert_allclose(bg[60, 110], frame[~mask].mean(axis=0))
    assert noref.region_image(frame, np.zeros_like(mask), "body") is None
    video, masks = frame[None].repeat(2, 0), np.stack([mask, np.zeros_like(mask)])
    per = noref.niqe(video, masks, region="body", per_frame=True)
    assert np.isfinite(per[0]) and np.isnan(per[1])
    assert noref.niqe(video, masks, region="body") == pytest.approx(per[0])
    np.testing.assert_allclose(noref.niqe(video, masks, per_frame=True), noref.niqe(frame))  # "frame" ignores it
    assert np.isfinite(noref.brisque(video, masks, region="background"))
    padded = noref._pad_to(body, 192)
    assert padded.shape[:2] == (192, 192)
    with pytest.raises(InputError):
        noref.niqe(video, region="body")
    with pytest.raises(InputError):
        noref.niqe(video, masks[:, :10])
