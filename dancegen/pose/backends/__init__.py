"""Pose-estimation backends behind `dancegen extract-pose` (BlazePose via LiteRT, DWPose via onnxruntime, SynthPose
(the bundled estimator of the synthetic world, torch), import).

Kept import-light: each backend module imports its runtime (LiteRT, onnxruntime, OpenCV) only when used.
"""

from __future__ import annotations

#: Backend names accepted by `dancegen.pose.extract.extract_poses`.
BACKENDS = ("blazepose", "dwpose", "synthpose", "openpose-json")
