"""Music-motion rhythm metrics: Beat Alignment Score (Bailando/FACT lineage, prior-art §1d), Dance Any Beat's 2D-MM
Align (DAB spec §4, paper Eq. 7) and AV-Align (DAB §4, TempoTokens' code).

Beats are frame indices at the video fps (BAS, 2D-MM Align: distances and sigma in frames) or times in seconds
(AV-Align).
"""

from __future__ import annotations

import numpy as np

from dancegen.audio.beats import beat_frames
from dancegen.errors import InputError

DIRECTIONS = ("music", "motion")


def beat_alignment_score(motion_beats, music_beats, sigma: float = 3.0, direction: str = "music") -> float:
    """Beat alignment: mean of `exp(-d^2 / (2 sigma^2))`, d = distance (frames) to the nearest beat of the other set.

    direction "music" (Bailando's `ba_score`, the default BAS): the mean runs over music beats, each matched to the
    nearest motion beat. direction "motion" (FACT's code and DAB's 2D-MM Align, Eq. 7): over motion (kinematic)
    beats, each matched to the nearest music beat. Bailando/FACT use sigma = 3 frames at 60 fps.

    Returns 0.0 when the set averaged over, or the set matched against, is empty.

    Args:
        motion_beats: motion beat frame indices.
        music_beats: music beat frame indices.
        sigma: Gaussian width in frames.
        direction: "music" or "motion".
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    mo = np.asarray(motion_beats, np.float64).ravel()
    mu = np.asarray(music_beats, np.float64).ravel()
    src, ref = (mu, mo) if direction == "music" else (mo, mu)
    if src.size == 0 or ref.size == 0:
        return 0.0
    d2 = np.min((src[:, None] - ref[None, :]) ** 2, axis=1)
    return float(np.mean(np.exp(-d2 / (2.0 * sigma * sigma))))


def _keypoints(kps) -> tuple[np.ndarray, np.ndarray]:
    """`(F, J, 2|3)` -> xy `(F, J, 2)` float64 and visibility weights `(F, J)` (conf > 0, or all ones)."""
    if hasattr(kps, "keypoints"):  # PoseSequence
        kps = kps.keypoints
    k = np.asarray(kps, np.float64)
    if k.ndim != 3 or k.shape[-1] not in (2, 3):
        raise InputError(f"keypoints must be (F, J, 2) or (F, J, 3), got shape {k.shape}")
    vis = (k[..., 2] > 0) if k.shape[-1] == 3 else np.ones(k.shape[:2], bool)
    return k[..., :2], vis


def kinematic_envelope(kps, reduce: str = "mean", size=None) -> np.ndarray:
    """Per-frame joint speed `v(t)` from keypoints; `v(0) = 0`.

    Args:
        kps: `(F, J, 2|3)` keypoints (pixels; confidence 0 = missing) or a PoseSequence.
        reduce: "mean" (Bailando: mean joint speed) or "sum" (FACT/DAB: sum of joint displacements).
        size: optional `(width, height)`; coordinates are divided by it first (DAB: normalised by image size).

    Returns:
        `(F,)` float64. A joint counts in frame t only when visible in frames t-1 and t.
    """
    xy, vis = _keypoints(kps)
    if size is not None:
        xy = xy / np.asarray(size, np.float64)
    both = vis[1:] & vis[:-1]
    step = np.linalg.norm(xy[1:] - xy[:-1], axis=-1) * both
    if reduce == "sum":
        v = step.sum(axis=1)
    elif reduce == "mean":
        v = step.sum(axis=1) / np.maximum(both.sum(axis=1), 1)
    else:
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    return np.concatenate([[0.0], v])


def motion_beats_from_keypoints(kps, fps: float, method: str = "bailando", smooth_sigma: float | None = None,
                                order: int | None = None, size=None) -> np.ndarray:
    """Kinematic beats: local minima of the joint-speed envelope.

    method "bailando" (BAS): mean joint speed, Gaussian-smoothed (`scipy.ndimage.gaussian_filter1d`, sigma 5
    frames at 60 fps, scaled to `5 * fps / 60` by default), minima by `argrelextrema(np.less)` (order 1).
    method "fact" (DAB's 2D-MM Align, spec §4 [A]): summed joint displacement on image-normalised coordinates,
    no smoothing, minima by `argrelextrema(np.less, order=max(1, round(10 * fps / 60)))`.

    Args:
        kps: `(F, J, 2|3)` keypoints (pixels, confidence 0 = missing) or a PoseSequence.
        fps: video frame rate.
        method: "bailando" or "fact".
        smooth_sigma: override the smoothing sigma in frames (0 disables).
        order: override the argrelextrema order.
        size: `(width, height)` for the "fact" normalisation (taken from a PoseSequence when omitted).

    Returns:
        Sorted int64 frame indices.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import argrelextrema

    if method == "bailando":
        v = kinematic_envelope(kps, "mean")[1:]  # Bailando's speed array starts at the pair (0, 1)
        s = 5.0 * fps / 60.0 if smooth_sigma is None else smooth_sigma
        if s > 0:
            v = gaussian_filter1d(v, s)
        o = order or 1
    elif method == "fact":
        if size is None and hasattr(kps, "width"):
            size = (kps.width, kps.height)
        v = kinematic_envelope(kps, "sum", size=size)
        if smooth_sigma:
            v = gaussian_filter1d(v, smooth_sigma)
        o = order or max(1, int(round(10 * fps / 60)))
    else:
        raise ValueError(f"method must be 'bailando' or 'fact', got {method!r}")
    return argrelextrema(v, np.less, order=o)[0].astype(np.int64)


def music_beats(audio, sr: int, fps: float, start_bpm: float = 120.0, tightness: float = 100.0,
                num_frames: int | None = None) -> np.ndarray:
    """Music beat frames at the video fps (FACT settings); an alias of `dancegen.audio.beats.beat_frames`.

    Args:
        audio: `(N,)` or `(N, C)` float samples.
        sr: sample rate of `audio`.
        fps: video frame rate (need not be an integer).
        start_bpm: tempo prior (FACT reads it from the AIST++ music name).
        tightness: beat_track tightness (FACT: 100).
        num_frames: drop beats at or beyond this frame count.

    Returns:
        Sorted int64 frame indices.
    """
    return beat_frames(audio, sr, fps, num_frames=num_frames, start_bpm=start_bpm, tightness=tightness)


def mm_align_2d(kps, music_beat_frames, fps: float, sigma: float = 3.0, size=None) -> float:
    """Dance Any Beat's 2D-MM Align (Eq. 7): mean over kinematic beats of `exp(-min_j |f_x - f_y_j|^2 / (2 sigma^2))`.

    Protocol (DAB spec §4 [A]): kinematic beats from 2D keypoints by `motion_beats_from_keypoints(method="fact")`
    (image-normalised, summed joint displacement, `argrelextrema` order `round(10 fps / 60)`), music beats by
    `music_beats` (FACT settings), distances in frames, sigma = 3; 0 without kinematic beats.

    Args:
        kps: `(F, J, 2|3)` keypoints in pixels, or a PoseSequence.
        music_beat_frames: music beat frame indices (`music_beats(...)`).
        fps: video frame rate.
        sigma: width in frames.
        size: `(width, height)` of the video (taken from a PoseSequence when omitted; without it coordinates are
            used as given).
    """
    kin = motion_beats_from_keypoints(kps, fps, method="fact", size=size)
    return beat_alignment_score(kin, music_beat_frames, sigma=sigma, direction="motion")


def flow_magnitude_curve(video, method: str = "farneback") -> np.ndarray:
    """AV-Align's video curve: mean optical-flow magnitude per frame, `(F,)`, the first value repeated.

    `m[0] = m[1] = |flow(0, 1)|`, `m[t] = |flow(t-1, t)|`, flow by OpenCV Farneback on grayscale frames with
    `(0.5, 3, 15, 3, 5, 1.2, 0)` (TempoTokens' `compute_of`).
    """
    from dancegen.flow.estimators import estimate_flow

    v = np.asarray(video)
    if v.ndim != 4 or v.shape[0] < 2:
        raise InputError(f"video must be (F, H, W, 3) with F >= 2, got shape {v.shape}")
    flow = estimate_flow(v, method=method, direction="forward")
    mag = np.sqrt((flow.astype(np.float64) ** 2).sum(axis=1)).mean(axis=(1, 2))
    return np.concatenate([mag[:1], mag])


def local_maxima_times(curve, fps: float) -> np.ndarray:
    """Strict interior local maxima `c[i-1] < c[i] > c[i+1]` of a per-frame curve, as times `i / fps` (seconds)."""
    c = np.asarray(curve, np.float64)
    if c.size < 3:
        return np.zeros(0)
    idx = np.nonzero((c[1:-1] > c[:-2]) & (c[1:-1] > c[2:]))[0] + 1
    return idx / float(fps)


def audio_onset_times(audio, sr: int) -> np.ndarray:
    """AV-Align's audio peaks: librosa at 22,050 Hz, `onset_strength`, `onset_detect`, `frames_to_time` (seconds)."""
    import librosa

    y = np.asarray(audio, np.float32)
    if y.ndim == 2:
        y = y.mean(axis=1)
    if sr != 22050:
        y = librosa.resample(y, orig_sr=sr, target_sr=22050)
    env = librosa.onset.onset_strength(y=y, sr=22050)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=22050)
    return librosa.frames_to_time(frames, sr=22050)


