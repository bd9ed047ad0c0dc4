"""BlazePose on a cartoon person drawn with OpenCV (filled torso, limbs, head; stack-notes.md §2).

`draw_cartoon` is also used by test_extract_pose.py. The joints are drawn at `JOINTS`; the default backend must put
the corresponding MediaPipe landmarks near them, on the correct sides.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import skip_or_fail_without_models

#: Drawn joint centres (x, y) on a 360x480 canvas. The person faces the camera, so the person's right ("r_") is on
#: the image's left.
JOINTS = {
    "head": (180, 92),
    "neck": (180, 138),
    "r_shoulder": (138, 152),
    "l_shoulder": (222, 152),
    "r_elbow": (118, 218),
    "l_elbow": (242, 218),
    "r_wrist": (108, 282),
    "l_wrist": (252, 282),
    "r_hip": (157, 282),
    "l_hip": (203, 282),
    "r_knee": (152, 366),
    "l_knee": (208, 366),
    "r_ankle": (149, 446),
    "l_ankle": (211, 446),
    "r_eye": (169, 88),
    "l_eye": (191, 88),
}


def draw_cartoon(width: int = 360, height: int = 480, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """`(height, width, 3)` uint8 RGB cartoon person; `shift` moves the whole figure by (dx, dy) pixels."""
    import cv2

    img = np.empty((height, width, 3), np.uint8)
    img[:] = np.linspace(225, 190, height)[:, None, None].astype(np.uint8)
    img[int(height * 0.93) :] = (150, 135, 120)
    p = {k: np.array(v, float) + shift for k, v in JOINTS.items()}
    skin, shirt, trousers, shoe = (230, 190, 160), (200, 50, 50), (40, 60, 140), (30, 30, 30)

    def pt(a):
        return int(round(a[0])), int(round(a[1]))

    def limb(a, b, color, t):
        cv2.line(img, pt(a), pt(b), color, t, cv2.LINE_AA)

    for s in ("r", "l"):
        limb(p[f"{s}_hip"], p[f"{s}_knee"], trousers, 26)
        limb(p[f"{s}_knee"], p[f"{s}_ankle"], trousers, 22)
        a = p[f"{s}_ankle"] + (-8 if s == "r" else 8, 8)
        cv2.ellipse(img, pt(a), (18, 9), 0, 0, 360, shoe, -1, cv2.LINE_AA)
    torso = (
        np.array([p["r_shoulder"] + (-6, -4), p["l_shoulder"] + (6, -4), p["l_hip"] + (10, 6), p["r_hip"] + (-10, 6)])
        .round()
        .astype(np.int32)
    )
    cv2.fillPoly(img, [torso], shirt, cv2.LINE_AA)
    for s in ("r", "l"):
        limb(p[f"{s}_shoulder"], p[f"{s}_elbow"], shirt, 20)
        limb(p[f"{s}_elbow"], p[f"{s}_wrist"], skin, 16)
        cv2.circle(img, pt(p[f"{s}_wrist"] + (0, 8)), 10, skin, -1, cv2.LINE_AA)
    limb(p["neck"], p["head"], skin, 24)
    head = pt(p["head"])
    cv2.ellipse(img, head, (28, 34), 0, 0, 360, skin, -1, cv2.LINE_AA)
    cv2.ellipse(img, (head[0], head[1] - 20), (30, 18), 0, 180, 360, (60, 40, 20), -1, cv2.LINE_AA)
    for eye in ("r_eye", "l_eye"):
        cv2.circle(img, pt(p[eye]), 4, (20, 20, 20), -1, cv2.LINE_AA)
    cv2.ellipse(img, (head[0], head[1] + 15), (9, 4), 0, 0, 180, (150, 40, 40), 2, cv2.LINE_AA)
    return img


def test_cartoon_is_drawn_where_the_joints_say():
    img = draw_cartoon()
    assert img.shape == (480, 360, 3) and img.dtype == np.uint8
    # Shirt red at the torso centre, trousers blue on the thigh, dark eye pixels, wall elsewhere.
    assert tuple(img[215, 180]) == (200, 50, 50)
    assert tuple(img[324, 155]) == (40, 60, 140)
    assert img[88, 169].max() < 60
    assert img[50, 40].min() > 180


@pytest.fixture(scope="module")
def estimator():
    from dancegen.errors import MissingWeightsError
    from dancegen.pose.backends.blazepose import BlazePoseEstimator

    try:
        est = BlazePoseEstimator(mode="image")
    except MissingWeightsError as e:
        skip_or_fail_without_models(f"BlazePose models not installed: {e}")
    yield est
    est.close()


# MediaPipe-33 index of each drawn joint (mid-hip/neck/head have no single landmark).
MP_INDEX = {
    "r_shoulder": 12,
    "l_shoulder": 11,
    "r_elbow": 14,
    "l_elbow": 13,
    "r_wrist": 16,
    "l_wrist": 15,
    "r_hip": 24,
    "l_hip": 23,
    "r_knee": 26,
    "l_knee": 25,
    "r_ankle": 28,
    "l_ankle": 27,
    "r_eye": 5,
    "l_eye": 2,
}
# Pixels. Where the drawing is ambiguous the model settles a little higher than our joint centres (as MediaPipe
# itself does on this image): hips inside a filled trunk, wrists where forearm and hand blob meet, ankles above
# the shoe.
TOLERANCE = {"r_hip": 20, "l_hip": 20, "r_wrist": 22, "l_wrist": 22, "r_ankle": 20, "l_ankle": 20}


def test_cartoon_joints_land_near_the_drawn_positions(estimator):
    kps, mask = estimator.process(draw_cartoon())
    assert kps is not None and kps.shape == (33, 3) and kps.dtype == np.float32
    for name, idx in MP_INDEX.items():
        err = np.hypot(*(kps[idx, :2] - JOINTS[name]))
        assert err < TOLERANCE.get(name, 10), f"{name}: landmark {kps[idx, :2]} vs drawn {JOINTS[name]} ({err:.1f} px)"
        assert kps[idx, 2] > 0.7, f"{name} visibility {kps[idx, 2]}"
    # Left/right not swapped: the person's left is on the image's right for every pair.
    for a, b in [(11, 12), (13, 14), (15, 16), (23, 24), (25, 26), (27, 28), (2, 5), (7, 8)]:
        assert kps[a, 0] > kps[b, 0]
    nose = kps[0, :2]
    assert np.hypot(*(nose - (180, 100))) < 12  # no nose is drawn: it belongs between the eyes and the mouth
    # The person mask covers the torso and not the wall.
    assert mask.shape == (480, 360) and mask.dtype == np.float32
    assert mask[215, 180] > 0.9 and mask[300, 150] > 0.9 and mask[40, 40] < 0.05 and mask[240, 330] < 0.05


def test_cartoon_detector_and_roi(estimator):
    from dancegen.pose.backends.blazepose import roi_from_points

    dets = estimator.detect(draw_cartoon())
    assert len(dets) == 1 and dets[0].score > 0.9
    hip_mid = (np.array(JOINTS["r_hip"]) + JOINTS["l_hip"]) / 2
    assert np.hypot(*(dets[0].keypoints[0] - hip_mid)) < 30  # keypoint 0 is the mid-hip centre
    roi = roi_from_points(dets[0].keypoints[0], dets[0].keypoints[1])
    assert abs(roi.rotation) < 0.1  # upright person -> no rotation
    assert 450 < roi.size < 650  # covers the ~400 px tall body with the 1.25 margin


def test_rotated_cartoon_is_found_through_the_rotated_roi(estimator):
    import cv2

    img = draw_cartoon(480, 480, shift=(60, 0))
    rot = cv2.getRotationMatrix2D((240, 240), -90, 1.0)  # person lying with the head on the image's right
    img = cv2.warpAffine(img, rot, (480, 480), borderMode=cv2.BORDER_REPLICATE)
    kps, _ = estimator.process(img)
    assert kps is not None
    assert abs(estimator.last_roi.rotation - np.pi / 2) < 0.25
    for name, idx in [("l_shoulder", 11), ("r_knee", 26), ("l_wrist", 15)]:
        expected = rot @ np.array([JOINTS[name][0] + 60, JOINTS[name][1], 1.0])
        assert np.hypot(*(kps[idx, :2] - expected)) < 16, name


def test_cartoon_matches_mediapipe_0_10_21(estimator):
    """MediaPipe's own graph on this very drawing (recorded in tests/fixtures/photos/mediapipe_reference.json)."""
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "fixtures/photos/mediapipe_reference.json").read_text())
    r = np.asarray(ref["images"]["cartoon.png"]["keypoints"])
    kps, mask = estimator.process(draw_cartoon())
    err = np.hypot(*(kps[:, :2] - r[:, :2]).T)
    assert np.median(err) < 0.6 and err.max() < 2.0, (np.median(err), err.max())
    assert np.abs(kps[:, 2] - r[:, 2]).max() < 0.03
    assert abs(mask.mean() - ref["images"]["cartoon.png"]["mask_mean"]) < 0.002
