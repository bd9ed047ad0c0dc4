"""Pose inputs of the generating verbs: a pose folder / .json / .npz, a 3D motion file, or frames to estimate from."""

from __future__ import annotations

import os
from pathlib import Path

from dancegen.errors import InputError

POSE_SUFFIXES = (".npz", ".json")


def is_pose_input(path: str | os.PathLike) -> bool:
    """A folder of OpenPose JSON, a .json frame or a .npz pose file (as opposed to images or video)."""
    path = Path(path)
    if path.is_dir():
        return any(p.suffix.lower() == ".json" for p in path.iterdir())
    return path.suffix.lower() in POSE_SUFFIXES


def load_poses(path: str | os.PathLike, *, fps: float | None = None, size: tuple[int, int] | None = None,
               backend: str = "blazepose", max_frames: int | None = None, **extract_kw):
    """Poses from a pose folder/npz, a 3D motion file, or extracted from an image/video/frame folder.

    The source kind is decided here, in this order: a 3D motion file (`.npy`/`.pkl`/`.pickle`/`.bvh`: MDM
    results.npy, HumanML3D new_joints, synth joints3d.npy, AIST++ keypoints3d, BVH) is read by
    `dancegen.motion.read_motion` and projected to COCO-18 by `project_motion` (one fixed front camera); a pose
    folder / `.json` / `.npz` is read as poses; anything else goes to the pose backend (`backend`).

    Args:
        fps: Override the frame rate (pose JSON and motion files).
        size: `(width, height)` of the images the keypoints belong to, for OpenPose JSON written by other tools
            (which records no image size); dancegen's own folders carry it in `pose_meta.json`. For a motion file,
            the projection's image size (default 512x512).
        max_frames: keep at most this many frames (an estimator reads only those).
    """
    from dancegen.pose.openpose_json import read_pose_input

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    from dancegen.motion.io import is_motion_file

    if is_motion_file(path):
        from dancegen.motion.io import project_motion, read_motion

        w, h = size if size else (512, 512)
        seq = project_motion(read_motion(path, fps=fps), width=w, height=h)
        return seq[:max_frames] if max_frames else seq
    if is_pose_input(path):
        w, h = size if size else (None, None)
        seq = read_pose_input(path, width=w, height=h, fps=fps)
        seq = seq[:max_frames] if max_frames else seq
        warn_empty_frames(seq, path)
        return seq
    from dancegen.pose.extract import estimate_poses

    return estimate_poses(path, backend=backend, max_frames=max_frames, **extract_kw)


def warn_empty_frames(seq, path) -> list[int]:
    """Say in one line which frames of a pose input hold no person (no joint above confidence 0): a generator draws
    an empty pose map there. Returns their indices."""
    import numpy as np

    from dancegen.console import info

    empty = [int(i) for i in np.flatnonzero(~(np.asarray(seq.keypoints)[..., 2] > 0).any(axis=-1))]
    if empty:
        shown = ", ".join(map(str, empty[:8])) + (", ..." if len(empty) > 8 else "")
        info(f"[yellow]warning:[/yellow] {path}: {len(empty)} of {len(seq)} pose frames hold no person (frames "
             f"{shown}); they are drawn as empty pose maps")
    return empty
