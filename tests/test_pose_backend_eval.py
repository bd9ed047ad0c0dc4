"""PCK on hand-made pose arrays (dancegen.pose.backends.eval)."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.pose.backends.eval import pck
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18


def _gt(frames: int = 2) -> PoseSequence:
    kp = np.zeros((frames, 18, 3), np.float32)
    idx = COCO18.index
    pts = {
        "nose": (50, 10),
        "neck": (50, 30),
        "r_shoulder": (40, 30),
        "l_shoulder": (60, 30),
        "r_hip": (45, 70),
        "l_hip": (55, 70),
        "r_ear": (45, 8),
        "l_ear": (55, 8),
        "r_knee": (45, 90),
    }
    for n, (x, y) in pts.items():
        kp[:, idx(n)] = (x, y, 1.0)
    return PoseSequence(kp, "coco18", width=100, height=100, fps=10)


def test_perfect_prediction_is_one_and_misses_count():
    gt = _gt()
    assert pck(gt, gt)["pck"] == 1.0
    pred = gt.replace()
    # torso = |shoulder mid (50,30) - hip mid (50,70)| = 40 -> PCK@0.2 radius 8 px.
    pred.keypoints[0, COCO18.index("nose"), 0] += 7.9  # inside
    pred.keypoints[1, COCO18.index("nose"), 0] += 8.1  # outside
    pred.keypoints[:, COCO18.index("r_knee"), 2] = 0  # not detected -> miss
    r = pck(pred, gt, threshold=0.2, normalise="torso")
    assert r["num_evaluated"] == 18 and r["num_correct"] == 15
    assert r["pck"] == pytest.approx(15 / 18)
    assert r["per_joint"]["nose"] == 0.5 and r["per_joint"]["r_knee"] == 0.0
    assert r["per_joint"]["r_wrist"] is None  # never visible in gt


def test_normalisers_change_the_radius():
    gt = _gt(1)
    pred = gt.replace()
    pred.keypoints[0, :, 0] += 6.0
    vis = gt.conf[0] > 0
    assert pck(pred, gt, 0.2, "torso")["pck"] == 1.0  # radius 8
    assert pck(pred, gt, 0.5, "head")["pck"] == 0.0  # ears 10 apart -> radius 5
    assert pck(pred, gt, 0.1, "bbox")["pck"] == 1.0  # bbox 20 x 82 -> radius 8.2
    assert vis.sum() == 9


def test_frames_without_scale_are_skipped_and_formats_convert():
    gt = _gt(2)
    gt.keypoints[1, COCO18.index("l_hip"), 2] = 0  # torso unmeasurable in frame 1
    r = pck(gt, gt, normalise="torso")
    assert r["frames_skipped"] == 1 and r["num_evaluated"] == 9
    # A prediction in COCO-17 at twice the resolution is converted and rescaled before comparing.
    from dancegen.pose.convert import convert

    pred = convert(gt, "coco17").resized(200, 200)
    assert pck(pred, gt)["pck"] == 1.0
    from dancegen.errors import InputError

    with pytest.raises(InputError, match="1 frames, gt has 2"):  # mismatched lengths: a user-facing error
        pck(gt[:1], gt)
    with pytest.raises(ValueError):
        pck(gt, gt, normalise="hand")
