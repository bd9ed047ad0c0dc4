"""Small data builders shared by several test files (not a test module)."""

from __future__ import annotations

import numpy as np

from dancegen.pose.sequence import PoseSequence

# A standing COCO-18 person in a 128x128 image.
STAND = np.array([
    [64, 20], [64, 34], [54, 34], [50, 50], [48, 64], [74, 34], [78, 50], [80, 64], [58, 68], [57, 90], [57, 112],
    [70, 68], [71, 90], [71, 112], [61, 17], [67, 17], [58, 19], [70, 19]], np.float32)


def dance_sequence(num_frames=6, scale=1.0, shift=(0.0, 0.0)) -> PoseSequence:
    """The standing person waving the right wrist and drifting right one pixel per frame, at 10 fps."""
    kps = np.zeros((num_frames, 18, 3), np.float32)
    for t in range(num_frames):
        xy = (STAND - [64, 64]) * scale + [64 + shift[0], 64 + shift[1]]
        xy[4] += [-6 * np.sin(t), -8 * t / num_frames]
        xy[:, 0] += t
        kps[t, :, :2] = xy
        kps[t, :, 2] = 0.9
    return PoseSequence(kps, "coco18", 128, 128, fps=10)
