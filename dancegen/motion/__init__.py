"""Motion domain library: 3D motion files (MDM, HumanML3D, synth, AIST++, BVH) read into one HumanML3D-22 form.

LatentMan (../shared/specs/latentman.md §2.1) takes its motion from MDM or from a file made elsewhere; this package
reads those files into a `Motion` (`(T, 22, 3)` metres, Y-up) and projects it to COCO-18 for the 2D pose tools.
Pickled inputs go through a restricted unpickler (`safe_pickle`). Like every domain library it never imports
dancegen.core or dancegen.methods; names load on first access so `import dancegen.motion` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Motion": "dancegen.motion.io",
    "read_motion": "dancegen.motion.io",
    "read_bvh": "dancegen.motion.io",
    "project_motion": "dancegen.motion.io",
    "is_motion_file": "dancegen.motion.io",
    "coco17_to_humanml3d22": "dancegen.motion.io",
    "bvh_forward_kinematics": "dancegen.motion.io",
    "MOTION_SUFFIXES": "dancegen.motion.io",
    "safe_unpickle": "dancegen.motion.safe_pickle",
    "RestrictedUnpickler": "dancegen.motion.safe_pickle",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dancegen.motion' has no attribute {name!r}")