def av_align_iou(audio_peaks, video_peaks, fps: float) -> float:
    """AV-Align's IoU: an audio peak a counts once if some video peak v has `v - 1/fps < a < v + 1/fps` (strict);
    score `I / (|A| + |V| - I)`; 0 when both sets are empty."""
    a = np.asarray(audio_peaks, np.float64).ravel()
    v = np.asarray(video_peaks, np.float64).ravel()
    if a.size + v.size == 0:
        return 0.0
    w = 1.0 / fps
    hit = ((v[None, :] - w < a[:, None]) & (a[:, None] < v[None, :] + w)).any(axis=1) if v.size else np.zeros(0)
    inter = int(np.sum(hit))
    return inter / (a.size + v.size - inter)


def av_align(video, audio, sr: int, fps: float, audio_peaks=None, video_peaks=None) -> float:
    """AV-Align (Yariv et al., TempoTokens code; DAB §4): IoU of audio onsets and optical-flow peaks within one frame.

    Protocol: `audio_onset_times` (librosa 22,050 Hz onsets) vs `local_maxima_times(flow_magnitude_curve(video))`
    (Farneback), matched by `av_align_iou`.

    Args:
        video: `(F, H, W, 3)` RGB uint8.
        audio: `(N,)` or `(N, C)` samples of the clip's audio.
        sr: audio sample rate.
        fps: video frame rate.
        audio_peaks: precomputed audio peak times (seconds), skips the audio analysis.
        video_peaks: precomputed video peak times (seconds), skips the flow.
    """
    if audio_peaks is None:
        audio_peaks = audio_onset_times(audio, sr)
    if video_peaks is None:
        video_peaks = local_maxima_times(flow_magnitude_curve(video), fps)
    return av_align_iou(audio_peaks, video_peaks, fps)
