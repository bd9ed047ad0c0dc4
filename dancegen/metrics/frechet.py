"""Fréchet distance between Gaussians fitted to features: the core of FID, FID-VID and FVD (DYL §4, DAB §4, prior-art §4).

`FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`. Two ways to get the trace of the matrix square root:

* "sqrtm" (default, pytorch-fid / clean-fid / StyleGAN-V compatible): `scipy.linalg.sqrtm(S1 @ S2)`; if the result
  is not finite (singular product), retry with `eps * I` added to both covariances; imaginary parts from rounding
  are dropped when the diagonal's imaginary part is below `1e-3` (an error otherwise), as pytorch-fid does.
* "eig": `Tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i)` where lambda_i are the eigenvalues of the symmetric PSD matrix
  `S1^(1/2) S2 S1^(1/2)` (similar to `S1 S2`), negative round-off clipped to 0. Always real, no fallback needed,
  and faster for large D (one `eigh` each for `S1^(1/2)` and the product).
"""

from __future__ import annotations

import numpy as np

from dancegen.errors import InputError

FD_METHODS = ("sqrtm", "eig")


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, as FID code computes them.

    Args:
        feats: `(N, D)` features, N >= 2.

    Returns:
        `(mu (D,), sigma (D, D))` in float64; `sigma` is the unbiased covariance (`np.cov(rowvar=False)`, N - 1).
    """
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise InputError(f"features must be (N, D), got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise InputError(f"need at least 2 feature vectors for a covariance, got {feats.shape[0]}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1, sigma2, method: str = "sqrtm", eps: float = 1e-6) -> float:
    """`Tr((sigma1 @ sigma2)^(1/2))` for PSD matrices (module docstring for the methods)."""
    if method == "eig":
        s1 = _psd_sqrt(sigma1)
        lam = np.linalg.eigvalsh(s1 @ sigma2 @ s1)
        return float(np.sqrt(np.clip(lam, 0, None)).sum())
    if method != "sqrtm":
        raise ValueError(f"method must be one of {FD_METHODS}, got {method!r}")
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():  # singular products (N < D) are expected; the finiteness check handles them
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "sqrtm", eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1: `(D,)` mean of set 1 (e.g. generated features).
        sigma1: `(D, D)` covariance of set 1.
        mu2: `(D,)` mean of set 2 (e.g. real features).
        sigma2: `(D, D)` covariance of set 2.
        method: "sqrtm" (pytorch-fid compatible) or "eig" (module docstring).
        eps: diagonal offset for the singular-product fallback of "sqrtm".

    Returns:
        The distance (>= 0 up to round-off), a float.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InputError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    tr = trace_sqrt_product(sigma1, sigma2, method=method, eps=eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr)


def frechet_distance_from_features(feats1, feats2, method: str = "sqrtm") -> float:
    """`frechet_distance(*feature_stats(feats1), *feature_stats(feats2))` for `(N, D)` feature sets."""
    return frechet_distance(*feature_stats(feats1), *feature_stats(feats2), method=method)
