"""AIST++-layout data for Dance Any Beat (spec §3, §6.1): videos split by music, resampled to the model's fps.

Layout (AIST++, also what `dancegen synth --layout aist` writes): ``videos/<name>.mp4`` with names
``g{GENRE}_s{BM|FM}_c{01..09}_d{NN}_m{GENRE}{0..5}_ch{NN}``, ``wavs/<music>.wav``, optional ``ignore_list.txt``.
The split is by music [P]: the ten `data.test_music` tracks are the test set, every other track trains.

- Frames: decoded once per video, resampled to `fps` (nearest source frame to each time i/fps), centre-cropped to a
  square and resized (INTER_AREA) to `resolution` [A, G10]; kept in memory as uint8.
- Music: `dancegen.audio.features.frame_features` of the whole track at `fps`, computed once per track and sliced
  per clip, so a clip's features are exactly those of the same frames of the song.
- Pretrained music branches (`music.encoder` clap / wav2clip): the frozen embedding of each clip's audio window
  (`pretrained.audio_window`: [(s+1)/fps, (s+1+N)/fps) s of the wav at its own rate), computed once per
  (music, start), kept in memory and in the on-disk cache `<data.root>/.dancegen_cache/` (`pretrained.cache_path`),
  so a second run reads it instead of running the backbones.

Datasets (items are dicts of tensors; images in [0, 1], the LFAE's convention):
- `FramePairs`: stage 1, two frames of one video (x_ref, x_dri), drawn with a per-index seed.
- `MusicClips`: stage 2 and evaluation, windows of N + 1 frames: the reference x0 = frame s, the N driving frames
  s+1 .. s+N, and the music of those N frames (features (N, D), beats (N,), and the frozen `clap` / `wav2clip`
  embeddings (embed_dim,) when the recipe uses them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dancegen.errors import InputError

AIST_NAME = re.compile(r"^(?P<genre>g[A-Z]{2})_(?P<situation>s[A-Z]{2})_(?P<camera>c\d{2})_(?P<dancer>d\d{2})_"
                       r"(?P<music>m[A-Z]{2}\d)_(?P<choreo>ch\d{2})$")
GENRES = {"gBR": "Break", "gPO": "Pop", "gLO": "Lock", "gMH": "Middle Hip-hop", "gLH": "LA-style Hip-hop",
          "gHO": "House", "gWA": "Waack", "gKR": "Krump", "gJS": "Street Jazz", "gJB": "Ballet Jazz"}


@dataclass
class AistVideo:
    name: str
    path: Path
    genre: str
    camera: str
    music: str


def parse_name(name: str) -> dict | None:
    """The fields of an AIST++ video name (None when it does not follow the naming)."""
    m = AIST_NAME.match(name)
    return m.groupdict() if m else None


def list_aist_videos(root: str | os.PathLike, split: str = "train", test_music: list[str] | None = None,
                     cameras: list[str] | None = None, genres: list[str] | None = None) -> list[AistVideo]:
    """The videos of one split: "train" (music not in `test_music`), "test" (music in it) or "all".

    Raises:
        InputError: no videos/ folder, or no video left after the filters.
    """
    root = Path(root)
    vdir = root / "videos"
    if not vdir.is_dir():
        raise InputError("not an AIST++-layout folder (no videos/); render one with `dancegen synth --layout aist` "
                         "or point data.root at AIST++", root)
    ignore = set()
    if (root / "ignore_list.txt").is_file():
        ignore = {ln.strip() for ln in (root / "ignore_list.txt").read_text().splitlines() if ln.strip()}
    test = set(test_music or [])
    cams = None if not cameras or "all" in cameras else {c.lower() for c in cameras}
    out = []
    for p in sorted(vdir.glob("*.mp4")):
        f = parse_name(p.stem)
        if f is None or p.stem.replace(f["camera"], "cAll") in ignore or p.stem in ignore:
            continue
        in_test = f["music"] in test
        if (split == "train" and in_test) or (split == "test" and not in_test):
            continue
        if cams is not None and f["camera"] not in cams:
            continue
        if genres and f["genre"] not in genres:
            continue
        out.append(AistVideo(p.stem, p, f["genre"], f["camera"], f["music"]))
    if not out:
        raise InputError(f"no {split} videos (test music {sorted(test)}, cameras {cameras}, genres {genres})", root)
    return out


def center_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of an `(H, W, 3)` frame, resized to `size` with INTER_AREA (INTER_CUBIC when enlarging)."""
    import cv2

    h, w = frame.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = frame[y:y + s, x:x + s]
    if s == size:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_CUBIC)


