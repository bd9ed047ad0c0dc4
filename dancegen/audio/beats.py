"""Music beats at the video frame rate (FACT's beat tracking, DAB spec §2.2 e_b and §4) and per-frame beat vectors.

FACT (google-research/mint, tools/preprocessing.py) [F] tracks beats on an onset envelope whose frame rate equals the
video frame rate: the audio is resampled to `fps * 512` Hz and analysed with hop 512, so one onset frame is one video
frame and `librosa.beat.beat_track` returns video frame indices directly. Its tempo prior comes from the AIST++ music
name (`aist_start_bpm`).
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager

import numpy as np

from dancegen.errors import InputError

BEAT_HOP = 512
"""FACT's hop: the onset envelope runs at `fps * BEAT_HOP / BEAT_HOP = fps` frames per second."""


@contextmanager
def short_clips_allowed():
    """Hide librosa's "n_fft=... is too large for input signal" warning inside the block, and only that one.

    A clip shorter than one FFT window (2048 samples) is analysed inside librosa's centred zero padding; the result is
    what that padding defines, and the warning on every call would only bury the ones that matter.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal", category=UserWarning)
        yield


_AIST_GENRES_80 = ("BR", "PO", "LO", "MH", "LH", "WA", "KR", "JS", "JB")
_AIST_MUSIC = re.compile(r"m([A-Z]{2})([0-9])")


def beat_frames(samples, sr: int, fps: float, num_frames: int | None = None, start_bpm: float = 120.0,
                tightness: float = 100.0) -> np.ndarray:
    """Music beat frames at the video fps, FACT's way: librosa beat tracking with one onset frame per video frame.

    The audio (mono) is resampled to `fps * 512` Hz, its onset envelope computed with hop 512, and
    `librosa.beat.beat_track(onset_envelope, sr=fps*512, hop_length=512, start_bpm, tightness)` gives beat
    indices that are video frame indices. (librosa import costs a few seconds, and its first call JIT-compiles.)

    Args:
        samples: `(N,)` or `(N, C)` float samples (channels are averaged).
        sr: sample rate of `samples` in Hz.
        fps: video frame rate (need not be an integer).
        num_frames: drop beats at or beyond this frame count.
        start_bpm: tempo prior in BPM (FACT reads it from the AIST++ music name: `aist_start_bpm`).
        tightness: beat_track tightness (FACT: 100).

    Returns:
        Sorted int64 frame indices.

    Raises:
        InputError: the samples are not `(N,)` / `(N, C)` or are empty.
    """
    import librosa

    y = np.asarray(samples, np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"audio must be (N,) or (N, C) samples, got shape {np.shape(samples)}")
    target = int(round(fps * BEAT_HOP))
    if sr != target:
        y = librosa.resample(y, orig_sr=sr, target_sr=target)
    with short_clips_allowed():
        env = librosa.onset.onset_strength(y=y, sr=target, hop_length=BEAT_HOP)
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=target, hop_length=BEAT_HOP, start_bpm=start_bpm,
                                       tightness=tightness)
    beats = np.asarray(beats, np.int64)
    return beats[beats < num_frames] if num_frames is not None else beats


def beat_vector(frames, num_frames: int, sigma: float = 0.0) -> np.ndarray:
    """Per-frame beat indicator e_b (DAB spec §2.2, gap G2 [A]): 1 at beat frames, 0 elsewhere.

    With `sigma > 0` each beat becomes an unnormalised Gaussian bump `exp(-(t - b)^2 / (2 sigma^2))` and overlapping
    bumps combine by maximum, so every beat frame still reads exactly 1.0 and values stay in [0, 1].

    Args:
        frames: beat frame indices; those outside `[0, num_frames)` are ignored.
        num_frames: length of the vector.
        sigma: Gaussian width in frames (0: one-hot).

    Returns:
        `(num_frames,)` float32.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    f = np.asarray(frames, np.int64).ravel()
    f = np.unique(f[(f >= 0) & (f < num_frames)])
    out = np.zeros(num_frames, np.float32)
    if f.size == 0:
        return out
    if sigma == 0:
        out[f] = 1.0
        return out
    t = np.arange(num_frames, dtype=np.float64)
    d2 = np.min((t[:, None] - f[None, :].astype(np.float64)) ** 2, axis=1)  # nearest beat: the max of the bumps
    return np.exp(-d2 / (2.0 * sigma * sigma)).astype(np.float32)


def aist_start_bpm(music_name: str) -> float | None:
    """FACT's tempo prior from an AIST++ music id [F]: `mXX0..5` -> 80..130 BPM (step 10), `mHO0..5` -> 110..135 (step 5).

    The id may sit inside a longer AIST++ name (`gBR_sBM_cAll_d04_mBR0_ch01`). XX is one of the ten AIST++ genres
    (BR, PO, LO, MH, LH, HO, WA, KR, JS, JB).

    Returns:
        The BPM as a float, or None for a name without a known AIST++ music id.
    """
    for genre, digit in _AIST_MUSIC.findall(str(music_name)):
        k = int(digit)
        if k > 5:
            continue
        if genre == "HO":
            return float(110 + 5 * k)
        if genre in _AIST_GENRES_80:
            return float(80 + 10 * k)
    return None
