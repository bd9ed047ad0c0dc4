"""`dancegen extract-pose`: run a pose backend over a video, frame folder or image and write the pose layout.

Output folder (DESIGN.md "Data contracts"; prior-art.md §3.1 and §3.3):

    out_dir/openpose_json/frame_000000_keypoints.json ...  OpenPose JSON, COCO-18 (+ pose_meta.json)
    out_dir/poses.npz                                    the PoseSequence in the requested `fmt`
    out_dir/pose_maps/00000.png ...                      ControlNet-convention renders (+ fps.txt)
    out_dir/pose.mp4                                     the same renders as a video at the source fps
    out_dir/masks/00000.png ...                          person masks (0-255), when the backend gives them
    out_dir/meta.json                                    backend, model hashes, fps, size, detection rate, timings

The whole folder is written next to its final place and renamed in one step (atomic_dir), so a crash never
leaves a half-written result. `meta.json` holds a cache key made from the input's bytes (a file) or listing with
sizes and mtimes (a folder), the backend, the model hashes and every parameter; running again with the same key
returns the stored report without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.pose.backends import BACKENDS

TOOL = "dancegen extract-pose"
LAYOUT_VERSION = 1
MODES = ("auto", "image", "video")

_HASH_CACHE: dict[tuple, str] = {}


def _sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def source_fingerprint(source: str | os.PathLike) -> dict:
    """Identity of an input: SHA-256 of a file's bytes, or of a folder's listing (names, sizes, mtimes).

    Raises:
        InputError: the source does not exist.
    """
    p = Path(source)
    if p.is_dir():
        entries = sorted((q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in p.iterdir() if q.is_file())
        digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
        return {"kind": "folder", "sha256": digest, "files": len(entries)}
    if p.is_file():
        return {"kind": "file", "sha256": _sha256_file(p), "bytes": p.stat().st_size}
    raise InputError("no such file or folder", path=p)


def _target_size(size, width: int, height: int) -> tuple[int, int]:
    """Output (w, h): None keeps the source size, an int sets the longer side, a pair is taken as (w, h)."""
    if size is None:
        return width, height
    if isinstance(size, (int, np.integer)):
        if size <= 0:
            raise InputError(f"size must be positive, got {size}")
        s = size / max(width, height)
        return max(1, round(width * s)), max(1, round(height * s))
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise InputError(f"size must be positive, got {size}")
    return w, h


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier extract-pose output (atomic_dir swaps the whole folder)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError("output path exists and is not a folder", path=out_dir)
    if not any(out_dir.iterdir()):
        return
    meta = _read_meta(out_dir)
    if meta is None or meta.get("tool") != TOOL:
        raise InputError(
            "output folder exists and is not an extract-pose output; refusing to replace it", path=out_dir
        )


def _read_meta(out_dir: Path) -> dict | None:
    try:
        meta = json.loads((out_dir / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _outputs_exist(out_dir: Path, meta: dict) -> bool:
    return all((out_dir / rel).exists() for rel in (meta.get("outputs") or {}).values())


def _timing(total_s: float, per_frame: list[float], parts: dict[str, list[float]]) -> dict:
    t = {"total_s": round(total_s, 3)}
    if per_frame:
        t["per_frame_ms_mean"] = round(1000 * float(np.mean(per_frame)), 2)
        t["per_frame_ms_median"] = round(1000 * float(np.median(per_frame)), 2)
    for name, vals in parts.items():
        if vals:
            t[f"{name}_ms_mean"] = round(1000 * float(np.mean(vals)), 2)
            t[f"{name}_calls"] = len(vals)
    return t


def _blazepose_frames(frames, mode, model_dir, min_detection, min_presence, want_masks, on_frame):
    from dancegen.pose.backends.blazepose import NUM_BODY, BlazePoseEstimator

    est = BlazePoseEstimator(
        model_dir, mode=mode, min_detection=min_detection, min_presence=min_presence, segmentation=want_masks
    )
    try:
        f, h, w = frames.shape[:3]
        kps = np.zeros((f, NUM_BODY, 3), np.float32)
        for i in range(f):
            t0 = time.perf_counter()
            k, mask = est.process(frames[i])
            dt = time.perf_counter() - t0
            if k is not None:
                # Landmarks the model places outside the image are "not detected" in OpenPose terms (0, 0, 0).
                inside = (k[:, 0] >= 0) & (k[:, 0] < w) & (k[:, 1] >= 0) & (k[:, 1] < h)
                kps[i] = np.where(inside[:, None], k, 0.0)
            on_frame(i, mask, dt)
        hashes = {name: _sha256_file(p) for name, p in est.model_paths.items()}
        return kps, "mediapipe33", hashes, est.timings
    finally:
        est.close()


def _dwpose_frames(frames, weights_dir, on_frame):
    from dancegen.pose.backends.dwpose import DWPoseEstimator

    est = DWPoseEstimator(weights_dir)
    try:
        f = frames.shape[0]
        kps = np.zeros((f, 133, 3), np.float32)
        for i in range(f):
            t0 = time.perf_counter()
            k = est.process(frames[i])
            dt = time.perf_counter() - t0
            if k is not None:
                kps[i] = k
            on_frame(i, None, dt)
        hashes = {name: _sha256_file(p) for name, p in est.model_paths.items()}
        return kps, "dwpose133", hashes, est.timings
    finally:
        est.close()


def _synthpose_frames(frames, model_dir, on_frame):
    from dancegen.pose.backends.synthpose import SynthPoseEstimator, require_synthpose

    folder = require_synthpose(model_dir)
    hashes = {"synthpose": _sha256_file(folder / "model.safetensors")}
    est = SynthPoseEstimator.load(folder)
    kps = np.zeros((len(frames), 18, 3), np.float32)
    times = []
    for i in range(0, len(frames), est.batch_size):
        t0 = time.perf_counter()
        kps[i:i + est.batch_size] = est(frames[i:i + est.batch_size])
        n = len(frames[i:i + est.batch_size])
        dt = (time.perf_counter() - t0) / n
        for j in range(i, i + n):
            on_frame(j, None, dt)
        times += [dt] * n
    return kps, "coco18", hashes, {"network": times}


def estimate_poses(
    source: str | os.PathLike | np.ndarray,
    backend: str = "blazepose",
    fmt: str = "coco18",
    mode: str = "auto",
    model_dir: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    min_detection: float = 0.5,
    min_presence: float = 0.5,
    max_frames: int | None = None,
    fps: float | None = None,
):
    """Poses of one dancer in a video, frame folder, image or `(F, H, W, 3)` uint8 array, in memory (no files written,
    no masks). `fps` labels an array's frames (default 24); a file's own rate is kept.

    `extract_poses` is the same with the on-disk layout, caching and masks; use this for a reference photo or a
    quick look. Frames without a person are all-zero (confidence 0).

    Returns:
        A PoseSequence in `fmt` at the source's size and fps, with `meta["detection_rate"]`.
    """
    from dancegen.io.video import is_image_path, read_video
    from dancegen.pose.convert import convert
    from dancegen.pose.sequence import PoseSequence

    if backend not in ("blazepose", "dwpose", "synthpose"):
        raise InputError(f"estimate_poses runs an estimator backend (blazepose, dwpose or synthpose), got {backend!r}")
    if isinstance(source, np.ndarray):  # frames already in memory: (F, H, W, 3) uint8 RGB
        if source.ndim != 4 or source.shape[-1] != 3 or source.dtype != np.uint8:
            raise InputError(f"frames must be (F, H, W, 3) uint8, got {source.shape} {source.dtype}")
        frames, fps = source[:max_frames], float(fps or 24.0)
        mode = "video" if mode == "auto" else mode
    else:
        if mode == "auto":
            mode = "image" if is_image_path(source) else "video"
        video = read_video(source, max_frames=max_frames)
        frames, fps = video.frames, float(video.fps)
    if backend == "blazepose":
        kps, native, _, _ = _blazepose_frames(frames, mode, model_dir, min_detection, min_presence, False,
                                              lambda *a: None)
    elif backend == "synthpose":
        kps, native, _, _ = _synthpose_frames(frames, model_dir, lambda *a: None)
    else:
        kps, native, _, _ = _dwpose_frames(frames, weights_dir, lambda *a: None)
    h, w = frames.shape[1:3]
    detected = (kps[..., 2] > 0).any(1)
    seq = PoseSequence(kps, format=native, width=w, height=h, fps=fps,
                       meta={"backend": backend, "source": "<frames>" if isinstance(source, np.ndarray) else str(source),
                             "detection_rate": float(detected.mean())})
    return convert(seq, fmt) if fmt != native else seq


def person_mask(image: np.ndarray, model_dir: str | os.PathLike | None = None, threshold: float = 0.5) -> np.ndarray:
    """`(H, W)` bool mask of the person in an `(H, W, 3)` uint8 photo (BlazePose's segmentation, image mode).

    Raises:
        InputError: no person found.
    """
    got: list = []
    _blazepose_frames(np.asarray(image)[None], "image", model_dir, 0.5, 0.5, True, lambda i, m, dt: got.append(m))
    mask = got[0] if got else None
    if mask is None or not (np.asarray(mask) > threshold).any():
        raise InputError("no person found in the image (BlazePose); pass a mask file instead")
    m = np.asarray(mask)
    return (m > threshold) if m.dtype != np.uint8 else (m > int(255 * threshold))


def extract_poses(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    backend: str = "blazepose",
    fmt: str = "coco18",
    size: int | tuple[int, int] | None = None,
    smooth: str | None = None,
    write_maps: bool = True,
    write_video: bool = True,
    write_masks: bool = True,
    cache: bool = True,
    progress: Callable[[int, int], None] | None = None,
    mode: str = "auto",
    model_dir: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    min_detection: float = 0.5,
    min_presence: float = 0.5,
    max_frames: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> dict:
    """Extract one dancer's 2D pose from every frame and write the extract-pose folder (module docstring).

    Args:
        source: A video file, a folder of frames/images (same size, natural order, optional fps.txt), or one image.
            For backend "openpose-json": a folder of OpenPose JSON, one `.json` frame, or a `.npz` pose file.
        out_dir: Output folder; created, or replaced if it holds an earlier extract-pose output. Any other
            non-empty folder is refused (InputError) rather than overwritten.
        backend: "blazepose" (default; MediaPipe models via LiteRT, person masks), "dwpose" (user-supplied ONNX,
            133 whole-body keypoints), "synthpose" (the bundled estimator of the synthetic world's 64 px dancers,
            COCO-18; for synthetic clips and what models trained on them generate) or "openpose-json" (import).
        fmt: Format of `poses.npz` (one of dancegen.pose.convert.FORMATS). OpenPose JSON is always COCO-18.
        size: Output size for keypoints, maps, video and masks: None (source size), an int (longer side) or (w, h).
        smooth: None, or a dancegen.pose.smooth method ("one_euro", "savgol", "gaussian") applied to the keypoints.
        write_maps, write_video, write_masks: Which optional outputs to write.
        cache: Return the stored report when `out_dir/meta.json` has the same cache key and its outputs exist.
        progress: Called as progress(frames_done, total_frames).
        mode: BlazePose tracking: "video" tracks between frames, "image" detects on every frame, "auto" uses
            "image" for a single image and "video" otherwise.
        model_dir: BlazePose model folder (default `$DANCEGEN_HOME/models/blazepose`), or the SynthPose model
            folder (default the bundled `synthpose-tiny`).
        weights_dir: DWPose ONNX folder (default `$DANCEGEN_WEIGHTS_DIR/dwpose`).
        min_detection, min_presence: BlazePose detector and presence thresholds.
        max_frames: Only the first N frames.
        image_size: (width, height) of the images behind OpenPose JSON that records no size (openpose-json backend).

    Returns:
        The report written to meta.json, plus "out_dir" and "cached" (True when nothing was recomputed). Keys:
        backend, format, num_frames, detected_frames, detection_rate, fps, width, height, source_size,
        model_hashes, timing, outputs (relative paths), cache_key, params.

    Raises:
        InputError: unknown backend/format/mode, unreadable input, or an output folder it must not replace.
        MissingWeightsError: the backend's model files are not installed (the message says how to get them).
    """
    from dancegen.pose.convert import FORMATS

    if backend not in BACKENDS:
        raise InputError(f"unknown pose backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if fmt not in FORMATS:
        raise InputError(f"unknown pose format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if smooth is not None:
        from dancegen.pose.smooth import METHODS

        if smooth not in METHODS:
            raise InputError(f"unknown smoothing {smooth!r}; choose one of {', '.join(METHODS)}")
    source, out_dir = Path(source), Path(out_dir)
    fingerprint = source_fingerprint(source)
    _check_out_dir(out_dir)

    if mode == "auto":
        mode = (
            "image"
            if source.is_file()
            and source.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
            else "video"
        )
    params = {
        "fmt": fmt,
        "size": list(size) if isinstance(size, (tuple, list)) else size,
        "smooth": smooth,
        "write_maps": write_maps,
        "write_video": write_video,
        "write_masks": write_masks,
        "max_frames": max_frames,
        "image_size": list(image_size) if image_size else None,
    }
    if backend == "blazepose":
        from dancegen.pose.backends.fetch import BLAZEPOSE_FILES, require_blazepose

        require_blazepose(model_dir)  # fail fast, before decoding the video
        params.update(mode=mode, min_detection=min_detection, min_presence=min_presence)
        model_hashes = {name: digest for name, (_, digest) in BLAZEPOSE_FILES.items()}
    elif backend == "dwpose":
        from dancegen.pose.backends.dwpose import require_dwpose

        model_hashes = {name: _sha256_file(p) for name, p in require_dwpose(weights_dir).items()}
    elif backend == "synthpose":
        from dancegen.pose.backends.synthpose import require_synthpose

        model_hashes = {"synthpose": _sha256_file(require_synthpose(model_dir) / "model.safetensors")}
    else:
        model_hashes = {}
    key_doc = {
        "layout": LAYOUT_VERSION,
        "source": fingerprint,
        "backend": backend,
        "params": params,
        "models": model_hashes,
    }
    cache_key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()
    if cache:
        old = _read_meta(out_dir)
        if old is not None and old.get("cache_key") == cache_key and _outputs_exist(out_dir, old):
            return {**old, "out_dir": str(out_dir), "cached": True}

    t_start = time.perf_counter()
    from dancegen.io.atomic import atomic_dir, write_text

    with atomic_dir(out_dir) as tmp:
        run = dict(
            fmt=fmt,
            size=size,
            smooth=smooth,
            write_maps=write_maps,
            write_video=write_video,
            write_masks=write_masks,
            progress=progress,
            mode=mode,
            model_dir=model_dir,
            weights_dir=weights_dir,
            min_detection=min_detection,
            min_presence=min_presence,
            max_frames=max_frames,
            image_size=image_size,
        )
        report = _extract_into(tmp, source, backend, t_start, **run)
        report.update(
            tool=TOOL,
            layout_version=LAYOUT_VERSION,
            cache_key=cache_key,
            params=params,
            source=str(source),
            source_fingerprint=fingerprint,
        )
        report["timing"]["total_s"] = round(time.perf_counter() - t_start, 3)
        write_text(tmp / "meta.json", json.dumps(report, indent=1, default=str))
    return {**report, "out_dir": str(out_dir), "cached": False}


def _extract_into(
    tmp: Path,
    source: Path,
    backend: str,
    t_start: float,
    *,
    fmt,
    size,
    smooth,
    write_maps,
    write_video,
    write_masks,
    progress,
    mode,
    model_dir,
    weights_dir,
    min_detection,
    min_presence,
    max_frames,
    image_size=None,
) -> dict:
    """Run the backend and write every output into `tmp`; returns the report (extract_poses documents the keys)."""
    from dancegen.io.video import write_frames
    from dancegen.io.video import write_video as write_video_file
    from dancegen.pose.convert import convert
    from dancegen.pose.openpose_json import save_npz, write_openpose_folder
    from dancegen.pose.sequence import PoseSequence

    outputs: dict[str, str] = {}
    per_frame: list[float] = []
    parts: dict[str, list[float]] = {}
    model_hashes: dict[str, str] = {}
    if backend == "openpose-json":
        from dancegen.pose.openpose_json import read_pose_input

        w, h = image_size if image_size else (None, None)
        seq = read_pose_input(source, width=w, height=h)
        if max_frames is not None:
            seq = seq[:max_frames]
        src_w, src_h = seq.width, seq.height
    else:
        from dancegen.io.video import read_video

        video = read_video(source, max_frames=max_frames)
        frames, fps = video.frames, float(video.fps)
        f, src_h, src_w = frames.shape[:3]
        out_w, out_h = _target_size(size, src_w, src_h)
        mask_dir = tmp / "masks"
        wrote_mask = [False]

        def on_frame(i: int, mask, dt: float) -> None:
            per_frame.append(dt)
            if write_masks and backend == "blazepose":
                import cv2

                from dancegen.io.video import write_image

                if mask is None:  # no person: an empty mask keeps masks/ aligned with the frames
                    m = np.zeros((out_h, out_w), np.float32)
                elif (out_w, out_h) != (src_w, src_h):
                    m = cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
                else:
                    m = mask
                write_image(mask_dir / f"{i:05d}.png", np.round(np.clip(m, 0, 1) * 255).astype(np.uint8))
                wrote_mask[0] = True
            if progress is not None:
                progress(i + 1, f)

        if backend == "blazepose":
            kps, native, model_hashes, parts = _blazepose_frames(
                frames, mode, model_dir, min_detection, min_presence, write_masks, on_frame
            )
        elif backend == "synthpose":
            kps, native, model_hashes, parts = _synthpose_frames(frames, model_dir, on_frame)
        else:
            kps, native, model_hashes, parts = _dwpose_frames(frames, weights_dir, on_frame)
        del frames
        seq = PoseSequence(kps, format=native, width=src_w, height=src_h, fps=fps, meta={"backend": backend})
        if wrote_mask[0]:
            outputs["masks"] = "masks"

    detected = (seq.conf > 0).any(1)
    if smooth is not None:
        from dancegen.pose.smooth import smooth_poses

        seq = smooth_poses(seq, method=smooth)
    out_w, out_h = _target_size(size, seq.width, seq.height)
    if (out_w, out_h) != (seq.width, seq.height):
        seq = seq.resized(out_w, out_h)

    write_openpose_folder(seq, tmp / "openpose_json")
    outputs["openpose_json"] = "openpose_json"
    save_npz(convert(seq, fmt) if fmt != seq.format else seq, tmp / "poses.npz")
    outputs["poses"] = "poses.npz"
    if write_maps or write_video:
        from dancegen.pose.render import render_pose_sequence

        maps = render_pose_sequence(seq)
        if write_maps:
            write_frames(tmp / "pose_maps", maps, seq.fps)
            outputs["pose_maps"] = "pose_maps"
        if write_video:
            write_video_file(tmp / "pose.mp4", maps, seq.fps, metadata={"verb": "extract-pose", "backend": backend})
            outputs["pose_video"] = "pose.mp4"
    n = seq.num_frames
    return {
        "backend": backend,
        "native_format": seq.format,
        "format": fmt,
        "num_frames": n,
        "detected_frames": int(detected.sum()),
        "detection_rate": float(detected.mean()) if n else 0.0,
        "empty_frames": [int(i) for i in np.flatnonzero(~detected)],
        "fps": float(seq.fps),
        "width": int(seq.width),
        "height": int(seq.height),
        "source_size": [int(src_w), int(src_h)],
        "model_hashes": model_hashes,
        "timing": _timing(time.perf_counter() - t_start, per_frame, parts),
        "outputs": outputs,
    }
