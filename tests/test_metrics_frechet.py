"""Fréchet distance against a direct scipy computation and the closed form for diagonal covariances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from dancegen.errors import InputError
from dancegen.metrics.frechet import feature_stats, frechet_distance, frechet_distance_from_features


def _direct(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("method", ["sqrtm", "eig"])
def test_matches_direct_scipy(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(0.3, 1.2, size=(300, 16)) @ rng.normal(size=(16, 16))
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    np.testing.assert_allclose(mu1, a.mean(0))
    np.testing.assert_allclose(s1, np.cov(a, rowvar=False))
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(_direct(mu1, s1, mu2, s2), rel=1e-8)


@pytest.mark.parametrize("method", ["sqrtm", "eig"])
def test_diagonal_closed_form(method):
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2), method=method) == pytest.approx(expect, rel=1e-10)


@pytest.mark.parametrize("method", ["sqrtm", "eig"])
def test_self_distance_is_zero_even_when_singular(method):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 32))  # N < D: rank-deficient covariance
    mu, s = feature_stats(x)
    assert abs(frechet_distance(mu, s, mu, s, method=method)) < 1e-6 * np.trace(s)
    assert frechet_distance_from_features(x, x + 1.0, method=method) == pytest.approx(32.0, rel=1e-5)


def test_bad_shapes():
    with pytest.raises(InputError):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(InputError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
