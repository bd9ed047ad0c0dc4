"""OpenPose JSON folders (one file per frame, COCO-18 or BODY_25) and `.npz` pose files, read and written.

Follows the OpenPose output doc as restated in ../shared/specs/prior-art.md §3.1: each frame is
`{"version": 1.3, "people": [{"pose_keypoints_2d": [x0, y0, c0, ...], "face_keypoints_2d": [...],
"hand_left_keypoints_2d": [...], "hand_right_keypoints_2d": [...]}]}` with pixel coordinates and an undetected
point written as 0, 0, 0. OpenPose JSON stores no image size or fps, so dancegen writes them to `pose_meta.json`
beside the frames.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io import atomic
from dancegen.io.atomic import write_text
from dancegen.io.video import natural_key
from dancegen.pose.sequence import PoseSequence

META_NAME = "pose_meta.json"
_BODY25_TO_COCO18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # drop MidHip (8) and feet
_HAND_KEYS = ("hand_left_keypoints_2d", "hand_right_keypoints_2d")


def _flat(a: np.ndarray) -> list[float]:
    a = np.asarray(a, np.float64).copy()
    a[a[:, 2] <= 0] = 0.0  # missing -> 0, 0, 0 (OpenPose convention)
    return [round(float(v), 4) for v in a.reshape(-1)]


def frame_to_openpose(keypoints: np.ndarray, hands: np.ndarray | None = None, face: np.ndarray | None = None) -> dict:
    """One frame as an OpenPose JSON dict.

    Args:
        keypoints: `(18, 3)` COCO-18 x, y (pixels), confidence.
        hands: Optional `(2, 21, 3)` left, right.
        face: Optional `(K, 3)`.

    Returns:
        The JSON-ready dict; `people` is empty when every point of the frame is missing.
    """
    parts = [keypoints] + ([] if hands is None else [hands.reshape(-1, 3)]) + ([] if face is None else [face])
    if not any((p[:, 2] > 0).any() for p in parts):
        return {"version": 1.3, "people": []}
    person = {
        "person_id": [-1],
        "pose_keypoints_2d": _flat(keypoints),
        "face_keypoints_2d": [] if face is None else _flat(face),
        "hand_left_keypoints_2d": [] if hands is None else _flat(hands[0]),
        "hand_right_keypoints_2d": [] if hands is None else _flat(hands[1]),
        "pose_keypoints_3d": [],
        "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }
    return {"version": 1.3, "people": [person]}


def _frame_name(prefix: str, i: int) -> str:
    return f"{prefix}_{i:06d}_keypoints.json"


def write_openpose_folder(seq: PoseSequence, directory: str | os.PathLike, prefix: str = "frame") -> list[Path]:
    """Write a sequence as OpenPose JSON, one file per frame, plus `pose_meta.json` (width, height, fps, format).

    Non-COCO-18 sequences are converted to COCO-18 first. Each file is written atomically. Stale frame files of this
    prefix beyond the new length (from an earlier, longer write) are removed so that a re-read gives this sequence.

    Args:
        seq: The poses.
        directory: Output folder (created if needed).
        prefix: File name prefix: `{prefix}_000000_keypoints.json`, ...

    Returns:
        The frame file paths in order.
    """
    if seq.format != "coco18":
        from dancegen.pose.convert import convert

        seq = convert(seq, "coco18")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(seq.num_frames):
        doc = frame_to_openpose(
            seq.keypoints[i], None if seq.hands is None else seq.hands[i], None if seq.face is None else seq.face[i]
        )
        p = d / _frame_name(prefix, i)
        write_text(p, json.dumps(doc, separators=(",", ":")))
        paths.append(p)
    pattern = re.compile(rf"{re.escape(prefix)}_(\d{{6}})_keypoints\.json")
    for old in d.iterdir():
        m = pattern.fullmatch(old.name)
        if m and int(m.group(1)) >= seq.num_frames:
            old.unlink()
    meta = {
        "width": seq.width,
        "height": seq.height,
        "fps": seq.fps,
        "format": "coco18",
        "num_frames": seq.num_frames,
        "meta": seq.meta,
    }
    write_text(d / META_NAME, json.dumps(meta, indent=1, default=str))
    return paths


def _keypoint_array(person: dict, key: str, file: Path) -> np.ndarray | None:
    vals = person.get(key)
    if vals is None or len(vals) == 0:
        return None
    if not isinstance(vals, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        raise InputError(f"{key} must be a flat list of numbers", path=file)
    if len(vals) % 3:
        raise InputError(f"{key} has {len(vals)} values, not a multiple of 3 (x, y, confidence)", path=file)
    a = np.asarray(vals, np.float64).reshape(-1, 3)
    if not np.isfinite(a).all():
        raise InputError(f"{key} contains NaN or infinity", path=file)
    return a


def _body_to_coco18(body: np.ndarray, file: Path) -> np.ndarray:
    n = len(body)
    if n == 18:
        return body
    if n == 25:
        return body[_BODY25_TO_COCO18]
    if n == 17:
        from dancegen.pose.convert import convert

        return convert(PoseSequence(body[None], format="coco17"), "coco18").keypoints[0].astype(np.float64)
    raise InputError(
        f"pose_keypoints_2d has {n} joints; expected 18 (COCO-18), 25 (BODY_25) or 17 (COCO-17)", path=file
    )


def _bbox_area(body: np.ndarray) -> float:
    pts = body[body[:, 2] > 0, :2]
    if len(pts) == 0:
        return -1.0
    ext = pts.max(0) - pts.min(0)
    return float(ext[0] * ext[1]) + 1e-9 * len(pts)  # more points wins a tie (e.g. all zero-area boxes)


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean pixel distance over the joints detected in both bodies; infinity when they share none."""
    both = (a[:, 2] > 0) & (b[:, 2] > 0)
    if not both.any():
        return float("inf")
    return float(np.linalg.norm(a[both, :2] - b[both, :2], axis=1).mean())


