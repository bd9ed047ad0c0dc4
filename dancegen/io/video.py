"""Video and image read/write at the io/ boundary: `(F, H, W, 3)` uint8 RGB frames plus fps.

Containers are decoded with PyAV (FFmpeg): mp4, mov, webm, mkv, avi and gif. A folder of images is read in
natural sort order ("2.png" before "10.png"). Writing: `.mp4`/`.mov` as H.264 yuv420p (with an AAC audio track
when audio is given), `.gif`, or a folder of PNG frames when the path has no suffix. All writes are atomic.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io.atomic import atomic_dir, atomic_path

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FOLDER_FPS = 30.0


@dataclass
class Video:
    """Decoded video.

    Attributes:
        frames: `(F, H, W, 3)` uint8 RGB.
        fps: Frames per second (frame folders without a `fps.txt` get 30).
        audio: Optional `(N, C)` float32 samples in [-1, 1].
        sample_rate: Audio sample rate in Hz when `audio` is set.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: frame2 < frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder in natural sort order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]  # hidden files and crashed writers' .part files are not frames
    return sorted(files, key=lambda p: natural_key(p.name))


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _to_rgb_uint8(img: np.ndarray, path) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise InputError(f"unsupported image shape {img.shape}", path)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise InputError(f"unsupported image dtype {img.dtype}", path)
    return np.ascontiguousarray(img[..., :3])


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as `(H, W, 3)` uint8 RGB (alpha is dropped, grey is expanded)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not an image file" if path.is_dir() else "image file not found", path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "RGBA", "L", "I;16"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"cannot decode image ({e.__class__.__name__})", path) from None
    return _to_rgb_uint8(arr, path)


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an `(H, W, 3)` or `(H, W)` uint8 image atomically; the format follows the suffix."""
    from PIL import Image

    path = Path(path)
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {img.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".gif": "GIF",
            ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, "PNG")


def _read_folder(folder: Path, max_frames: int | None) -> Video:
    files = list_images(folder)
    if not files:
        raise InputError("folder contains no image frames (.png/.jpg/...)", folder)
    if max_frames is not None:
        files = files[:max_frames]
    frames = [read_image(f) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(f"frames have different sizes {sorted(shapes)}", folder)
    fps = DEFAULT_FOLDER_FPS
    fps_file = folder / "fps.txt"
    if fps_file.is_file():
        try:
            fps = float(fps_file.read_text().strip())
        except ValueError:
            raise InputError("fps.txt does not hold a number", fps_file) from None
    return Video(np.stack(frames), fps)


def _read_container(path: Path, max_frames: int | None, with_audio: bool) -> Video:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot open video ({e.__class__.__name__}: {e})", path) from None
    with container:
        if not container.streams.video:
            raise InputError("file has no video stream", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else DEFAULT_FOLDER_FPS
        frames = []
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except (av.error.FFmpegError, ValueError) as e:
            if not frames:
                raise InputError(f"cannot decode video ({e.__class__.__name__}: {e})", path) from None
            # A truncated tail: keep what decoded, like most players do.
    if not frames:
        raise InputError("video has no decodable frames", path)
    audio = sr = None
    if with_audio:
        audio, sr = _read_audio_stream(path)
    return Video(np.stack(frames), fps, audio, sr)


def _read_audio_stream(path: Path) -> tuple[np.ndarray | None, int | None]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks, sr = [], stream.rate
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        if not chunks:
            return None, None
        return np.concatenate(chunks, axis=1).T.astype(np.float32), int(sr)


def read_video(path: str | os.PathLike, max_frames: int | None = None, with_audio: bool = False) -> Video:
    """Read a video file, a folder of frames, or a single image (a one-frame video).

    Args:
        path: `.mp4/.mov/.webm/.mkv/.avi/.gif`, a folder of images (natural sort; an optional `fps.txt` gives the
            frame rate), or one image file.
        max_frames: Stop after this many frames.
        with_audio: Also decode the first audio track of a container.

    Raises:
        InputError: missing path, empty folder, unreadable or frameless file.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, max_frames)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if is_image_path(path):
        return Video(read_image(path)[None], DEFAULT_FOLDER_FPS)
    return _read_container(path, max_frames, with_audio)


