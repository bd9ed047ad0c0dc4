"""The held-out quality protocol of Dance-Your-Latents (quality.clip_scores) on constructed videos."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.methods.dance_your_latents.quality import clip_scores


def _moving_square(n=6, size=48, step=2):
    v = np.full((n, size, size, 3), 30, np.uint8)
    for t in range(n):
        v[t, 16:28, 8 + step * t:20 + step * t] = (220, 180, 40)
    return v


def test_ground_truth_scores_itself_perfectly_and_a_static_copy_does_not():
    gt = _moving_square()
    same = clip_scores(gt, gt)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    static = clip_scores(np.repeat(gt[:1], len(gt), 0), gt)
    assert static["adjacent_mse"] == 0.0 and static["psnr"] < 30 and static["ssim"] < 1.0
    # the warping error uses the ground truth's motion: the real video follows it, a frozen one does not
    assert same["warp_error"] < 0.5 * static["warp_error"]
    flicker = gt.copy()
    flicker[1::2] = np.clip(flicker[1::2].astype(int) + 40, 0, 255).astype(np.uint8)
    assert clip_scores(flicker, gt)["adjacent_mse"] > 3 * same["adjacent_mse"]  # measured 1993 vs 408


def test_pose_scores_use_the_estimator_on_frames_after_the_reference():
    """pose_error: the estimator's joints on generated frames 1.. against the driving poses' visible joints."""
    seen = []

    def fake(frames):
        seen.append(len(frames))
        k = np.zeros((len(frames), 18, 3), np.float32)
        k[..., :2] = frames[:, 0, 0, :2].astype(np.float32)[:, None]  # a "pose" that reads the top-left pixel
        return k  # confidence 0 everywhere: every joint's location is scored anyway

    gt = _moving_square()
    driving = np.zeros((len(gt), 18, 3), np.float32)
    driving[..., :2] = gt[:, 0, 0, :2].astype(np.float32)[:, None, :]
    driving[..., 2] = 1
    driving[:, 17, 2] = 0  # a hidden joint is not scored
    driving[0, :, :2] = 500  # frame 0 (the reference) is not scored either
    pred = gt.copy()
    pred[1:, 0, 0, 0] += 24  # every generated frame 24 px off in x: 0.5 of the width
    pred[1:, 0, 0, 1] += 1  # and 1 px in y for the hidden joint to be off too
    r = clip_scores(pred, gt, pose_fn=fake, driving=driving)
    assert seen == [5] and r["pose_error"] == pytest.approx(np.hypot(24, 1) / 48) and r["pose_pck"] == 0.0
    same = clip_scores(gt, gt, pose_fn=fake, driving=driving)
    assert same["pose_error"] == 0.0 and same["pose_pck"] == 1.0
    assert "pose_error" not in clip_scores(gt, gt, pose_fn=fake)  # no driving poses, no pose metrics


def test_motion_iou_compares_where_the_videos_changed():
    from dancegen.methods.dance_your_latents.quality import motion_iou

    gt = _moving_square()
    assert motion_iou(gt, gt) == 1.0 and clip_scores(gt, gt)["motion_iou"] == 1.0
    assert motion_iou(np.repeat(gt[:1], len(gt), 0), gt) == 0.0  # a still video did not move where the dancer did
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    a[1, 0, 0:2] = 200  # pred changed (0, 0), (0, 1)
    b[1, 0:2, 1] = 200  # gt changed (0, 1), (1, 1)
    a[1, 3, 3] = 20  # below the threshold: flicker, not motion
    assert motion_iou(a, b) == pytest.approx(1 / 3)
    assert motion_iou(a[:, :, :, :1].repeat(3, -1) * 0, a * 0) == 0.0  # neither moved