def _follow(cand: list[tuple[dict, np.ndarray]], previous: np.ndarray | None) -> int:
    """Index of the person to take: the largest when there is no one to follow yet, else the one nearest to
    `previous` (mean distance over the joints detected in both; the largest when no one shares a joint with it)."""
    if previous is not None:
        dist = [_mean_distance(body, previous) for _, body in cand]
        best = int(np.argmin(dist))
        if np.isfinite(dist[best]):
            return best
    return max(range(len(cand)), key=lambda k: _bbox_area(cand[k][1]))


def _load_frame(file: Path) -> list[dict]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", path=file) from None
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=file) from None
    if not isinstance(doc, dict) or "people" not in doc:
        raise InputError('not an OpenPose frame: no "people" key', path=file)
    people = doc["people"]
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise InputError('"people" must be a list of objects', path=file)
    return people


def _read_meta(d: Path) -> dict:
    p = d / META_NAME
    if not p.is_file():
        return {}
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid JSON ({e})", path=p) from None
    return meta if isinstance(meta, dict) else {}


def read_openpose_folder(
    directory: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    person: str | int = "largest",
) -> PoseSequence:
    """Read a folder of OpenPose JSON frames (natural sort order) into a COCO-18 PoseSequence.

    Args:
        directory: Folder of `*.json` frames (a `pose_meta.json` there supplies width, height and fps).
        width, height: Image size; needed when the folder has no `pose_meta.json`. Override the meta file.
        fps: Frame rate; default from `pose_meta.json`, else 30 (recorded as `meta["fps_assumed"]`).
        person: "largest" follows one person: the one with the largest bounding box of detected body points in
            the first frame with anyone, then in each next frame the person nearest to the one taken before (mean
            distance over the joints detected in both), so the identity does not switch when another person gets
            bigger. When some frame has several people, `meta["person_indices"]` holds the index taken in each
            frame's `people` list (-1: empty frame), `meta["max_people"]` the most people in a frame, and one line
            says so on the console. An int picks that index of the `people` list (a frame with fewer people counts
            as empty).

    Returns:
        PoseSequence (coco18). BODY_25 drops MidHip and the feet; COCO-17 gets a derived neck. In a folder without
        pose_meta.json, coordinates that are all within [0, 1] are taken as normalised and scaled by width/height. Frames without the chosen person are all
        zero; their indices are in `meta["empty_frames"]`. `hands`/`face` are set when any frame has them.

    Raises:
        InputError: Missing or empty folder, bad JSON, no "people", a keypoint list that is not a multiple of 3 or
            has an unknown joint count, inconsistent face sizes, or an unknown image size. Names the file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError("not a folder of OpenPose JSON files", path=d)
    files = sorted((p for p in d.glob("*.json") if p.name != META_NAME), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError("no OpenPose *.json frames in this folder", path=d)
    saved = _read_meta(d)
    _say_what_is_missing(files, d, saved)
    return _read_files(files, d, saved, width, height, fps, person)


def _say_what_is_missing(files: list[Path], where: Path, saved: dict) -> None:
    """One line each when the frame numbers of the file names jump (frames missing: the poses play without them) or
    when pose_meta.json counts other frames than the folder holds."""
    from dancegen import console

    numbers = [re.findall(r"\d+", p.stem) for p in files]
    if all(numbers):
        idx = [int(n[-1]) for n in numbers]
        gaps = [(a, b) for a, b in zip(idx, idx[1:], strict=False) if b != a + 1]
        if gaps:
            missing = sum(max(0, b - a - 1) for a, b in gaps)
            a, b = gaps[0]
            console.info(f"[yellow]warning:[/yellow] {where}: the frame numbers jump {len(gaps)} time(s) (first "
                         f"from {a} to {b}; {missing} frame(s) missing); the poses are read without them")
    n = saved.get("num_frames")
    if isinstance(n, int) and n != len(files):
        console.info(f"[yellow]warning:[/yellow] {where}: pose_meta.json counts {n} frames but the folder holds "
                     f"{len(files)} frame files; reading the files")


def _read_files(files: list[Path], where: Path, saved: dict, width, height, fps, person) -> PoseSequence:
    width = width if width is not None else saved.get("width")
    height = height if height is not None else saved.get("height")
    fps_assumed = fps is None and saved.get("fps") is None
    fps = fps if fps is not None else saved.get("fps", 30.0)
    if not isinstance(person, int) and person != "largest":
        raise ValueError(f'person must be "largest" or an index, got {person!r}')

    f = len(files)
    body = np.zeros((f, 18, 3))
    hands = np.zeros((f, 2, 21, 3))
    face_rows: list[np.ndarray | None] = [None] * f
    has_hands = False
    face_size = None
    empty = []
    taken: list[int] = []  # index into each frame's "people" (-1: none)
    max_people = 0
    followed: np.ndarray | None = None  # the body taken last (person="largest")
    for i, file in enumerate(files):
        people = _load_frame(file)
        max_people = max(max_people, len(people))
        cand = []
        for p in people:
            b = _keypoint_array(p, "pose_keypoints_2d", file)
            cand.append((p, np.zeros((18, 3)) if b is None else _body_to_coco18(b, file)))
        if isinstance(person, int):
            k = person % len(cand) if -len(cand) <= person < len(cand) else None
        else:
            k = _follow(cand, followed) if cand else None
        if k is None:
            empty.append(i)
            taken.append(-1)
            continue
        taken.append(k)
        p, body[i] = cand[k]
        if (body[i, :, 2] > 0).any():
            followed = body[i]
        for h, key in enumerate(_HAND_KEYS):
            a = _keypoint_array(p, key, file)
            if a is not None:
                if len(a) != 21:
                    raise InputError(f"{key} has {len(a)} points, expected 21", path=file)
                hands[i, h] = a
                has_hands = True
        face_rows[i] = _keypoint_array(p, "face_keypoints_2d", file)
        if face_rows[i] is not None:
            if face_size is not None and len(face_rows[i]) != face_size:
                raise InputError(
                    f"face_keypoints_2d has {len(face_rows[i])} points, earlier frames {face_size}", path=file
                )
            face_size = len(face_rows[i])

    face = None
    if face_size is not None:
        face = np.zeros((f, face_size, 3))
        for i, r in enumerate(face_rows):
            if r is not None:
                face[i] = r

    if width is None or height is None:
        raise InputError(
            "image size unknown: OpenPose JSON has none; pass width and height (or add pose_meta.json)", path=where
        )
    arrays = [body] + ([hands] if has_hands else []) + ([face] if face is not None else [])
    coords = np.concatenate([a.reshape(-1, 3) for a in arrays])
    coords = coords[coords[:, 2] > 0, :2]
    # Files from `--keypoint_scale 3` hold [0, 1] coordinates; our own folders (with pose_meta.json) are pixels.
    normalised = len(coords) > 0 and bool((coords <= 1.0).all()) and saved.get("width") is None
    if normalised:
        for a in arrays:
            a[..., 0] *= width
            a[..., 1] *= height
    meta = dict(saved.get("meta") or {})
    for key in ("person_indices", "max_people"):  # describe this read, not the one that wrote pose_meta.json
        meta.pop(key, None)
    meta.update(source=str(where), num_files=f, empty_frames=empty, normalized_input=normalised)
    if fps_assumed:
        meta["fps_assumed"] = True
    if max_people > 1:
        meta.update(person_indices=taken, max_people=max_people)
        first = next((i for i, k in enumerate(taken) if k >= 0), None)
        if first is not None:
            from dancegen import console

            how = (f"person {person} of each frame's list" if isinstance(person, int) else
                   f"followed person {taken[first]} of frame {first} (the largest) by nearest joints")
            console.info(f"{where}: up to {max_people} people per frame; {how}; indices per frame in "
                         "meta['person_indices']")
    return PoseSequence(
        body.astype(np.float32),
        format="coco18",
        width=int(width),
        height=int(height),
        fps=float(fps),
        hands=hands if has_hands else None,
        face=face,
        meta=meta,
    )


def save_npz(seq: PoseSequence, path: str | os.PathLike) -> None:
    """Save a sequence losslessly to one `.npz` (keypoints, hands, face, format/size/fps/meta), atomically."""
    arrays = {
        "keypoints": seq.keypoints,
        "attrs": np.asarray(
            json.dumps(
                {"format": seq.format, "width": seq.width, "height": seq.height, "fps": seq.fps, "meta": seq.meta},
                default=str,
            )
        ),
    }
    if seq.hands is not None:
        arrays["hands"] = seq.hands
    if seq.face is not None:
        arrays["face"] = seq.face
    atomic.save_npz(path, True, **arrays)


def load_npz(path: str | os.PathLike) -> PoseSequence:
    """Load a sequence written by `save_npz`.

    Raises:
        InputError: Not a readable npz, or not one written by `save_npz`.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read pose npz ({e})", path=path) from None
    if "keypoints" not in data or "attrs" not in data:
        raise InputError("not a dancegen pose npz (needs 'keypoints' and 'attrs')", path=path)
    try:
        attrs = json.loads(str(data["attrs"]))
        return PoseSequence(
            data["keypoints"],
            format=attrs["format"],
            width=int(attrs["width"]),
            height=int(attrs["height"]),
            fps=float(attrs["fps"]),
            hands=data.get("hands"),
            face=data.get("face"),
            meta=attrs.get("meta") or {},
        )
    except (KeyError, ValueError, TypeError) as e:
        raise InputError(f"invalid pose npz ({e})", path=path) from None


