"""The frozen pretrained music branches of DabFusion (paper §3.2, spec §2.2, G3): CLAP (e_c) and Wav2CLIP (e_w).

What the training data, the `adapters` stage and inference share:
- `pretrained_branches`: which of "clap" / "wav2clip" a recipe's `music.encoder` uses.
- The window rule [A] (G1): the clip whose reference is frame s and whose N generated frames are s+1 .. s+N gets the
  audio [(s+1)/fps, (s+1+N)/fps) s of its song (frame 0 at t = 0), zero-padded past the song's end as
  `data.clip_music` zero-pads the features. `audio_window` cuts it; the embedding functions resample it (48 kHz for
  CLAP, 16 kHz for Wav2CLIP), so the song is read at its own rate.
- `FrozenMusicEncoders`: the frozen CLAP, Wav2CLIP and (for the Wav2CLIP adapter's target) CLIP image model of a
  recipe, each loaded on first use, so a run whose embeddings are all cached never loads one.
- The on-disk cache of training embeddings: ``<data.root>/.dancegen_cache/<branch>-<sha1 of the model ref>/<music>.npz``
  with one array per window, keyed by start and by the window's length and rate (`window_key`), so a recipe with
  another clip length or fps never reads a wrong window. The model ref is the recipe's string (an absolute path for
  local files): replacing the weights behind the same path needs the cache folder deleted.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from dancegen.errors import InputError, MissingWeightsError
from dancegen.methods.dance_any_beat import music as mu

BRANCHES = ("clap", "wav2clip")
CACHE_DIR = ".dancegen_cache"
WAV2CLIP_DEFAULT_REF = "weights:wav2clip"
"""Cache name of `music.wav2clip: null` (the file found in the weights folders)."""


def pretrained_branches(music) -> list[str]:
    """The pretrained branches ("clap", "wav2clip") of a `MusicConfig`, in the order of e = concat(e_c, e_w, e_b)."""
    parts = music.encoder.split("+")
    return [b for b in BRANCHES if b in parts]


def branch_ref(music, branch: str) -> str:
    """The model reference of a branch as the cache names it: the recipe's value, absolute when it is a local path."""
    if branch == "clap":
        ref = music.clap or mu.DEFAULT_CLAP
    elif branch == "wav2clip":
        ref = music.wav2clip or WAV2CLIP_DEFAULT_REF
    else:
        raise ValueError(f"unknown pretrained branch {branch!r} (known: {BRANCHES})")
    p = Path(ref).expanduser()
    return str(p.resolve()) if p.exists() else str(ref)


def audio_window(samples: np.ndarray, sr: int, start_frame: int, num_frames: int, fps: float) -> np.ndarray:
    """Audio of frames `start_frame .. start_frame + num_frames - 1`: samples in [start / fps, (start + n) / fps) s.

    Args:
        samples: `(T,)` mono song, frame 0 at t = 0.
        sr: its sample rate.
        start_frame: first frame of the window (s + 1 for the clip whose reference is frame s).
        num_frames: N.
        fps: the model's frame rate.

    Returns:
        `(round((start + n) / fps * sr) - round(start / fps * sr),)` float32, zeros past the end of the song.
    """
    a = int(round(start_frame / float(fps) * sr))
    b = int(round((start_frame + num_frames) / float(fps) * sr))
    out = np.zeros(max(b - a, 0), np.float32)
    seg = np.asarray(samples[a:b], np.float32)
    out[:seg.size] = seg
    return out


def window_key(start: int, num_frames: int, fps: float) -> str:
    """Cache key of the clip whose reference is frame `start` (its audio window also depends on N and fps)."""
    return f"s{int(start)}_n{int(num_frames)}_fps{float(fps):g}"


def cache_path(root: str | os.PathLike, branch: str, ref: str, music: str) -> Path:
    """``<root>/.dancegen_cache/<branch>-<sha1(ref)>/<music>.npz``."""
    digest = hashlib.sha1(ref.encode("utf-8")).hexdigest()
    return Path(root) / CACHE_DIR / f"{branch}-{digest}" / f"{music}.npz"


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """The cached windows of one song (empty when the file is missing or unreadable: it is then recomputed)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path) as z:
            return {k: np.asarray(z[k], np.float32) for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return {}


def write_cache(path: Path, entries: dict[str, np.ndarray]) -> bool:
    """Write one song's windows atomically; False when the folder is not writable (the run keeps them in memory)."""
    from dancegen.io.atomic import save_npz

    try:
        save_npz(path, **entries)
    except OSError:
        return False
    return True


