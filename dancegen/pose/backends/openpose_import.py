"""The "openpose-json" backend: import poses someone else extracted (OpenPose JSON folder, one frame, or npz).

No model runs; `dancegen.pose.openpose_json.read_pose_input` parses and validates the files (prior-art.md §3.1),
so `extract-pose` can turn an existing OpenPose/DWPose/controlnet_aux dump into dancegen's layout (pose maps,
pose video, meta.json) like any other backend.
"""

from __future__ import annotations

import os

from dancegen.pose.sequence import PoseSequence


def load_openpose(
    source: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    person: str | int = "largest",
) -> PoseSequence:
    """Read an OpenPose JSON folder (or a single `.json` frame, or a `.npz` from `save_npz`) as a PoseSequence.

    Args:
        source: The pose files.
        width, height: Image size when the folder has no `pose_meta.json` (see `read_openpose_folder`).
        fps: Frame rate override.
        person: "largest" or the index of the person to take in each frame.

    Raises:
        InputError: unreadable or malformed input (the reader names the file).
    """
    from dancegen.pose.openpose_json import read_pose_input

    seq = read_pose_input(source, width=width, height=height, fps=fps, person=person)
    return seq.replace(meta={**seq.meta, "backend": "openpose-json"})
