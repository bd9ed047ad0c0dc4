"""BAS, 2D-MM Align and AV-Align on hand-made beats and a synthetic dancer that hits (or misses) a click track."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.metrics import rhythm as rh


def _bailando_ba_score(music_beats, motion_beats):
    """Bailando's `ba_score`, literally (a loop over music beats)."""
    ba = 0
    for bb in music_beats:
        ba += np.exp(-np.min((motion_beats - bb) ** 2) / 2 / 9)
    return ba / len(music_beats)


def test_bas_hand_values_both_directions():
    motion, music = np.array([0, 5]), np.array([0, 20])
    assert rh.beat_alignment_score(motion, music) == pytest.approx((1 + np.exp(-225 / 18)) / 2, abs=1e-15)
    assert rh.beat_alignment_score(motion, music, direction="motion") == pytest.approx((1 + np.exp(-25 / 18)) / 2,
                                                                                       abs=1e-15)
    assert rh.beat_alignment_score([3, 13], [0, 10], sigma=3, direction="motion") == pytest.approx(np.exp(-0.5))
    assert rh.beat_alignment_score([10, 20], [10, 20]) == 1.0
    assert rh.beat_alignment_score([], [1, 2]) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        mo, mu = np.sort(rng.integers(0, 300, 12)), np.sort(rng.integers(0, 300, 9))
        assert rh.beat_alignment_score(mo, mu) == pytest.approx(_bailando_ba_score(mu, mo), abs=1e-14)


def test_kinematic_envelope_and_missing_joints():
    kps = np.zeros((3, 2, 3))
    kps[..., 2] = 1
    kps[1, 0, :2] = [3, 4]  # joint 0 moves 5 px, then back
    kps[2, 1, 2] = 0  # joint 1 missing in frame 2
    np.testing.assert_allclose(rh.kinematic_envelope(kps, "sum"), [0, 5, 5])
    np.testing.assert_allclose(rh.kinematic_envelope(kps, "mean"), [0, 2.5, 5])
    np.testing.assert_allclose(rh.kinematic_envelope(kps, "sum", size=(10, 10)), [0, 0.5, 0.5])


FPS, BPM, N = 30.0, 120.0, 180  # a beat every 15 frames


def _dancer(phase_frames=0.0, jitter=0.0, seed=0):
    """Joints swing back and forth, turning around (speed 0) every beat shifted by `phase_frames`."""
    rng = np.random.default_rng(seed)
    t = np.arange(N, dtype=np.float64)
    period = FPS * 60 / BPM
    base = np.stack([200 + 40 * np.cos(np.pi * (t - phase_frames) / period), 300 + 0 * t], -1)
    offs = rng.normal(0, 20, (1, 14, 2))
    kps = base[:, None, :] + offs + rng.normal(0, jitter, (N, 14, 2))
    return np.concatenate([kps, np.ones((N, 14, 1))], -1)


def _click_track(sr=22050):
    librosa = pytest.importorskip("librosa")
    times = np.arange(0, N / FPS, 60 / BPM)
    return librosa.clicks(times=times, sr=sr, length=int(N / FPS * sr)), sr, np.rint(times * FPS).astype(int)


@pytest.fixture(scope="module")
def click():
    return _click_track()


def test_music_beats_recover_click_track(click):
    audio, sr, truth = click
    beats = rh.music_beats(audio, sr, FPS, num_frames=N)
    assert len(beats) >= len(truth) - 3
    d = np.abs(beats[:, None] - truth[None, :]).min(axis=1)
    assert np.all(d <= 1)  # every detected beat is within one frame of a click


def test_on_beat_dancer_beats_off_beat_dancer(click):
    _, _, truth = click
    on, off = _dancer(0.0, jitter=0.3), _dancer(7.5, jitter=0.3)
    bas_on = rh.beat_alignment_score(rh.motion_beats_from_keypoints(on, FPS), truth)
    bas_off = rh.beat_alignment_score(rh.motion_beats_from_keypoints(off, FPS), truth)
    assert bas_on > 0.8 and bas_off < 0.15  # 0.8: the click at frame 0 has no minimum before it
    mm_on = rh.mm_align_2d(on, truth, FPS, size=(512, 512))
    mm_off = rh.mm_align_2d(off, truth, FPS, size=(512, 512))
    assert mm_on > 0.8 and mm_off < 0.15


def test_end_to_end_with_librosa_beats(click):
    audio, sr, _ = click
    beats = rh.music_beats(audio, sr, FPS, num_frames=N)
    on, off = _dancer(0.0), _dancer(7.5)
    assert rh.mm_align_2d(on, beats, FPS) > rh.mm_align_2d(off, beats, FPS) + 0.5


def test_av_align_iou_hand_values():
    fps = 10.0
    video = [1.0, 2.0, 3.0]
    # 1.05 matches 1.0; 2.1 is exactly v + 1/fps (strict: no match); 3.0 matches; 5.0 matches nothing
    audio = [1.05, 2.1, 3.0, 5.0]
    inter = 2
    assert rh.av_align_iou(audio, video, fps) == pytest.approx(inter / (4 + 3 - inter))
    assert rh.av_align_iou([], [], fps) == 0.0
    assert rh.av_align_iou([1.0], [], fps) == 0.0


def test_local_maxima_and_flow_curve():
    np.testing.assert_allclose(rh.local_maxima_times([0, 2, 1, 1, 3, 3, 0, 5], fps=2.0), [0.5])
    yy, xx = np.mgrid[0:64, 0:64]
    frames = []
    x = 0.0
    for t in range(6):
        x += 4.0 if t == 3 else 1.0  # a jerk into frame 3
        img = 127 + 100 * np.sin((xx + x) / 6.0) * np.cos(yy / 9.0)
        frames.append(np.repeat(img[..., None], 3, -1))
    v = np.clip(frames, 0, 255).astype(np.uint8)
    curve = rh.flow_magnitude_curve(v)
    assert curve.shape == (6,) and curve[0] == curve[1]
    assert np.argmax(curve) == 3
    np.testing.assert_allclose(rh.local_maxima_times(curve, fps=10.0), [0.3])
    assert rh.av_align(v, None, 22050, 10.0, audio_peaks=[0.31]) == pytest.approx(1.0)
