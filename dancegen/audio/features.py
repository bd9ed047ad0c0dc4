"""Per-video-frame music features for a music encoder trained from scratch (DAB spec §2.2 stand-in, §6.4 [A]).

DabFusion itself feeds frozen CLAP / Wav2CLIP embeddings plus a beat vector to its denoiser; these hand-made
features are the input of `ScratchMusicEncoder`, the offline alternative that needs no pretrained weights.

Design [A]:
- Everything is computed once per song at 22,050 Hz with a hop that gives several (>= 4) hops per video frame, then
  averaged into video-frame bins `[i/fps, (i+1)/fps)`. When `sr / fps` is a whole number of samples the hop divides
  it exactly (fps 10: hop 441, 5 hops per frame), so a clip cut at a frame boundary sees the same analysis frames as
  the whole song.
- No per-song normalisation: log-mel uses a fixed dB mapping, the onset envelope a fixed log1p scale, and the
  tempogram is a local autocorrelation normalised per analysis frame. So the features of a clip are (up to edge
  effects) the slice of the song's features, and training can slice windows out of features computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dancegen.audio.beats import beat_frames, beat_vector, short_clips_allowed
from dancegen.audio.song import Song, frame_count
from dancegen.errors import InputError

FEATURE_SR = 22050
N_FFT = 2048
MEL_FLOOR_DB = -80.0
"""Power floor of the log-mel (amin = 1e-8): silence maps to 0."""
MEL_RANGE_DB = 100.0
"""log-mel feature = (dB - MEL_FLOOR_DB) / MEL_RANGE_DB: -80 dB -> 0, +20 dB -> 1 (a loud mix peaks near 1)."""
ONSET_LOG_SCALE = 4.0
"""onset feature = log1p(onset strength in dB) / ONSET_LOG_SCALE: flux of a hard drum hit (~50 dB) -> ~1."""
ONSET_LAG_SAMPLES = 512
"""The onset flux compares spectra this many samples apart (librosa's default hop), whatever the analysis hop."""
FEATURE_NAMES = ("mel", "onset", "tempogram", "beat")


@dataclass
class MusicFeatures:
    """Per-video-frame features of one song (or clip).

    Attributes:
        values: `(F, D)` float32, one row per video frame.
        fps: video frame rate the rows follow.
        slices: feature name -> column slice of `values` ("mel", "onset", "tempogram", "beat").
    """

    values: np.ndarray
    fps: float
    slices: dict[str, slice] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """Feature width D."""
        return int(self.values.shape[1])

    def __getitem__(self, key: slice | str) -> MusicFeatures | np.ndarray:
        """`feats[a:b]` -> a `MusicFeatures` of rows a..b-1; `feats["mel"]` -> that block, `(F, d)`."""
        if isinstance(key, str):
            if key not in self.slices:
                raise KeyError(f"no feature {key!r}; have {', '.join(self.slices)}")
            return self.values[:, self.slices[key]]
        if not isinstance(key, slice):
            raise TypeError("index MusicFeatures with a slice of frames or a feature name")
        return MusicFeatures(self.values[key], self.fps, dict(self.slices))

    def window(self, start: int, n: int) -> np.ndarray:
        """Rows `start .. start + n - 1` as a `(n, D)` float32 array (a clip's features sliced out of its song's);
        rows past the end of the song are zeros (the padding `num_frames` uses).

        Raises:
            InputError: negative `start` or `n`.
        """
        if start < 0 or n < 0:
            raise InputError(f"music window needs start >= 0 and n >= 0, got start={start}, n={n}")
        out = np.zeros((n, self.dim), np.float32)
        rows = self.values[start:start + n]
        out[:len(rows)] = rows
        return out


def feature_hop(sr: int, fps: float, min_hops: int = 4) -> int:
    """Analysis hop in samples: >= `min_hops` hops per video frame.

    When `sr / fps` is a whole number of samples, the hop is its largest divisor giving at least `min_hops` hops
    (and at least 32 samples), so video-frame boundaries fall on hop boundaries; otherwise the largest power of two
    giving at least `min_hops` hops (32..512).
    """
    spf = sr / float(fps)
    if abs(spf - round(spf)) < 1e-9:
        spf_i = int(round(spf))
        for k in range(min_hops, 8 * min_hops + 1):
            if spf_i % k == 0 and spf_i // k >= 32:
                return spf_i // k
    return int(min(512, max(32, 2 ** math.floor(math.log2(max(spf / min_hops, 1.0))))))


def _bin_mean(x: np.ndarray, bins: np.ndarray, num_frames: int) -> np.ndarray:
    """Mean of the columns of `x (D, T)` per video-frame bin -> `(num_frames, D)`; empty bins are 0."""
    keep = (bins >= 0) & (bins < num_frames)
    b, xs = bins[keep], x[:, keep]
    counts = np.bincount(b, minlength=num_frames).astype(np.float64)
    out = np.zeros((num_frames, x.shape[0]), np.float64)
    np.add.at(out, b, xs.T)
    return out / np.maximum(counts, 1.0)[:, None]


def _tempogram_bands(env: np.ndarray, sr: int, hop: int, fps: float, bins: int, window_s: float) -> np.ndarray:
    """Local autocorrelation of the onset envelope sampled at lags of 1..`bins` video frames -> `(bins, T)`.

    librosa's tempogram normalises each analysis frame by its lag-0 value, so values lie in [0, 1]. Band k takes the
    maximum over lags within half a video frame of k frames (autocorrelation peaks are a hop or two wide and would
    fall between point samples). Lag 0 is skipped: it is always 1.
    """
    import librosa

    hops_per_frame = sr / (hop * float(fps))
    max_lag = int(math.ceil((bins + 0.5) * hops_per_frame))
    win = max(int(round(window_s * sr / hop)), max_lag + 1)
    tg = librosa.feature.tempogram(onset_envelope=env, sr=sr, hop_length=hop, win_length=win)
    out = np.zeros((bins, tg.shape[1]), np.float64)
    for k in range(1, bins + 1):
        lo = max(1, int(math.floor((k - 0.5) * hops_per_frame)))
        hi = max(lo + 1, int(math.ceil((k + 0.5) * hops_per_frame)))
        out[k - 1] = tg[lo:hi].max(axis=0)
    return np.clip(out, 0.0, 1.0)


def frame_features(samples: np.ndarray | Song, sr: int | None = None, fps: float = 10.0,
                   num_frames: int | None = None, n_mels: int = 32, tempogram_bins: int = 16, beats: bool = True,
                   start_bpm: float = 120.0, tempogram_window_s: float = 4.0) -> MusicFeatures:
    """Per-video-frame log-mel, onset, tempogram and beat features of a song.

    Columns (in this order; `slices` names them): `n_mels` log-mel bands (fixed dB map to ~[0, 1]), 1 onset
    strength (fixed log1p scale, ~[0, 1]), `tempogram_bins` tempogram bands (autocorrelation of the onset envelope
    at lags of 1..tempogram_bins video frames, in [0, 1]; fps 10 and 16 bins cover 37.5-600 BPM), and, with
    `beats`, 1 beat one-hot (`beat_vector(beat_frames(...))`, FACT tracking at the video fps).

    Args:
        samples: `(N,)` or `(N, C)` float samples, or a `Song` (then `sr` may be None).
        sr: sample rate of `samples` (resampled to 22,050 Hz for the spectral features).
        fps: video frame rate.
        num_frames: number of rows; default `frame_count(duration, fps)`. Extra rows are zeros; fewer crop.
        n_mels: mel bands.
        tempogram_bins: tempogram bands.
        beats: append the beat one-hot column.
        start_bpm: tempo prior for the beat tracker (`aist_start_bpm` for AIST++ music).
        tempogram_window_s: length of the local autocorrelation window in seconds.

    Returns:
        `MusicFeatures` with `values (F, n_mels + 1 + tempogram_bins [+ 1])` float32.

    Raises:
        InputError: bad sample array or missing `sr`.
    """
    import librosa

    from dancegen.io.audio import resample

    if isinstance(samples, Song):
        if sr is not None and int(sr) != samples.sr:
            raise InputError(f"sr={sr} given for a Song sampled at {samples.sr} Hz", samples.path or None)
        sr, samples = samples.sr, samples.samples
    if sr is None:
        raise InputError("frame_features needs the sample rate `sr` of the samples")
    y = np.asarray(samples, np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if y.ndim != 1 or y.size == 0:
        raise InputError(f"audio must be (N,) or (N, C) samples, got shape {np.shape(samples)}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    n_out = frame_count(y.size / float(sr), fps) if num_frames is None else int(num_frames)
    y22 = np.ascontiguousarray(resample(y, int(sr), FEATURE_SR), dtype=np.float32)

    hop = feature_hop(FEATURE_SR, fps)
    with short_clips_allowed():  # a clip under one FFT window (93 ms) is analysed inside the zero padding
        mel = librosa.feature.melspectrogram(y=y22, sr=FEATURE_SR, n_fft=N_FFT, hop_length=hop, n_mels=n_mels)
    mel_db = librosa.power_to_db(mel, ref=1.0, amin=10.0 ** (MEL_FLOOR_DB / 10.0), top_db=None)
    # float32 log10 of the floor lands a few 1e-6 dB either side of -80 depending on the CPU's libm;
    # clip so that silence is exactly 0 everywhere (the documented range is [0, ~1])
    mel_db = np.maximum(mel_db, np.float32(MEL_FLOOR_DB))
    lag = max(1, int(round(ONSET_LAG_SAMPLES / hop)))
    env = librosa.onset.onset_strength(S=mel_db, sr=FEATURE_SR, hop_length=hop, n_fft=N_FFT, lag=lag)
    tempo = _tempogram_bands(env, FEATURE_SR, hop, fps, tempogram_bins, tempogram_window_s)

    # analysis frame j is centred on sample j * hop; it belongs to video frame floor(j * hop * fps / sr)
    # (frames centred at or past the last sample describe only padding and are left out)
    t = np.arange(mel_db.shape[1])
    frame_of = np.floor(t * hop * float(fps) / FEATURE_SR + 1e-9).astype(np.int64)
    frame_of[t * hop >= y22.size] = -1
    blocks = {
        "mel": (mel_db - MEL_FLOOR_DB) / MEL_RANGE_DB,
        "onset": np.log1p(env)[None] / ONSET_LOG_SCALE,
        "tempogram": tempo,
    }
    cols, slices, start = [], {}, 0
    for name, block in blocks.items():
        cols.append(_bin_mean(block, frame_of, n_out))
        slices[name] = slice(start, start + block.shape[0])
        start += block.shape[0]
    if beats:
        cols.append(beat_vector(beat_frames(y, int(sr), fps, num_frames=n_out, start_bpm=start_bpm), n_out)[:, None])
        slices["beat"] = slice(start, start + 1)
    values = np.concatenate(cols, axis=1).astype(np.float32)
    return MusicFeatures(values, float(fps), slices)