def read_pose_input(
    path: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    person: str | int = "largest",
) -> PoseSequence:
    """Read poses from a folder of OpenPose JSON, a single OpenPose `.json` frame, or a `.npz` from `save_npz`.

    Size/fps arguments apply to JSON input (see `read_openpose_folder`) and override an npz's values by resizing.
    """
    p = Path(path)
    if p.is_dir():
        return _checked_range(read_openpose_folder(p, width, height, fps, person), p)
    if not p.exists():
        raise InputError("pose input not found", path=p)
    if p.suffix.lower() == ".npz":
        seq = _checked_range(load_npz(p), p)
        if width is not None and height is not None and (width, height) != (seq.width, seq.height):
            seq = seq.resized(width, height)
        return seq if fps is None else seq.replace(fps=float(fps))
    if p.suffix.lower() == ".json" and p.name != META_NAME:
        return _checked_range(_read_files([p], p, _read_meta(p.parent), width, height, fps, person), p)
    raise InputError("expected a folder of OpenPose JSON, a .json frame or a .npz pose file", path=p)


def _checked_range(seq: PoseSequence, where: Path) -> PoseSequence:
    """Refuse detected keypoints that are not finite or lie far outside the image (more than its size beyond an
    edge): such a file is corrupt or in other units, and drawing it would give an empty or garbage pose map."""
    kp = np.asarray(seq.keypoints, dtype=np.float64)
    seen = kp[..., 2] > 0
    if not seen.any():
        return seq
    xy = kp[..., :2][seen]
    limit = 2.0 * max(int(seq.width), int(seq.height))
    if not np.isfinite(xy).all() or np.abs(xy).max() > limit:
        worst = np.abs(xy[np.isfinite(xy)]).max() if np.isfinite(xy).any() else float("nan")
        raise InputError(f"keypoint coordinates out of range (up to {worst:.3g} px for a {seq.width}x{seq.height} "
                         "image, or not finite): corrupt, or in other units", path=where)
    return seq


__all__ = [
    "frame_to_openpose",
    "load_npz",
    "read_openpose_folder",
    "read_pose_input",
    "save_npz",
    "write_openpose_folder",
]