def load_frames(path: str | os.PathLike, fps: float, size: int) -> np.ndarray:
    """`(F, size, size, 3)` uint8 frames of a video resampled to `fps` (nearest source frame to each i / fps)."""
    from dancegen.io.video import read_video

    video = read_video(path)
    src = np.asarray(video.frames)
    n = int(np.floor(len(src) / float(video.fps) * fps + 1e-6))
    idx = np.minimum(np.round(np.arange(n) * float(video.fps) / fps).astype(int), len(src) - 1)
    return np.stack([center_square(src[i], size) for i in idx])


def song_features(wav: str | os.PathLike, fps: float, music, num_frames: int | None = None):
    """The per-frame music features (`dancegen.audio.features.MusicFeatures`) of a whole track."""
    from dancegen.audio.features import frame_features
    from dancegen.audio.song import load_song

    song = load_song(wav, sr=music.sample_rate)
    return frame_features(song.samples, song.sr, fps, num_frames=num_frames, n_mels=music.n_mels,
                          tempogram_bins=music.tempogram_bins, beats=True, start_bpm=music.start_bpm)


class _AistCache:
    """Decoded frames per video, features per track and frozen embeddings per clip window, shared by one run.

    The pretrained backbones (`pretrained.FrozenMusicEncoders`) load on the first embedding that is not cached.
    """

    def __init__(self, root: Path, cfg):
        self.root, self.cfg = root, cfg
        self.frames: dict[str, np.ndarray] = {}
        self.music: dict[str, object] = {}
        self.songs: dict[str, tuple[np.ndarray, int]] = {}
        self.embeds: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (branch, music) -> window key -> (D,)
        self._encoders = None
        self._unwritable = False

    @property
    def encoders(self):
        """The run's `FrozenMusicEncoders` (created on first use; its backbones load lazily too)."""
        if self._encoders is None:
            from dancegen.methods.dance_any_beat.pretrained import FrozenMusicEncoders
            from dancegen.runtime import resolve_device

            self._encoders = FrozenMusicEncoders(self.cfg.music, resolve_device(self.cfg.train.device))
        return self._encoders

    def _wav(self, music: str) -> Path:
        wav = self.root / "wavs" / f"{music}.wav"
        if not wav.is_file():
            raise InputError(f"music {music} has no wav in wavs/", wav)
        return wav

    def song(self, music: str) -> tuple[np.ndarray, int]:
        """The track as mono float32 at its own sample rate (the embedding functions resample per backbone)."""
        if music not in self.songs:
            from dancegen.io.audio import read_audio

            samples, sr = read_audio(self._wav(music), sr=None, mono=True)
            self.songs[music] = (np.asarray(samples, np.float32), int(sr))
        return self.songs[music]

    def embedding(self, branch: str, music: str, start: int) -> np.ndarray:
        """Frozen `branch` embedding `(music.embed_dim,)` of the clip of `music` whose reference is frame `start`.

        Looked up in memory, then in the on-disk cache; computed (and the song's cache file rewritten atomically)
        only when neither has it.
        """
        from dancegen.methods.dance_any_beat import pretrained as pt

        d = self.cfg.data
        path = pt.cache_path(self.root, branch, pt.branch_ref(self.cfg.music, branch), music)
        store = self.embeds.get((branch, music))
        if store is None:
            store = self.embeds[(branch, music)] = pt.read_cache(path)
        key = pt.window_key(start, d.num_frames, d.fps)
        if key not in store:
            samples, sr = self.song(music)
            store[key] = self.encoders.embed(branch, pt.audio_window(samples, sr, start + 1, d.num_frames, d.fps), sr)
            if not self._unwritable and not pt.write_cache(path, store):
                from dancegen.console import info

                self._unwritable = True
                info(f"note: cannot write the embedding cache under {path.parent.parent}; embeddings stay in memory")
        return pt.check_width(store[key], self.cfg.music, branch)

    def video(self, v: AistVideo) -> np.ndarray:
        if v.name not in self.frames:
            self.frames[v.name] = load_frames(v.path, self.cfg.data.fps, self.cfg.data.resolution)
        return self.frames[v.name]

    def features(self, music: str):
        if music not in self.music:
            self.music[music] = song_features(self._wav(music), self.cfg.data.fps, self.cfg.music)
        return self.music[music]


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """`(..., H, W, 3)` uint8 -> `(..., 3, H, W)` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(frames, -1, -3))).float() / 255.0


class FramePairs(Dataset):
    """Stage 1 items: `{"ref": (3, H, W), "dri": (3, H, W)}` from one video, `pairs_per_video` per video."""

    def __init__(self, cfg, split: str = "train", pairs_per_video: int = 100, cache: _AistCache | None = None):
        d = cfg.data
        self.videos = list_aist_videos(d.root, split, d.test_music, d.cameras)
        self.cache = cache or _AistCache(Path(d.root), cfg)
        self.pairs_per_video = int(pairs_per_video)

    def __len__(self) -> int:
        return len(self.videos) * self.pairs_per_video

    def __getitem__(self, i: int) -> dict:
        frames = self.cache.video(self.videos[i // self.pairs_per_video])
        a, b = np.random.default_rng(i).integers(0, len(frames), size=2)
        return {"ref": _to_tensor(frames[a]), "dri": _to_tensor(frames[b])}


class MusicClips(Dataset):
    """Stage 2 / evaluation items: windows of N + 1 frames with the music of frames 1..N.

    Items: ``ref`` (3, H, W), ``frames`` (N, 3, H, W) (frames s+1..s+N), ``features`` (N, D) float32, ``beats`` (N,)
    float32 (the "beat" slice of the features), ``video`` / ``start`` (int), and for each pretrained branch of
    `music.encoder` ``clap`` / ``wav2clip`` (embed_dim,) float32, the frozen embedding of the clip's audio.
    """

    def __init__(self, cfg, split: str = "train", stride: int | None = None, starts: str = "all",
                 cameras: list[str] | None = None, genres: list[str] | None = None, cache: _AistCache | None = None):
        d = cfg.data
        self.cfg, self.n = cfg, int(d.num_frames)
        self.videos = list_aist_videos(d.root, split, d.test_music, cameras or d.cameras, genres)
        self.cache = cache or _AistCache(Path(d.root), cfg)
        stride = int(stride or d.window_stride)
        from dancegen.methods.dance_any_beat.pretrained import pretrained_branches

        self.branches = pretrained_branches(cfg.music)
        self.index: list[tuple[int, int]] = []
        for vi, v in enumerate(self.videos):
            total = self._length(v)
            last = total - (self.n + 1)
            if last < 0:
                continue
            self.index.extend((vi, s) for s in ([0] if starts == "first" else range(0, last + 1, stride)))
        if not self.index:
            raise InputError(f"no {split} video has {self.n + 1} frames at {d.fps:g} fps", d.root)

    def _length(self, v: AistVideo) -> int:
        from dancegen.io.video import video_info

        info = video_info(v.path)
        return int(np.floor(info["num_frames"] / info["fps"] * self.cfg.data.fps + 1e-6))

    def __len__(self) -> int:
        return len(self.index)

    def precompute_embeddings(self) -> int:
        """Compute (or read from the cache) the frozen embeddings of every item now, in this process, so data-loader
        workers never load a backbone. Returns the number of (branch, clip) embeddings."""
        for vi, s in self.index:
            for branch in self.branches:
                self.cache.embedding(branch, self.videos[vi].music, s)
        return len(self.index) * len(self.branches)

    def __getitem__(self, i: int) -> dict:
        vi, s = self.index[i]
        v = self.videos[vi]
        frames = self.cache.video(v)
        feats = self.cache.features(v.music)
        vals, beats = clip_music(feats, s + 1, self.n, self.cfg.music)
        item = {"ref": _to_tensor(frames[s]), "frames": _to_tensor(frames[s + 1:s + 1 + self.n]),
                "features": torch.from_numpy(vals), "beats": torch.from_numpy(beats), "video": vi, "start": s}
        for branch in self.branches:
            item[branch] = torch.from_numpy(self.cache.embedding(branch, v.music, s).copy())
        return item


def clip_music(feats, start: int, n: int, music) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs for frames start..start+n-1 of a song: features (n, D) in the order mel, onset, tempogram, beat
    (the beat column only when `music.beats`), and the beat vector (n,) (Gaussian-smoothed when `music.beat_sigma`).
    Frames past the end of the song are zeros."""
    vals = feats.window(start, n)
    names = ["mel", "onset", "tempogram"] + (["beat"] if music.beats else [])
    beats = vals[:, feats.slices["beat"]].max(axis=1)
    if music.beat_sigma > 0:
        from scipy.ndimage import gaussian_filter1d

        peak = gaussian_filter1d(np.eye(1, 9, 4)[0], music.beat_sigma).max()
        beats = np.minimum(gaussian_filter1d(beats, music.beat_sigma, mode="constant") / peak, 1.0)
    x = np.concatenate([vals[:, feats.slices[k]] for k in names], axis=1)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(beats, np.float32)


def ensure_synth_data(cfg, progress=None) -> dict | None:
    """Render the synthetic AIST++-layout data of a recipe (`data.synth`); finished clips are skipped."""
    s = cfg.data.synth
    if s.num_clips <= 0:
        return None
    from dancegen.synth import generate

    return generate(Path(cfg.data.root), num_clips=s.num_clips, layout="aist", seed=s.seed, size=s.size,
                    num_frames=int(round(s.seconds * s.fps)), fps=s.fps, camera_motion="static", flow=True,
                    progress=progress)
