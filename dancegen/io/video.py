"""Video and image read/write at the io/ boundary: `(F, H, W, 3)` uint8 RGB frames plus fps.

Containers are decoded with PyAV (FFmpeg): mp4, mov, webm, mkv, avi and gif. A folder of images is read in
natural sort order ("2.png" before "10.png"). Writing: `.mp4`/`.mov` as H.264 yuv420p (with an AAC audio track
when audio is given), `.gif`, or a folder of PNG frames when the path has no suffix. All writes are atomic.

Reproducible output: the same frames give the same bytes in every run and on every machine with the same FFmpeg /
x264 build. x264 runs on one thread (its default thread count follows the CPUs this process may use, and the
number of slices, hence the bitstream, follows the thread count), and muxer and AAC encoder run bit-exact: no
library version strings and no creation time in the file.

Provenance: every written video (mp4/mov `comment` tag, GIF comment, PNG `Comment` text chunk) says
`dancegen <version>` followed by the caller's `metadata` as `; key=value` (e.g. method, model, seed);
`read_video_metadata` reads it back, so a generated clip can be told from a recorded one.

Image size limit: an image whose header declares more than `MAX_IMAGE_PIXELS` pixels (8192 x 8192; the
environment variable `DANCEGEN_MAX_IMAGE_PIXELS` or the `max_pixels` argument changes it) is refused before it is
decoded; `read_image(..., target_size=(w, h))` reduces a large image while decoding (JPEG) or right after (by an
integer factor) to no less than what covers the size the caller resizes to.
"""

from __future__ import annotations

import os
import re
import struct
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io.atomic import atomic_dir, atomic_path

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"}
STREAMED_SUFFIXES = (".mp4", ".mov", ".m4v")
"""Containers `VideoWriter` encodes frame by frame."""
VIDEO_OUTPUTS = (*STREAMED_SUFFIXES, ".gif", "")
"""What `write_video` writes: a container by its suffix, or a folder of PNG frames (no suffix)."""
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_FOLDER_FPS = 30.0
#: Largest image (width x height, as its header declares it) that `read_image` decodes: 8192 x 8192, about 200 MB
#: as RGB. `DANCEGEN_MAX_IMAGE_PIXELS` overrides it.
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "DANCEGEN_MAX_IMAGE_PIXELS"


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


