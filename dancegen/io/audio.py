"""Audio read/write: float32 samples in [-1, 1] with their sample rate.

wav/flac/ogg are read with soundfile; anything else (mp3, m4a, the audio track of a video) through PyAV.
Resampling uses a polyphase filter (scipy.signal.resample_poly), which needs no numba warm-up.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io.atomic import atomic_path

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


def resample(samples: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample `(N,)` or `(N, C)` audio from `sr_from` to `sr_to` Hz."""
    if sr_from == sr_to:
        return samples
    from scipy.signal import resample_poly

    frac = Fraction(int(sr_to), int(sr_from)).limit_denominator(10_000)
    return resample_poly(samples, frac.numerator, frac.denominator, axis=0).astype(np.float32)


def read_audio(path: str | os.PathLike, sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read an audio file (or a video's audio track).

    Args:
        path: wav/flac/ogg/aiff via soundfile; mp3/m4a/aac/mp4/... via PyAV.
        sr: Resample to this rate; None keeps the file's rate.
        mono: Average channels to `(N,)`; otherwise `(N, C)`.

    Returns:
        `(samples float32, sample_rate)`.

    Raises:
        InputError: missing, undecodable, or empty file (no samples).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not an audio file" if path.is_dir() else "audio file not found", path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        try:
            data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError, ValueError) as e:
            raise InputError(f"cannot decode audio ({e})", path) from None
    else:
        from dancegen.io.video import _read_audio_stream

        try:
            data, file_sr = _read_audio_stream(path)
        except Exception as e:  # PyAV raises many error types for foreign files
            raise InputError(f"cannot decode audio ({e.__class__.__name__})", path) from None
        if data is None:
            raise InputError("file has no audio stream", path)
    if data.shape[0] == 0:
        raise InputError("audio file holds no samples", path)
    if mono:
        data = data.mean(axis=1)
    if sr is not None:
        data = resample(data, int(file_sr), int(sr))
        file_sr = sr
    return np.ascontiguousarray(data, dtype=np.float32), int(file_sr)


def write_audio(path: str | os.PathLike, samples: np.ndarray, sr: int) -> Path:
    """Write `(N,)` or `(N, C)` float samples as 16-bit PCM (wav/flac by suffix), atomically."""
    import soundfile as sf

    path = Path(path)
    samples = np.asarray(samples, dtype=np.float32)
    fmt = {".flac": "FLAC"}.get(path.suffix.lower(), "WAV")
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), int(sr), subtype="PCM_16", format=fmt)
    return path


def is_silent(samples: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the RMS level is below `threshold_db` dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return rms <= 10 ** (threshold_db / 20)
