"""Pose domain library: PoseSequence, skeleton layouts, format conversion, OpenPose JSON, rendering, smoothing,
retargeting.

Only numpy-level modules are imported eagerly; the rest load on first attribute access, so `import dancegen.pose`
stays cheap (OpenCV and SciPy are imported inside the functions that draw or filter).
"""

from __future__ import annotations

import importlib

from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import SKELETONS, Skeleton, get_skeleton

# `convert` and `retarget` are not re-exported: they share their module's name, and once the submodule is imported
# the package attribute is the module, not the function. Import them from dancegen.pose.convert / .retarget.
_LAZY = {
    "Camera": "dancegen.pose.convert",
    "project_joints": "dancegen.pose.convert",
    "fit_camera": "dancegen.pose.convert",
    "humanml3d_to_coco18": "dancegen.pose.convert",
    "aist_keypoints3d_to_coco18": "dancegen.pose.convert",
    "read_openpose_folder": "dancegen.pose.openpose_json",
    "write_openpose_folder": "dancegen.pose.openpose_json",
    "read_pose_input": "dancegen.pose.openpose_json",
    "save_npz": "dancegen.pose.openpose_json",
    "load_npz": "dancegen.pose.openpose_json",
    "draw_pose": "dancegen.pose.render",
    "render_pose_sequence": "dancegen.pose.render",
    "smooth_poses": "dancegen.pose.smooth",
    "skeleton_offset": "dancegen.pose.retarget",
}

__all__ = ["SKELETONS", "PoseSequence", "Skeleton", "get_skeleton", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dancegen.pose' has no attribute {name!r}")