def max_image_pixels() -> int:
    """The pixel limit of `read_image`: `DANCEGEN_MAX_IMAGE_PIXELS` when set, else `MAX_IMAGE_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {raw!r}")
    return value


def _declared_size(path: Path) -> tuple[int, int] | None:
    """Width and height from the header alone, through Pillow's format plugins as `Image.open` tries them, but
    without its decompression-bomb check (which raises before the size can be read; `read_image` checks it)."""
    from PIL import Image

    Image.init()
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for fmt in Image.ID:
                factory, accept = Image.OPEN[fmt]
                try:
                    result = not accept or accept(prefix)
                except (struct.error, IndexError, ValueError):  # some plugins' checks fail on short files
                    continue
                if isinstance(result, (str, bytes)) or not result:
                    continue
                fp.seek(0)
                try:
                    return tuple(factory(fp, str(path)).size)
                except (SyntaxError, IndexError, TypeError, struct.error, OSError, ValueError):
                    fp.seek(0)
    except OSError:
        return None
    return None


def _too_large(path: Path, w: int, h: int, limit: int, from_env: bool) -> InputError:
    where = f"the limit {MAX_PIXELS_ENV}={limit}" if from_env else \
        f"the {limit / 1e6:.1f}-megapixel limit ({MAX_PIXELS_ENV} raises it)"
    return InputError(f"image is {w}x{h} ({w * h / 1e6:.1f} megapixels), above {where}; downscale it first", path)


def read_image(path: str | os.PathLike, target_size: tuple[int, int] | None = None,
               max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as `(H, W, 3)` uint8 RGB (alpha is dropped, grey is expanded).

    Args:
        path: The image file.
        target_size: `(width, height)` the caller will resize (or crop-resize) the image to. A larger image is
            reduced while reading, keeping its aspect ratio, by an integer factor to the smallest size that still
            covers it (each side at least the target's): JPEG decodes at 1/2, 1/4 or 1/8 scale, other formats are
            box-reduced right after decoding. Never enlarged. None: full size.
        max_pixels: Refuse an image whose header declares more pixels than this (default `max_image_pixels()`:
            `MAX_IMAGE_PIXELS`, 8192 x 8192, or `DANCEGEN_MAX_IMAGE_PIXELS`). Checked before anything is decoded.

    Raises:
        InputError: Missing file, a folder, an undecodable file, or an image above the pixel limit (one line with
            the file and its size).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not an image file" if path.is_dir() else "image file not found", path)
    from_env = max_pixels is None and bool(os.environ.get(MAX_PIXELS_ENV, "").strip())
    limit = int(max_pixels) if max_pixels is not None else max_image_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as im:
                w, h = im.size
                if w * h > limit:
                    raise _too_large(path, w, h, limit, from_env)
                if target_size is not None:
                    tw, th = (max(1, int(v)) for v in target_size)
                    if im.format == "JPEG":
                        im.draft(im.mode, (tw, th))  # decode at a reduced DCT scale, still covering the target
                im.load()
                if im.mode not in ("RGB", "RGBA", "L", "I;16"):
                    im = im.convert("RGB")
                if target_size is not None:
                    factor = min(im.width // tw, im.height // th)
                    if factor >= 2:
                        im = (im.convert("I") if im.mode == "I;16" else im).reduce(factor)
                arr = np.asarray(im)
                if im.mode == "I":  # 16-bit grey reduced through 32-bit
                    arr = np.clip(arr, 0, 65535).astype(np.uint16)
    except Image.DecompressionBombError:
        size = _declared_size(path)
        if size is None:
            raise InputError(f"image is too large to read (over Pillow's {2 * Image.MAX_IMAGE_PIXELS} pixels); "
                             "downscale it first", path) from None
        raise _too_large(path, size[0], size[1], limit, from_env) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"cannot decode image ({e.__class__.__name__})", path) from None
    return _to_rgb_uint8(arr, path)


def check_image(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header alone (nothing decoded): the cheap check a verb makes
    before it loads any model, so a corrupt or oversized image fails in milliseconds, not after the model load.

    Raises:
        InputError: missing, a folder, not an image Pillow reads, or above the pixel limit (`read_image`'s rules).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("is a folder, not an image file" if path.is_dir() else "image file not found", path)
    size = _declared_size(path)
    if size is None:
        raise InputError("cannot decode image (not a format Pillow reads: PNG, JPEG, WebP, ...)", path)
    limit = max_image_pixels()
    if size[0] * size[1] > limit:
        raise _too_large(path, size[0], size[1], limit, bool(os.environ.get(MAX_PIXELS_ENV, "").strip()))
    return size


def write_image(path: str | os.PathLike, img: np.ndarray, metadata: Mapping[str, object] | None = None) -> None:
    """Write an `(H, W, 3)` or `(H, W)` uint8 image atomically; the format follows the suffix.

    PNG and JPEG files carry the provenance text (`provenance(metadata)`: `dancegen <version>; key=value...`)."""
    from PIL import Image

    path = Path(path)
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {img.dtype}")
    fmt = _pil_format(path)
    kwargs = _comment_kwargs(fmt, provenance(metadata))
    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format=fmt, **kwargs)


def _comment_kwargs(fmt: str, comment: str) -> dict:
    """Pillow save arguments that store `comment` (PNG text chunk `Comment`, JPEG/GIF comment); {} otherwise."""
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Comment", comment)
        return {"pnginfo": info}
    if fmt in ("JPEG", "GIF"):
        return {"comment": comment}
    return {}


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


PROVENANCE_TAG = "comment"
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_RESERVED_KEYS = {"dancegen", "comment"}


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace(";", "%3B").replace("\n", "%0A").replace("\r", "%0D")


def provenance(metadata: Mapping[str, object] | None = None) -> str:
    """The provenance text written into every video: `dancegen <version>` then `; key=value` per metadata item.

    Args:
        metadata: e.g. `{"method": "dance-your-latents", "model": "...", "seed": 3}`, in the order given. Values are
            turned into text (`;`, `%` and line breaks %-escaped); None values are left out.

    Raises:
        ValueError: A key that is not a name (letters, digits, `_.-`), or a reserved one (`dancegen`, `comment`).
    """
    from dancegen import __version__

    parts = [f"dancegen {__version__}"]
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key in _RESERVED_KEYS:
            raise ValueError(f"metadata key {key!r} must be a name (letters, digits, _ . -) other than "
                             f"{' / '.join(sorted(_RESERVED_KEYS))}")
        if value is not None:
            parts.append(f"{key}={_escape(str(value))}")
    return "; ".join(parts)


def parse_provenance(text: str | None) -> dict[str, str]:
    """The fields of a `provenance` text (`{"dancegen": version, key: value, ...}`); {} when it is not one."""
    if not text or not text.startswith("dancegen "):
        return {}
    head, *items = text.split("; ")
    out = {"dancegen": head[len("dancegen "):]}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and _KEY.fullmatch(key):
            out[key] = urllib.parse.unquote(value)
    return out


def read_video_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A video's (or image's, or frame folder's) metadata tags, with dancegen's provenance fields parsed.

    Returns:
        The container's tags as FFmpeg names them (mp4/mov: `comment`, `title`, `major_brand`, ...; GIF: `comment`;
        PNG/frame folder (its first frame): the text chunks, `Comment` also as `comment`), plus, for a file dancegen
        wrote, `dancegen` (its version) and each `key=value` of the `metadata` it was written with (e.g. `method`,
        `model`, `seed`). A video without `dancegen` was not written by dancegen (or lost its tags).

    Raises:
        InputError: Missing path, or a file that cannot be opened.
    """
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputError("folder contains no image frames (.png/.jpg/...)", path)
        path = files[0]
    elif not path.exists():
        raise InputError("no such file or folder", path)
    tags: dict[str, str] = {}
    if is_image_path(path) or path.suffix.lower() == ".gif":
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:  # header and text chunks only: nothing is decoded
                    info = dict(im.info)
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(f"cannot open image ({e.__class__.__name__})", path) from None
        for key, value in info.items():
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str):
                tags[key] = value
        if "comment" not in tags and "Comment" in tags:
            tags["comment"] = tags["Comment"]
    else:
        import av

        try:
            with av.open(str(path)) as c:
                tags = {str(k): str(v) for k, v in c.metadata.items()}
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot open video ({e.__class__.__name__}: {e})", path) from None
    return {**tags, **parse_provenance(tags.get(PROVENANCE_TAG))}


