"""Full-reference frame metrics PSNR, SSIM, L1 and MSE, with the TikTok/DisCo protocol quirks (DYL spec §4, EYM §4, DAB §4).

Every function compares a generated video `pred` with its ground truth `gt`, frame by frame, and returns the mean
over frames (`per_frame=True` returns the `(F,)` array instead). Inputs are `(F, H, W, 3)` (or one `(H, W, 3)`
frame) RGB on the 0-255 scale, uint8 or float; `pred` and `gt` must have the same shape (resizing is the caller's
job and must be recorded in the protocol: DisCo resizes `pred` to `gt` with `cv2.resize`, bilinear).

The TikTok tables (DisCo and every paper that quotes it: DYL Table 1, EYM Table I) were produced by DisCo's
`tool/metrics/ssim_l1_lpips_psnr.py`; its three quirks are reproduced by the `"disco"`/`"tiktok"` modes:

* PSNR: `np.mean((a - b) ** 2)` on the uint8 arrays that `cv2.imread` returns, without a cast. Both the
  subtraction and the square wrap modulo 256, so each pixel contributes `(d ** 2) mod 256` instead of `d ** 2`
  (the wrap of `a - b` itself does not matter: `(256 - d) ** 2 = d ** 2 (mod 256)`). Every per-pixel term is
  below 256, so legacy PSNR is always > 20 log10(255 / 16) = 24.05 dB, errors that are multiples of 16 vanish,
  and only frames whose errors all satisfy |d| <= 15 get the correct value (DisCo #86, MagicAnimate #146).
  A zero MSE scores 100 dB in that code.
* L1: `mean(|a - b|) / (H * W)` on the 0-255 scale (about 4e-4 on TikTok) instead of a mean on [0, 1].
* SSIM: scikit-image defaults on grayscale (`cv2.COLOR_BGR2GRAY`, uint8): a 7x7 uniform window, sample
  covariance (N-1), K1=0.01, K2=0.03, data range 255, the SSIM map averaged after cropping 3 border pixels.
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError

PSNR_MODES = ("correct", "disco")
SSIM_MODES = ("tiktok", "gaussian")
L1_MODES = ("mean", "tiktok")


def _as_video(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise InputError(f"{name} must be (F, H, W, 3) or (H, W, 3), got shape {x.shape}")
    return x


def _check_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_video(pred, "pred"), _as_video(gt, "gt")
    if pred.shape != gt.shape:
        raise InputError(f"pred {pred.shape} and gt {gt.shape} differ in shape; resize first and record it")
    if pred.shape[0] == 0:
        raise InputError("pred and gt have no frames")
    return pred, gt


def _reduce(values: np.ndarray, per_frame: bool):
    return values if per_frame else float(np.mean(values))


def mse(pred, gt, scale: float = 255.0, per_frame: bool = False):
    """Mean squared error per frame, on a value scale of `scale` (255: the 0-255 scale; 1: on [0, 1]).

    Protocol: float64 difference, mean over H, W and channels, then mean over frames.

    Args:
        pred: `(F, H, W, 3)` generated frames, 0-255.
        gt: same shape, ground truth.
        scale: 255 keeps the 0-255 scale; 1 divides values by 255 first.
        per_frame: return the `(F,)` array.
    """
    pred, gt = _check_pair(pred, gt)
    n = pred[0].size
    if pred.dtype == np.uint8 and gt.dtype == np.uint8:  # exact integer sums, 4x less memory traffic than float64
        d = pred.astype(np.int32) - gt
        sq = np.einsum("fi,fi->f", d.reshape(len(d), -1), d.reshape(len(d), -1), dtype=np.int64)
        return _reduce(sq / n * (scale / 255.0) ** 2, per_frame)
    d = (pred.astype(np.float64) - gt.astype(np.float64)) * (scale / 255.0)
    return _reduce(np.mean(d * d, axis=(1, 2, 3)), per_frame)


def psnr(pred, gt, mode: str = "correct", per_frame: bool = False):
    """Peak signal-to-noise ratio, in dB, mean over frames.

    Protocol "correct": per frame `MSE = mean((pred - gt) ** 2)` in float64 on the 0-255 scale over H, W, RGB, then
    `10 log10(255**2 / MSE)`; identical frames give +inf (as scikit-image). Same as DAB's MAX=1 on [0, 1].
    Protocol "disco": DisCo's legacy code on uint8 frames, `MSE = mean(((pred - gt) ** 2) mod 256)` with both
    operations wrapping in uint8, `20 log10(255 / sqrt(MSE))`, 100 for MSE = 0 (module docstring). This is the
    PSNR of the TikTok tables (~29 dB) and is always > 24.05 dB.

    Args:
        pred: `(F, H, W, 3)` generated frames; uint8 for "disco".
        gt: same shape, ground truth.
        mode: "correct" or "disco".
        per_frame: return the `(F,)` array.
    """
    if mode not in PSNR_MODES:
        raise ValueError(f"mode must be one of {PSNR_MODES}, got {mode!r}")
    pred, gt = _check_pair(pred, gt)
    if mode == "correct":
        m = mse(pred, gt, per_frame=True)
        with np.errstate(divide="ignore"):
            return _reduce(10.0 * np.log10(255.0**2 / m), per_frame)
    if pred.dtype != np.uint8 or gt.dtype != np.uint8:
        raise InputError("psnr(mode='disco') reproduces a uint8 overflow and needs uint8 frames")
    d = pred - gt  # wraps modulo 256, as in DisCo
    m = np.mean(d * d, axis=(1, 2, 3))  # the square wraps too; np.mean accumulates in float64
    with np.errstate(divide="ignore"):
        out = np.where(m == 0, 100.0, 20.0 * np.log10(255.0 / np.sqrt(m)))
    return _reduce(out, per_frame)


def l1(pred, gt, mode: str = "mean", per_frame: bool = False):
    """Mean absolute error per frame, mean over frames.

    Protocol "mean": `mean(|pred - gt|) / 255`, a per-element mean on [0, 1] over H, W, RGB.
    Protocol "tiktok": DisCo's `mean(|pred - gt|) / (H * W)` on the 0-255 scale (the ~4e-4 values of the TikTok
    tables; EYM's `l1_mode: disco`). The two differ by the factor 255 / (H * W).

    Args:
        pred: `(F, H, W, 3)` generated frames, 0-255.
        gt: same shape, ground truth.
        mode: "mean" or "tiktok".
        per_frame: return the `(F,)` array.
    """
    if mode not in L1_MODES:
        raise ValueError(f"mode must be one of {L1_MODES}, got {mode!r}")
    pred, gt = _check_pair(pred, gt)
    if pred.dtype == np.uint8 and gt.dtype == np.uint8:
        absd = np.abs(pred.astype(np.int16) - gt).reshape(len(pred), -1)
        err = absd.sum(axis=1, dtype=np.int64) / absd.shape[1]
    else:
        err = np.mean(np.abs(pred.astype(np.float64) - gt.astype(np.float64)), axis=(1, 2, 3))
    norm = 255.0 if mode == "mean" else float(pred.shape[1] * pred.shape[2])
    return _reduce(err / norm, per_frame)


def rgb_to_gray_cv2(frames: np.ndarray) -> np.ndarray:
    """`cv2.cvtColor(RGB2GRAY)` per frame: `(F, H, W, 3)` uint8 -> `(F, H, W)` uint8 (0.299 R + 0.587 G + 0.114 B)."""
    import cv2

    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8:
        raise InputError("grayscale SSIM (mode='tiktok') follows DisCo's cv2 uint8 conversion and needs uint8 frames")
    f, h, w, _ = frames.shape
    # One call on a (F*H, W, 3) image: cvtColor is per pixel, so stacking the frames changes nothing.
    return cv2.cvtColor(frames.reshape(f * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(f, h, w)


def _ssim_maps(x: np.ndarray, y: np.ndarray, window: str, data_range: float) -> tuple[np.ndarray, int]:
    """SSIM maps of a stack `(N, H, W)` float64 and the border width to crop (Wang et al. 2004, Eq. 13)."""
    from scipy import ndimage

    if window == "uniform":
        size, pad = 7, 3

        def filt(a):
            return ndimage.uniform_filter(a, size=(1, size, size), mode="reflect")

        npix = size * size
        cov_norm = npix / (npix - 1.0)  # sample covariance, scikit-image's default
    else:
        sigma, truncate = 1.5, 3.5
        pad = int(truncate * sigma + 0.5)  # 11x11 window

        def filt(a):
            return ndimage.gaussian_filter(a, sigma=(0, sigma, sigma), truncate=truncate, mode="reflect")

        cov_norm = 1.0
    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s, pad


def ssim(pred, gt, mode: str = "tiktok", per_frame: bool = False):
    """Structural similarity, mean over frames.

    Protocol "tiktok" (DisCo, used by DYL and EYM TikTok tables): uint8 RGB -> cv2 grayscale (uint8), 7x7 uniform
    window, sample covariance, data range 255, mean of the SSIM map after cropping 3 pixels per border; equals
    `skimage.metrics.structural_similarity(gray_pred, gray_gt)` with defaults.
    Protocol "gaussian" (Wang et al. 2004; DAB §4 [A]): each RGB channel separately, 11x11 Gaussian window
    (sigma 1.5, truncate 3.5), population covariance, data range 255, border of 5 cropped, mean over channels;
    equals scikit-image with `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    channel_axis=-1`.

    Args:
        pred: `(F, H, W, 3)` generated frames, 0-255 (uint8 for "tiktok").
        gt: same shape, ground truth.
        mode: "tiktok" or "gaussian".
        per_frame: return the `(F,)` array.
    """
    if mode not in SSIM_MODES:
        raise ValueError(f"mode must be one of {SSIM_MODES}, got {mode!r}")
    pred, gt = _check_pair(pred, gt)
    f = pred.shape[0]
    if mode == "tiktok":
        x = rgb_to_gray_cv2(pred).astype(np.float64)
        y = rgb_to_gray_cv2(gt).astype(np.float64)
        window = "uniform"
    else:
        # (F, H, W, C) -> (F*C, H, W): channels become independent images.
        x = np.moveaxis(pred.astype(np.float64), -1, 1).reshape(-1, *pred.shape[1:3])
        y = np.moveaxis(gt.astype(np.float64), -1, 1).reshape(-1, *gt.shape[1:3])
        window = "gaussian"
    need = 7 if window == "uniform" else 11
    if min(x.shape[1:]) < need:
        raise InputError(f"frames of {x.shape[1]}x{x.shape[2]} are too small for SSIM (need {need}x{need})")
    s, pad = _ssim_maps(x, y, window, 255.0)
    vals = s[:, pad:-pad, pad:-pad].mean(axis=(1, 2)).reshape(f, -1).mean(axis=1)
    return _reduce(vals, per_frame)
