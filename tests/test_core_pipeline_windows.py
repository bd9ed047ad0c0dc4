"""Context windows for long videos: coverage, weights, equivalence with the plain call."""

from __future__ import annotations

import pytest
import torch

from dancegen.core.context_windows import context_windows, window_weights, windowed, windowed_unet_call


@pytest.mark.parametrize("num_frames,window,overlap", [(64, 16, 4), (20, 16, 4), (16, 16, 4), (5, 16, 4), (33, 16, 0),
                                                       (40, 8, 7), (17, 4, 2)])
def test_windows_cover_every_frame_with_full_length_windows(num_frames, window, overlap):
    wins = context_windows(num_frames, window, overlap)
    covered = torch.zeros(num_frames, dtype=torch.int64)
    for sl in wins:
        assert sl.stop - sl.start == min(window, num_frames)
        covered[sl] += 1
    assert (covered >= 1).all()
    assert wins[0].start == 0 and wins[-1].stop == num_frames
    for a, b in zip(wins, wins[1:], strict=False):
        assert a.start < b.start and a.stop - b.start >= overlap  # consecutive windows share >= overlap frames


def test_window_layout_examples():
    assert context_windows(64, 16, 4) == [slice(0, 16), slice(12, 28), slice(24, 40), slice(36, 52), slice(48, 64)]
    assert context_windows(40, 16, 0) == [slice(0, 16), slice(16, 32), slice(24, 40)]  # DYL: last window backwards
    with pytest.raises(ValueError, match="overlap"):
        context_windows(10, 4, 4)


@pytest.mark.parametrize("weighting", ["triangular", "linear", "flat"])
def test_weights_sum_to_one_per_frame(weighting):
    wins = context_windows(50, 16, 6)
    w = window_weights(wins, 50, weighting)
    assert torch.allclose(w.sum(0), torch.ones(50, dtype=w.dtype))
    assert (w >= 0).all()
    for k, sl in enumerate(wins):  # zero outside the window, positive inside
        inside = torch.zeros(50, dtype=torch.bool)
        inside[sl] = True
        assert (w[k][~inside] == 0).all() and (w[k][inside] > 0).all()


def test_linear_weighting_cross_fades_exactly_over_the_overlap():
    wins = context_windows(28, 16, 4)  # [0,16), [12,28)
    w = window_weights(wins, 28, "linear")
    assert torch.allclose(w[0, 12:16], torch.tensor([0.8, 0.6, 0.4, 0.2], dtype=w.dtype))
    assert (w[0, :12] == 1).all() and (w[1, 16:] == 1).all()


def test_one_window_equals_plain_call_and_frame_local_fn_is_unchanged():
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(2, 4, 37, 6, 6, generator=g)
    per_frame_scale = torch.randn(1, 4, 1, 1, 1, generator=g)

    def frame_local(z, sl):  # depends only on each frame's own latent (like a per-frame 2D UNet)
        return torch.tanh(z * per_frame_scale) + z.square()

    plain = frame_local(lat, slice(0, 37))
    one = windowed_unet_call(frame_local, lat, context_windows(37, 64, 4))
    assert torch.equal(one, plain)
    for weighting in ("triangular", "linear", "flat"):
        out = windowed_unet_call(frame_local, lat, context_windows(37, 8, 3), weighting)
        assert (out - plain).abs().max().item() < 1e-6


def test_windowed_wrapper_slices_per_frame_conditioning():
    seen = []

    def unet_fn(z, t, cond):
        seen.append((z.shape[2], cond.shape[0]))
        return z + cond.view(1, 1, -1, 1, 1) + t

    lat = torch.zeros(1, 2, 10, 3, 3)
    cond = torch.arange(10, dtype=torch.float32)
    fn = windowed(unet_fn, window=4, overlap=2, slice_cond=lambda c, sl: c[sl])
    out = fn(lat, torch.tensor(1.0), cond)
    assert all(a == b == 4 for a, b in seen) and len(seen) == 4
    assert torch.allclose(out[0, 0, :, 0, 0], cond + 1)


def test_windowed_call_mixes_only_inside_windows():
    """A clip-global function (mean over frames) is evaluated per window: frames far apart stop seeing each other."""
    lat = torch.zeros(1, 1, 32, 1, 1)
    lat[:, :, 0] = 32.0

    def clip_mean(z, sl):
        return z.mean(dim=2, keepdim=True).expand_as(z)

    out = windowed_unet_call(clip_mean, lat, context_windows(32, 8, 2))
    assert out[0, 0, 0].item() == pytest.approx(4.0) and out[0, 0, -1].item() == 0.0