#: x264's names of the x86 instruction sets it uses below AVX-512, by the name numpy's CPU detection gives each.
_X264_X86 = {"SSE": "MMX2", "SSE2": "SSE2,SSE2Fast", "SSE3": "SSE3", "SSSE3": "SSSE3", "SSE41": "SSE4.1",
             "SSE42": "SSE4.2", "AVX": "AVX", "FMA3": "FMA3", "LZCNT": "LZCNT", "BMI": "BMI1", "BMI2": "BMI2",
             "AVX2": "AVX2"}


def x264_asm_without_avx512() -> str | None:
    """The ``asm=`` list for x264 on a CPU with AVX-512: every set it has except AVX-512 (None elsewhere: x264's
    own detection).

    With its AVX-512 code x264 wrote different bytes for the same frames depending on what the process had run
    before (BlazePose, torch): same seed, different videos. Below AVX-512 its output depends only on the frames.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as cpu
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as cpu
        except ImportError:
            return None
    if not cpu.get("AVX512F"):
        return None
    return ",".join(name for feature, name in _X264_X86.items() if cpu.get(feature))


class VideoWriter:
    """Write a video frame by frame, atomically: ``with VideoWriter(path, fps) as w: w.write(frame)``.

    `.mp4` / `.mov` / `.m4v` frames go to the encoder as they come, so a long video needs constant memory; `.gif` and
    frame folders (no suffix) collect the frames and write them at the end (they are for short clips). The file
    appears when the block ends without an error and not at all otherwise. Arguments as `write_video`; the bytes are
    the same as `write_video` writes for the same frames.
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio: np.ndarray | None = None,
                 sample_rate: int | None = None, crf: int = 18, metadata: Mapping[str, object] | None = None):
        self.path = Path(path)
        self.metadata = metadata
        self.comment = provenance(metadata)  # a bad key fails before anything is written
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if audio is not None and not sample_rate:
            raise ValueError("sample_rate is required when audio is given")
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_OUTPUTS:
            raise ValueError(f"unsupported output format {self.suffix!r} (use .mp4, .mov, .gif or a folder)")
        self.fps, self.audio, self.sample_rate, self.crf = float(fps), audio, sample_rate, int(crf)
        self.count = 0
        self._frames: list[np.ndarray] = []
        self._size: tuple[int, int] | None = None
        self._atomic = self._container = self._stream = None

    @property
    def streaming(self) -> bool:
        return self.suffix in STREAMED_SUFFIXES

    def write_whole(self, frames: np.ndarray) -> None:
        """A GIF or a frame folder, from all its (checked) frames at once, atomically."""
        if self.suffix == ".gif":
            with atomic_path(self.path) as tmp:
                _write_gif(tmp, frames, self.fps, self.comment)
        else:
            write_frames(self.path, frames, self.fps, metadata=self.metadata)

    def __enter__(self) -> VideoWriter:
        if self.streaming:
            import av

            self._atomic = atomic_path(self.path)
            tmp = self._atomic.__enter__()
            # Bit-exact muxing: no "encoder: Lavf<version>" tag (creation_time is left unset, i.e. 0).
            self._container = av.open(str(tmp), mode="w", format="mp4", container_options={"fflags": "+bitexact"})
            self._container.metadata[PROVENANCE_TAG] = self.comment
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame (every frame the size of the first)."""
        frame = _check_frames(np.asarray(frame)[None])[0]
        if self._size is None:
            self._size = frame.shape[:2]
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]}, the video "
                             f"{self._size[1]}x{self._size[0]}")
        self.count += 1
        if not self.streaming:
            self._frames.append(frame)
            return
        import av

        if self._stream is None:
            self._open_stream(*self._size)
        h, w = self._size
        if h % 2 or w % 2:  # yuv420p needs even sizes: replicate the last row / column rather than resize
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for pkt in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(pkt)

    def _open_stream(self, h: int, w: int) -> None:
        vs = self._container.add_stream("libx264", rate=_fps_fraction(self.fps))
        vs.width, vs.height, vs.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        # One thread: x264's default follows the CPUs this process may use, and slices (so bytes) follow threads.
        vs.options = {"crf": str(self.crf), "preset": "medium", "threads": "1", "flags": "+bitexact"}
        asm = x264_asm_without_avx512()
        if asm:
            vs.options["x264-params"] = f"asm={asm}"
        self._stream = vs
        if self.audio is not None:  # every stream exists before the first packet (the header) is written
            audio = np.asarray(self.audio, dtype=np.float32)
            self._audio = audio[:, None] if audio.ndim == 1 else audio[:, :2]
            self._layout = "mono" if self._audio.shape[1] == 1 else "stereo"
            self._audio_stream = self._container.add_stream("aac", rate=int(self.sample_rate), layout=self._layout)
            self._audio_stream.options = {"flags": "+bitexact"}  # no "Lavc<version>" string in the first AAC frame

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.streaming:
            if exc_type is None:
                if not self._frames:
                    raise ValueError(f"{self.path}: no frames were written")
                self.write_whole(np.stack(self._frames))
            self._frames = []
            return
        try:
            if exc_type is None:
                if self._stream is None:
                    raise ValueError(f"{self.path}: no frames were written")
                for pkt in self._stream.encode():
                    self._container.mux(pkt)
                if self.audio is not None:
                    self._mux_audio()
        except BaseException as e:
            self._container.close()
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._container.close()
        self._atomic.__exit__(exc_type, exc, tb)

    def _mux_audio(self) -> None:
        import av

        ast, layout = self._audio_stream, self._layout
        chunk = 1024
        planar = np.ascontiguousarray(np.clip(self._audio, -1, 1).T)
        for start in range(0, planar.shape[1], chunk):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + chunk]), format="fltp",
                                            layout=layout)
            af.sample_rate = int(self.sample_rate)
            af.pts = start
            for pkt in ast.encode(af):
                self._container.mux(pkt)
        for pkt in ast.encode():
            self._container.mux(pkt)


def _write_gif(path: Path, frames: np.ndarray, fps: float, comment: str) -> None:
    from PIL import Image

    ims = [Image.fromarray(f) for f in frames]
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=max(int(round(1000 / fps)), 20),
                loop=0, optimize=False, comment=comment)


def write_video(path: str | os.PathLike, frames, fps: float, audio: np.ndarray | None = None,
                sample_rate: int | None = None, crf: int = 18,
                metadata: Mapping[str, object] | None = None) -> Path:
    """Write frames atomically; the suffix picks the format.

    Args:
        path: `.mp4`/`.mov` (H.264 yuv420p, AAC audio when given), `.gif`, or a path without suffix for a folder of
            PNG frames `00000.png...` plus `fps.txt`.
        frames: `(F, H, W, 3)` uint8 RGB.
        fps: Frame rate written into the container.
        audio: Optional `(N,)` or `(N, C)` float samples in [-1, 1] muxed as the audio track (mp4/mov only).
        sample_rate: Audio sample rate; required with `audio`.
        crf: x264 quality (mp4/mov).
        metadata: Provenance fields (e.g. `{"method": ..., "model": ..., "seed": ...}`) written after
            `dancegen <version>` into the mp4/mov `comment` tag, the GIF comment or each PNG frame's `Comment`
            (see `provenance`; `read_video_metadata` reads them back). Always written, with at least the version.

    The same frames, fps, audio and metadata give the same bytes in every run (see the module doc).

    Returns:
        The written path.
    """
    path = Path(path)
    writer = VideoWriter(path, fps, audio=audio, sample_rate=sample_rate, crf=crf, metadata=metadata)
    frames = _check_frames(frames)
    if not writer.streaming:  # gif / frame folder: written in one piece, without a copy per frame
        writer.write_whole(frames)
        return path
    with writer:
        for img in frames:
            writer.write(img)
    return path


def write_frames(folder: str | os.PathLike, frames, fps: float | None = None, ext: str = "png",
                 metadata: Mapping[str, object] | None = None) -> Path:
    """Write frames as `00000.png, 00001.png, ...` into a folder, atomically as a whole (plus `fps.txt`).

    PNG frames carry the provenance text (`provenance(metadata)`) in a `Comment` chunk; JPEG frames as their
    comment."""
    from PIL import Image

    comment = provenance(metadata)
    frames = _check_frames(frames)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for i, img in enumerate(frames):
            out = tmp / f"{i:05d}.{ext}"
            Image.fromarray(img).save(out, **_comment_kwargs(_pil_format(out), comment))
        if fps is not None:
            (tmp / "fps.txt").write_text(f"{fps:g}\n")
    return folder