def video_info(path: str | os.PathLike) -> dict:
    """Frame count (may be estimated by the container), fps and size without decoding every frame."""
    path = Path(path)
    if path.is_dir() or is_image_path(path):
        v = read_video(path, max_frames=1)
        n = len(list_images(path)) if path.is_dir() else 1
        return {"num_frames": n, "fps": v.fps, "width": v.width, "height": v.height}
    import av

    try:
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            return {"num_frames": int(s.frames), "fps": float(rate) if rate else DEFAULT_FOLDER_FPS,
                    "width": s.codec_context.width, "height": s.codec_context.height}
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise InputError(f"cannot open video ({e.__class__.__name__})", path) from None


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=3)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("no frames to write")
    return frames


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _write_mp4(path: Path, frames: np.ndarray, fps: float, audio, sample_rate, crf: int) -> None:
    import av

    f, h, w, _ = frames.shape
    # yuv420p needs even sizes; pad by replicating the last row/column rather than resizing.
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=_fps_fraction(fps))
        vs.width, vs.height, vs.pix_fmt = pw, ph, "yuv420p"
        vs.options = {"crf": str(crf), "preset": "medium"}
        ast = None
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim == 1:
                audio = audio[:, None]
            layout = "mono" if audio.shape[1] == 1 else "stereo"
            audio = audio[:, :2]
            ast = out.add_stream("aac", rate=int(sample_rate), layout=layout)
        for img in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if ast is not None:
            chunk = 1024
            planar = np.ascontiguousarray(np.clip(audio, -1, 1).T)
            for start in range(0, planar.shape[1], chunk):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + chunk]),
                                                format="fltp", layout=layout)
                af.sample_rate = int(sample_rate)
                af.pts = start
                for pkt in ast.encode(af):
                    out.mux(pkt)
            for pkt in ast.encode():
                out.mux(pkt)


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=max(int(round(1000 / fps)), 20),
                loop=0, optimize=False)


def write_video(path: str | os.PathLike, frames, fps: float, audio: np.ndarray | None = None,
                sample_rate: int | None = None, crf: int = 18) -> Path:
    """Write frames atomically; the suffix picks the format.

    Args:
        path: `.mp4`/`.mov` (H.264 yuv420p, AAC audio when given), `.gif`, or a path without suffix for a folder of
            PNG frames `00000.png...` plus `fps.txt`.
        frames: `(F, H, W, 3)` uint8 RGB.
        fps: Frame rate written into the container.
        audio: Optional `(N,)` or `(N, C)` float samples in [-1, 1] muxed as the audio track (mp4/mov only).
        sample_rate: Audio sample rate; required with `audio`.

    Returns:
        The written path.
    """
    path = Path(path)
    frames = _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if audio is not None and not sample_rate:
        raise ValueError("sample_rate is required when audio is given")
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".mov", ".m4v"):
        with atomic_path(path) as tmp:
            _write_mp4(tmp, frames, fps, audio, sample_rate, crf)
    elif suffix == ".gif":
        with atomic_path(path) as tmp:
            _write_gif(tmp, frames, fps)
    elif suffix == "":
        write_frames(path, frames, fps)
    else:
        raise ValueError(f"unsupported output format {suffix!r} (use .mp4, .mov, .gif or a folder)")
    return path


def write_frames(folder: str | os.PathLike, frames, fps: float | None = None, ext: str = "png") -> Path:
    """Write frames as `00000.png, 00001.png, ...` into a folder, atomically as a whole (plus `fps.txt`)."""
    from PIL import Image

    frames = _check_frames(frames)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for i, img in enumerate(frames):
            Image.fromarray(img).save(tmp / f"{i:05d}.{ext}")
        if fps is not None:
            (tmp / "fps.txt").write_text(f"{fps:g}\n")
    return folder
