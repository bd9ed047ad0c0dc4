"""No-reference quality: NIQE (Mittal, Soundararajan & Bovik 2013) and BRISQUE (Mittal, Moorthy & Bovik 2012), per frame
and on body / background regions (Dancing Avatar spec §4, metrics 1-6).

NIQE follows the official MATLAB release (`computequality.m`) step by step, so its numbers match MATLAB's:
grayscale by MATLAB `rgb2gray` (rounded to uint8), crop to a multiple of 96 px, two scales (the second by MATLAB's
antialiased bicubic `imresize(im, 0.5)`), MSCN with a 7x7 Gaussian (sigma 7/6, replicate padding, C = 1), per
96x96 patch (48x48 at scale 2) 18 features: AGGD fit (alpha, mean beta) of the MSCN coefficients and
(alpha, mean, beta_l, beta_r) of the four pairwise products (circular shifts [0 1], [1 0], [1 1], [-1 1]);
the patch features get a Gaussian (nan-mean; covariance over NaN-free rows) and NIQE is
`sqrt((mu_p - mu)^T pinv((S_p + S) / 2) (mu_p - mu))` against the pristine model. All patches count at test time
(the sharpness selection of the paper is used only when the pristine model is built, not here).
Pristine model: `data/niqe_pristine.npz`, the official `modelparameters.mat` values (data/README.md).

BRISQUE uses the SVR model bundled in `data/brisque_imquality.npz` (from the Apache-2.0 `image-quality` package,
data/README.md), so its features follow that package exactly: skimage `rgb2gray` on [0, 1], 7x7 Gaussian
(sigma 7/6, zero padding), C = 1/255, a second scale by order-2 spline `rescale(0.5)` (no antialiasing), AGGD fits
by root finding (right side x >= 0), features (alpha, (s_l^2 + s_r^2) / 2) for the MSCN coefficients and
(alpha, mean, s_l^2, s_r^2) for the horizontal, vertical, main- and secondary-diagonal products; the 36 features
are scaled to [-1, 1] by the model's ranges and scored by the RBF epsilon-SVR `sum_i c_i exp(-g |x - sv_i|^2) - rho`.
Its scores are comparable with `image-quality`'s, not identical to MATLAB/OpenCV BRISQUE (which use the LIVE
`allmodel` and slightly different features).

Regions (DA spec §4 GAP, our choice): with a mask `(F, H, W)` (True/nonzero = body), region "body" is the image
cropped to the mask's tight bounding box with non-body pixels set to `fill`; region "background" is the full frame
with body pixels set to `fill`. `fill` is "zero" or "mean" (the per-channel mean of the kept pixels). A frame whose
region is empty scores NaN and is left out of the mean. Images smaller than 192 px (NIQE) or 32 px (BRISQUE) in a
dimension are mirror-padded (`np.pad(mode="symmetric")`) up to that size, so NIQE always has >= 2x2 patches.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from dancegen.errors import InputError

REGIONS = ("frame", "body", "background")
FILLS = ("zero", "mean")
NIQE_PATCH = 96
NIQE_MIN_SIZE = 2 * NIQE_PATCH
BRISQUE_MIN_SIZE = 32
_ALPHA_GRID = np.arange(0.2, 10.001, 0.001)  # estimateaggdparam.m's gam = 0.2:0.001:10


# ----------------------------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------------------------


@functools.cache
def _load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(Path(__file__).with_name("data") / name) as z:
        return {k: z[k] for k in z.files}


def _fspecial_gaussian(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """MATLAB `fspecial('gaussian', size, sigma)`: the normalised 2-D kernel (NIQE's window)."""
    y, x = np.mgrid[-(size // 2):size // 2 + 1, -(size // 2):size // 2 + 1].astype(np.float64)
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    return h / h.sum()


def _imquality_gaussian(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """`imquality.statistics.gaussian_kernel2d(size, sigma)`: the normalised 2-D kernel (BRISQUE's window)."""
    y, x = np.indices((size, size)) - int(size / 2)
    k = 1 / (2 * np.pi * sigma**2) * np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / np.sum(k)


def _mscn(img: np.ndarray, variant: str) -> np.ndarray:
    """MSCN coefficients `(I - mu) / (sigma + C)` of a 2-D image.

    The filtering repeats the reference arithmetic exactly (a full 2-D kernel, not a separable pair): on flat
    regions `I - mu` is round-off, and its sign decides which side of the AGGD fit those samples land on, so a
    different summation order moves the features of images with flat areas by up to ~1e-3.
    variant "niqe": MATLAB `imfilter(im, fspecial('gaussian', 7, 7/6), 'replicate')` on 0-255, C = 1.
    variant "brisque": `scipy.signal.convolve2d(im, kernel, 'same')` (zero padding) on [0, 1], C = 1/255.
    """
    if variant == "niqe":
        from scipy import ndimage

        w = _fspecial_gaussian()
        mu = ndimage.convolve(img, w, mode="nearest")
        sigma = np.sqrt(np.abs(ndimage.convolve(img * img, w, mode="nearest") - mu * mu))
        return (img - mu) / (sigma + 1.0)
    from scipy import signal

    k = _imquality_gaussian()
    mu = signal.convolve2d(img, k, "same")
    sigma = np.sqrt(np.abs(mu * mu - signal.convolve2d(img * img, k, "same")))
    return (img - mu) / (sigma + 1.0 / 255.0)


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=32)
def _imresize_matrix(in_len: int, scale: float) -> np.ndarray:
    """`(out_len, in_len)` weights of MATLAB `imresize(..., scale)` along one axis (bicubic, antialiasing on)."""
    out_len = int(np.ceil(in_len * scale))
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based source indices
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])  # symmetric boundary
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(img, scale)` (bicubic, antialiased) for a float `(H, W)` image, no rounding."""
    rows = _imresize_matrix(img.shape[0], float(scale))
    cols = _imresize_matrix(img.shape[1], float(scale))
    return rows @ img @ cols.T


def _video(x, name: str = "video") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[-1] == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"{name} must be (F, H, W, 3) RGB, got shape {x.shape}")
    return x


def _masks(mask, video: np.ndarray) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim == 4 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim == 2:
        m = m[None]
    if m.shape != video.shape[:3]:
        raise InputError(f"mask must be (F, H, W) = {video.shape[:3]}, got shape {np.shape(mask)}")
    return m > (127 if m.dtype == np.uint8 and m.max() > 1 else 0)


def region_image(frame: np.ndarray, mask: np.ndarray | None, region: str = "frame", fill: str = "zero"):
    """The image a region metric sees (module docstring): `(h, w, 3)` float64 on 0-255, or None if empty.

    Args:
        frame: `(H, W, 3)` RGB 0-255.
        mask: `(H, W)` bool, True = body; ignored for region "frame".
        region: "frame", "body" or "background".
        fill: "zero" or "mean" for the pixels outside the region.
    """
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    img = frame.astype(np.float64)
    if region == "frame":
        return img
    if mask is None:
        raise InputError(f"region {region!r} needs a body mask")
    keep = mask if region == "body" else ~mask
    if not keep.any():
        return None
    value = img[keep].mean(axis=0) if fill == "mean" else 0.0
    img = np.where(keep[..., None], img, value)
    if region == "body":
        ys, xs = np.nonzero(keep)
        img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return img


def _pad_to(img: np.ndarray, size: int) -> np.ndarray:
    ph, pw = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    while ph > 0 or pw > 0:  # "symmetric" pads at most one image length per call
        step_h, step_w = min(ph, img.shape[0]), min(pw, img.shape[1])
        pads = ((step_h // 2, step_h - step_h // 2), (step_w // 2, step_w - step_w // 2)) + ((0, 0),) * (img.ndim - 2)
        img = np.pad(img, pads, mode="symmetric")
        ph, pw = ph - step_h, pw - step_w
    return img


def _per_frame(video, mask, region, fill, score_fn, min_size, per_frame):
    video = _video(video)
    masks = _masks(mask, video)
    if region != "frame" and masks is None:
        raise InputError(f"region {region!r} needs a mask")
    out = np.full(video.shape[0], np.nan)
    for t in range(video.shape[0]):
        img = region_image(video[t], None if masks is None else masks[t], region, fill)
        if img is not None:
            out[t] = score_fn(_pad_to(img, min_size))
    if per_frame:
        return out
    return float(np.nanmean(out)) if np.isfinite(out).any() else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# AGGD fits
# ----------------------------------------------------------------------------------------------------------------


def aggd_fit_grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD moment matching on MATLAB's alpha grid 0.2:0.001:10 (NIQE `estimateaggdparam.m`), vectorised.

    Args:
        x: `(P, n)` samples, one row per patch.

    Returns:
        `(alpha, beta_l, beta_r)`, each `(P,)`; NaN where a row has no negative or no positive values.
    """
    from scipy.special import gammaln

    x = np.asarray(x, np.float64)
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((np.where(neg, x * x, 0)).sum(1) / neg.sum(1))
        right = np.sqrt((np.where(pos, x * x, 0)).sum(1) / pos.sum(1))
        gh = left / right
        rhat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        rnorm = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    g = _ALPHA_GRID
    r_gam = np.exp(2 * gammaln(2 / g) - gammaln(1 / g) - gammaln(3 / g))
    pos_idx = np.argmin((r_gam[None, :] - np.nan_to_num(rnorm, nan=-1.0)[:, None]) ** 2, axis=1)
    alpha = np.where(np.isfinite(rnorm), g[pos_idx], np.nan)
    with np.errstate(invalid="ignore"):
        k = np.sqrt(np.exp(gammaln(1 / alpha) - gammaln(3 / alpha)))
    return alpha, left * k, right * k


def _phi(alpha: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln

    return np.exp(2 * gammaln(2 / alpha) - gammaln(1 / alpha) - gammaln(3 / alpha))


def aggd_fit_root(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AGGD fit as `image-quality` computes it: alpha solves `phi(alpha) = R_hat` exactly (bisection), x >= 0 right.

    Args:
        x: `(P, n)` samples.

    Returns:
        `(alpha, mean, sigma_l, sigma_r)`, each `(P,)`; sigma are the one-sided RMS values and
        `mean = (sigma_r - sigma_l) sqrt(G(1/a) / G(3/a)) G(2/a) / G(1/a)`.
    """
    from scipy.special import gammaln

    x = np.asarray(x, np.float64)
    neg, nonneg = x < 0, x >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        sl = np.sqrt(np.where(neg, x * x, 0).sum(1) / neg.sum(1))
        sr = np.sqrt(np.where(nonneg, x * x, 0).sum(1) / nonneg.sum(1))
        gh = sl / sr
        rhat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        target = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    # phi is increasing in alpha; bisection in log(alpha) on [0.05, 50] to machine precision.
    lo = np.full(x.shape[0], np.log(0.05))
    hi = np.full(x.shape[0], np.log(50.0))
    t = np.nan_to_num(target, nan=0.5)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        up = _phi(np.exp(mid)) < t
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    alpha = np.where(np.isfinite(target), np.exp(0.5 * (lo + hi)), np.nan)
    with np.errstate(invalid="ignore"):
        const = np.sqrt(np.exp(gammaln(1 / alpha) - gammaln(3 / alpha)))
        mean = (sr - sl) * const * np.exp(gammaln(2 / alpha) - gammaln(1 / alpha))
    return alpha, mean, sl, sr


# ----------------------------------------------------------------------------------------------------------------
# NIQE
# ----------------------------------------------------------------------------------------------------------------


def matlab_rgb2gray(img: np.ndarray) -> np.ndarray:
    """MATLAB `rgb2gray` of a 0-255 RGB image, rounded as MATLAB does for uint8: `(H, W, 3)` -> `(H, W)` float64."""
    w = np.array([0.298936021293776, 0.587043074451121, 0.114020904255103])
    return np.floor(np.asarray(img, np.float64) @ w + 0.5)


def _niqe_patch_features(structdis: np.ndarray, block: int) -> np.ndarray:
    """`computefeature.m` on every `block x block` patch of an MSCN image: `(P, 18)`."""
    h, w = structdis.shape
    nr, nc = h // block, w // block
    blocks = structdis[:nr * block, :nc * block].reshape(nr, block, nc, block).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(nr * nc, block, block)
    flat = blocks.reshape(len(blocks), -1)
    feats = []
    a, bl, br = aggd_fit_grid(flat)
    feats += [a, (bl + br) / 2]
    from scipy.special import gammaln

    for sy, sx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        pair = (blocks * np.roll(blocks, (sy, sx), axis=(1, 2))).reshape(len(blocks), -1)
        a, bl, br = aggd_fit_grid(pair)
        with np.errstate(invalid="ignore"):
            meanparam = (br - bl) * np.exp(gammaln(2 / a) - gammaln(1 / a))
        feats += [a, meanparam, bl, br]
    return np.stack(feats, axis=1)


def niqe_features(gray: np.ndarray, patch: int = NIQE_PATCH) -> np.ndarray:
    """The `(P, 36)` NIQE patch features of a grayscale 0-255 image (module docstring)."""
    gray = np.asarray(gray, np.float64)
    nr, nc = gray.shape[0] // patch, gray.shape[1] // patch
    if nr == 0 or nc == 0:
        raise InputError(f"NIQE needs an image of at least {patch}x{patch}, got {gray.shape}")
    im = gray[:nr * patch, :nc * patch]
    feats = []
    for scale in (1, 2):
        structdis = _mscn(im, "niqe")
        feats.append(_niqe_patch_features(structdis, patch // scale))
        if scale == 1:
            im = matlab_imresize(im, 0.5)
    return np.concatenate(feats, axis=1)


def niqe_score_gray(gray: np.ndarray, params: dict | None = None) -> float:
    """NIQE of one grayscale 0-255 image against the pristine MVG `params` (default: the bundled official one)."""
    p = params or _load_npz("niqe_pristine.npz")
    feats = niqe_features(gray)
    mu = np.nanmean(feats, axis=0)
    rows = feats[~np.isnan(feats).any(axis=1)]
    if rows.shape[0] < 2:
        return float("nan")
    cov = np.cov(rows, rowvar=False)
    d = p["mu"] - mu
    return float(np.sqrt(d @ np.linalg.pinv((p["cov"] + cov) / 2.0) @ d))


def niqe(video, mask=None, region: str = "frame", fill: str = "zero", per_frame: bool = False):
    """NIQE per frame (lower is better), mean over frames with a score.

    Protocol: MATLAB `computequality.m` with the official pristine model (module docstring); RGB 0-255 frames,
    MATLAB `rgb2gray`; no resize. Regions: "frame", or with `mask` "body" / "background" (module docstring).

    Args:
        video: `(F, H, W, 3)` RGB uint8 (or 0-255 float).
        mask: optional `(F, H, W)` body mask (bool, or uint8 > 127); used by regions "body" and "background",
            ignored (only shape-checked) for "frame".
        region: "frame", "body" or "background".
        fill: "zero" or "mean" for pixels outside the region.
        per_frame: return the `(F,)` array (NaN for frames with an empty region).
    """
    return _per_frame(video, mask, region, fill, lambda img: niqe_score_gray(matlab_rgb2gray(img)),
                      NIQE_MIN_SIZE, per_frame)


# ----------------------------------------------------------------------------------------------------------------
# BRISQUE
# ----------------------------------------------------------------------------------------------------------------


def skimage_rgb2gray(img: np.ndarray) -> np.ndarray:
    """`skimage.color.rgb2gray` of a 0-255 RGB image: `(H, W)` float64 on [0, 1]."""
    return np.asarray(img, np.float64) @ (np.array([0.2125, 0.7154, 0.0721]) / 255.0)


def _rescale_half(img: np.ndarray) -> np.ndarray:
    """`skimage.transform.rescale(img, 0.5, order=2, mode="constant", anti_aliasing=False)` (scikit-image >= 0.19)."""
    from scipy import ndimage

    out_shape = np.maximum(np.round(0.5 * np.array(img.shape)), 1)
    zoom = out_shape / np.array(img.shape)
    out = ndimage.zoom(img, zoom, order=2, mode="grid-constant", cval=0.0, grid_mode=True)
    return np.clip(out, min(img.min(), 0.0), max(img.max(), 0.0))


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 36 unscaled BRISQUE features of a grayscale [0, 1] image (the `image-quality` definition, module docstring)."""
    feats = []
    im = np.asarray(gray, np.float64)
    for scale in (1, 2):
        m = _mscn(im, "brisque")
        a, _, sl, sr = aggd_fit_root(m.reshape(1, -1))
        feats += [a, (sl**2 + sr**2) / 2]
        for prod in (m[:, :-1] * m[:, 1:], m[:-1, :] * m[1:, :], m[:-1, :-1] * m[1:, 1:], m[1:, :-1] * m[:-1, 1:]):
            a, mean, sl, sr = aggd_fit_root(prod.reshape(1, -1))
            feats += [a, mean, sl**2, sr**2]
        if scale == 1:
            im = _rescale_half(im)
    return np.concatenate(feats)


def svr_rbf_predict(x: np.ndarray, model: dict) -> np.ndarray:
    """libsvm epsilon-SVR with RBF kernel: `sum_i dual_coef_i exp(-gamma |x - sv_i|^2) - rho` for `(N, D)` x."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    sv = model["support_vectors"]
    d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * x @ sv.T
    return np.exp(-float(model["gamma"]) * np.maximum(d2, 0.0)) @ model["dual_coef"] - float(model["rho"])


def brisque_score_gray(gray: np.ndarray, model: dict | None = None) -> float:
    """BRISQUE of one grayscale [0, 1] image with `model` (default: the bundled `image-quality` SVR)."""
    m = model or _load_npz("brisque_imquality.npz")
    f = brisque_features(gray)
    lo, hi = m["feature_min"], m["feature_max"]
    scaled = -1.0 + 2.0 * (f - lo) / (hi - lo)
    if not np.isfinite(scaled).all():
        return float("nan")
    return float(svr_rbf_predict(scaled, m)[0])


def brisque(video, mask=None, region: str = "frame", fill: str = "zero", per_frame: bool = False):
    """BRISQUE per frame (lower is better, roughly 0-100), mean over frames with a score.

    Protocol: `image-quality` 1.2.7 features and SVR (module docstring); RGB 0-255 frames, skimage grayscale;
    no resize. Regions as in `niqe`.

    Args:
        video: `(F, H, W, 3)` RGB uint8 (or 0-255 float).
        mask: optional `(F, H, W)` body mask; used by regions "body" and "background", ignored for "frame".
        region: "frame", "body" or "background".
        fill: "zero" or "mean".
        per_frame: return the `(F,)` array (NaN for frames with an empty region).
    """
    return _per_frame(video, mask, region, fill, lambda img: brisque_score_gray(skimage_rgb2gray(img)),
                      BRISQUE_MIN_SIZE, per_frame)
