"""A song as music-to-dance methods consume it: mono float32 samples at one rate, checked once at load time.

Rates (DAB spec §1, gap G1 [A]): songs are held at 22,050 Hz (librosa's default, what AV-Align and our features
use); each consumer resamples from there (48 kHz CLAP, 16 kHz Wav2CLIP, `fps * 512` Hz beat tracking).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io.audio import SOUNDFILE_SUFFIXES, is_silent, read_audio

DEFAULT_SR = 22050


@dataclass
class Song:
    """Mono audio of one song.

    Attributes:
        samples: `(N,)` float32 in [-1, 1].
        sr: sample rate in Hz.
        path: the file it was read from ("" when built in memory).
    """

    samples: np.ndarray
    sr: int
    path: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sr)


def frame_count(duration_s: float, fps: float) -> int:
    """Number of whole video frames `[i/fps, (i+1)/fps)` that `duration_s` seconds of audio cover (floor).

    A tolerance of 1e-6 frames absorbs float error, so 4.0 s at 10 fps is 40 frames even when the duration was
    computed as `samples / sr` with rounding.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return max(int(math.floor(duration_s * fps + 1e-6)), 0)


def _file_seconds(path: Path) -> float | None:
    """Duration from the file header (no decoding) where soundfile can read it, else None."""
    if path.suffix.lower() not in SOUNDFILE_SUFFIXES:
        return None
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, ValueError):
        return None  # read_audio reports the decode error
    return info.frames / float(info.samplerate) if info.samplerate else None


def load_song(path: str | os.PathLike, sr: int = DEFAULT_SR, max_seconds: float | None = None,
              min_seconds: float = 0.5) -> Song:
    """Read a song as mono float32 at `sr` Hz (stereo is averaged, other rates resampled) and check it is usable.

    Args:
        path: wav/flac/ogg/aiff, or mp3/m4a/video files through PyAV (`dancegen.io.audio.read_audio`).
        sr: target sample rate in Hz.
        max_seconds: reject longer files (checked from the header before decoding where the format allows).
        min_seconds: reject shorter files.

    Returns:
        A `Song`.

    Raises:
        InputError: missing or undecodable file, silent audio (RMS below -60 dBFS), too short, or too long; the
            message names the file.
    """
    path = Path(path)
    if max_seconds is not None and path.is_file():
        header = _file_seconds(path)
        if header is not None and header > max_seconds:
            raise InputError(f"too long: {header:.2f} s, at most {max_seconds:g} s allowed", path)
    samples, rate = read_audio(path, sr=sr, mono=True)
    return checked_song(samples, rate, path, min_seconds, max_seconds)


def song_from_track(track: np.ndarray, track_sr: int, path: str | os.PathLike, sr: int = DEFAULT_SR,
                    min_seconds: float = 0.5, max_seconds: float | None = None) -> Song:
    """`load_song` for audio already decoded by `read_audio(path, mono=False)` (e.g. kept to be muxed into a
    video): the same mono mix, resampling and checks, without decoding the file again."""
    from dancegen.io.audio import resample

    mono = track.mean(axis=1) if track.ndim == 2 else track
    samples = np.ascontiguousarray(resample(mono, int(track_sr), int(sr)), dtype=np.float32)
    return checked_song(samples, int(sr), Path(path), min_seconds, max_seconds)


def checked_song(samples: np.ndarray, rate: int, path: Path, min_seconds: float = 0.5,
                 max_seconds: float | None = None) -> Song:
    """A `Song` of mono samples, refused (InputError naming `path`) when too short, too long or silent."""
    song = Song(samples, rate, os.fspath(path))
    if song.duration < min_seconds:
        raise InputError(f"too short: {song.duration:.2f} s, need at least {min_seconds:g} s", path)
    if max_seconds is not None and song.duration > max_seconds:
        raise InputError(f"too long: {song.duration:.2f} s, at most {max_seconds:g} s allowed", path)
    if is_silent(samples):
        raise InputError("audio is silent (RMS below -60 dBFS)", path)
    return song