class FrozenMusicEncoders:
    """The frozen backbones of a recipe's pretrained branches, each loaded once, on first use.

    Args:
        music: the recipe's `MusicConfig` (`clap`, `wav2clip`, `clip`, `embed_dim`).
        device: torch device of the backbones.
    """

    def __init__(self, music, device: str = "cpu"):
        self.music, self.device = music, device
        self.branches = pretrained_branches(music)
        self._clap = self._wav2clip = self._clip = None

    def clap(self) -> mu.ClapBackbone:
        if self._clap is None:
            self._clap = mu.load_clap(self.music.clap or mu.DEFAULT_CLAP, self.device)
        return self._clap

    def wav2clip(self):
        if self._wav2clip is None:
            from dancegen.metrics.backbones.wav2clip import load_wav2clip
            from dancegen.metrics.weights import resolve_weight

            try:
                path = resolve_weight("wav2clip", self.music.wav2clip).path
            except MissingWeightsError as e:
                raise MissingWeightsError(f"Wav2CLIP for the DabFusion music encoder: {e.message}; or pass "
                                          "`--set music.wav2clip=PATH`") from None
            self._wav2clip = load_wav2clip(path, self.device)
        return self._wav2clip

    def clip(self):
        """The CLIP image model (`music.clip`) whose frame embeddings are the Wav2CLIP adapter's target."""
        if self._clip is None:
            from dancegen.metrics.backbones.clip import ClipEmbedder

            self._clip = ClipEmbedder(self.music.clip, self.device)
        return self._clip

    def embed(self, branch: str, clip: np.ndarray, sr: int) -> np.ndarray:
        """Frozen, L2-normalised embedding `(music.embed_dim,)` float32 of one mono clip.

        Raises:
            InputError: the backbone's width is not `music.embed_dim`.
        """
        if branch == "clap":
            e = mu.clap_audio_embedding(clip, sr, self.clap())
        elif branch == "wav2clip":
            e = mu.wav2clip_embedding(clip, sr, self.wav2clip())
        else:
            raise ValueError(f"unknown pretrained branch {branch!r} (known: {BRANCHES})")
        return check_width(np.asarray(e, np.float32), self.music, branch)

    def window_embeddings(self, samples: np.ndarray, sr: int, starts: list[int], num_frames: int,
                          fps: float) -> dict[str, np.ndarray]:
        """`{branch: (len(starts), embed_dim)}` for the clips whose references are frames `starts` (window rule)."""
        out = {}
        for branch in self.branches:
            rows = [self.embed(branch, audio_window(samples, sr, s + 1, num_frames, fps), sr) for s in starts]
            out[branch] = np.stack(rows) if rows else np.zeros((0, self.music.embed_dim), np.float32)
        return out

    def caption_embeddings(self, texts: list[str]) -> np.ndarray:
        """CLAP text embeddings `(len(texts), D)` (the CLAP adapter's targets)."""
        return np.asarray(mu.clap_text_embedding(list(texts), self.clap()), np.float32)

    def image_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """CLIP image embeddings `(F, D)` (unit vectors) of `(F, H, W, 3)` uint8 frames."""
        return self.clip().image_embeds(frames).numpy().astype(np.float32)


def check_width(e: np.ndarray, music, branch: str) -> np.ndarray:
    """`e` when its width is `music.embed_dim`, else a clear InputError (the adapters' input width is fixed)."""
    if e.shape[-1] != music.embed_dim:
        raise InputError(f"music.embed_dim is {music.embed_dim} but the {branch} model "
                         f"{branch_ref(music, branch)!r} gives {e.shape[-1]}-d embeddings; set "
                         f"music.embed_dim={e.shape[-1]} (both pretrained branches must have that width)")
    return e
