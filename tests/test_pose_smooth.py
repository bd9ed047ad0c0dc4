"""Temporal pose smoothing (dancegen.pose.smooth)."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.pose.sequence import PoseSequence
from dancegen.pose.smooth import METHODS, fill_short_gaps, jitter, smooth_poses


def clean_track(f=120, fps=30.0):
    t = np.arange(f)[:, None] / fps
    ph = np.arange(18)[None]
    x = 256 + 60 * np.sin(2 * np.pi * 0.4 * t + ph)
    y = 256 + 40 * np.cos(2 * np.pi * 0.6 * t + ph)
    return np.stack([x, y], -1)


def noisy_seq(seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    clean = clean_track()
    noisy = clean + rng.normal(0, sigma, clean.shape)
    kps = np.concatenate([noisy, np.full(clean.shape[:2] + (1,), 0.9)], -1)
    return clean, PoseSequence(kps, width=512, height=512, fps=30.0)


@pytest.mark.parametrize("method,min_gain", [("one_euro", 1.8), ("savgol", 3.0), ("gaussian", 3.0)])
def test_jitter_and_error_fall(method, min_gain):
    clean, seq = noisy_seq()
    out = smooth_poses(seq, method=method)
    j_in, j_out = jitter(seq.xy.astype(np.float64)), jitter(out.xy.astype(np.float64))
    e_in = np.abs(seq.xy - clean).mean()
    e_out = np.abs(out.xy - clean).mean()
    assert j_in / j_out > min_gain, (j_in, j_out)
    assert e_out < 0.85 * e_in, (e_in, e_out)
    np.testing.assert_array_equal(out.conf, seq.conf)
    assert out.meta["smoothing"]["method"] == method


@pytest.mark.parametrize("bidirectional", [True, False])
def test_one_euro_keeps_a_step_sharp(bidirectional):
    rng = np.random.default_rng(1)
    f, step = 60, 30
    x = np.zeros((f, 18, 2))
    x[step:] = 100.0
    x += rng.normal(0, 1.0, x.shape)
    seq = PoseSequence(np.concatenate([x, np.ones((f, 18, 1))], -1), fps=30.0)
    out = smooth_poses(seq, method="one_euro", bidirectional=bidirectional).xy
    assert np.abs(out[step + 3 :] - 100).max() < 8
    assert np.abs(out[: step - 3]).max() < 8
    # the transition takes at most a few frames
    settled = np.abs(out[step:, 0, 0] - 100) < 8
    assert np.argmax(settled) <= 3


def test_short_gap_filled_long_gap_untouched():
    f = 60
    x = np.zeros((f, 18, 3), np.float32)
    x[:, :, 2] = 0.9
    x[:, 0, 0] = np.linspace(0, 59, f)  # joint 0: a ramp with a 3-frame dropout
    x[10:13, 0] = [5.0, 5.0, 0.1]
    x[:20, 1, :2] = 0.0  # joint 1: 0 before a 15-frame gap, 1000 after
    x[20:35, 1] = 0.0
    x[35:, 1, :2] = 1000.0
    x[:4, 2] = 0.0  # joint 2 starts missing: never extrapolated
    seq = PoseSequence(x, fps=30.0)
    for method in METHODS:
        out = smooth_poses(seq, method=method, max_gap=5).keypoints
        np.testing.assert_allclose(out[10:13, 0, 0], [10, 11, 12], atol=0.5)  # interpolated, then smoothed
        assert (out[10:13, 0, 2] > 0.3).all()
        np.testing.assert_array_equal(out[20:35, 1], x[20:35, 1])  # long gap untouched
        assert np.abs(out[:20, 1, :2]).max() < 1e-6 and np.abs(out[35:, 1, :2] - 1000).max() < 1e-3
        np.testing.assert_array_equal(out[:4, 2], 0.0)
    none = smooth_poses(seq, method="gaussian", max_gap=0).keypoints
    np.testing.assert_array_equal(none[10:13, 0], x[10:13, 0])


def test_fill_short_gaps_numbers():
    tr = np.array([[0.0], [9], [9], [6.0]])[:, :, None].repeat(3, 2)
    valid = np.array([[True], [False], [False], [True]])
    out, ok = fill_short_gaps(tr, valid, 2)
    np.testing.assert_allclose(out[:, 0, 0], [0, 2, 4, 6])
    assert ok.all()
    out, ok = fill_short_gaps(tr, valid, 1)
    np.testing.assert_array_equal(out, tr)


def test_hands_face_smoothed_and_errors():
    clean, seq = noisy_seq()
    rng = np.random.default_rng(2)
    hands = np.concatenate(
        [
            np.repeat(clean[:, None, :1], 2, 1).repeat(21, 2) + rng.normal(0, 2, (120, 2, 21, 2)),
            np.ones((120, 2, 21, 1)),
        ],
        -1,
    )
    seq = seq.replace(hands=hands)
    out = smooth_poses(seq, method="savgol")
    assert jitter(out.hands[..., :2].reshape(120, -1, 2)) < 0.5 * jitter(hands[..., :2].reshape(120, -1, 2))
    same = smooth_poses(seq, method="savgol", smooth_hands=False)
    np.testing.assert_array_equal(same.hands, seq.hands)
    with pytest.raises(ValueError, match="unknown smoothing method"):
        smooth_poses(seq, method="kalman")
