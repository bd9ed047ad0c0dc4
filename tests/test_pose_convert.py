"""Pose format converters and 3D projection (dancegen.pose.convert)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dancegen.pose.convert import (
    FORMATS,
    Camera,
    aist_keypoints3d_to_coco18,
    convert,
    fit_camera,
    humanml3d_to_coco18,
    neck_from_shoulders,
    project_joints,
    rodrigues,
)
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18, HUMANML3D22, get_skeleton

# Same-point aliases, written out here independently of the module.
ALIAS = {"l_foot_index": "l_big_toe", "r_foot_index": "r_big_toe"}


def body_names(fmt: str) -> list[str]:
    """Canonical joint names of the body part of a layout (DWPose face/hands excluded)."""
    names = get_skeleton(fmt).joints
    if fmt == "dwpose133":
        names = names[:23]
    return [ALIAS.get(n, n) for n in names]


def make_seq(fmt: str, f: int = 4, seed: int = 0, with_parts: bool = True) -> PoseSequence:
    rng = np.random.default_rng(seed)
    j = get_skeleton(fmt).num_joints
    kps = np.concatenate([rng.uniform(5, 500, (f, j, 2)), rng.uniform(0.05, 1.0, (f, j, 1))], -1).astype(np.float32)
    missing = rng.random((f, j)) < 0.2
    kps[missing] = 0.0
    hands = face = None
    if with_parts and fmt != "dwpose133":
        hands = np.concatenate([rng.uniform(5, 500, (f, 2, 21, 2)), rng.uniform(0, 1, (f, 2, 21, 1))], -1)
        face = np.concatenate([rng.uniform(5, 500, (f, 68, 2)), rng.uniform(0, 1, (f, 68, 1))], -1)
    return PoseSequence(kps, format=fmt, width=512, height=512, fps=25.0, hands=hands, face=face)


@pytest.mark.parametrize("a,b", list(itertools.permutations(FORMATS, 2)))
def test_round_trip_keeps_shared_joints_exactly(a, b):
    seq = make_seq(a)
    back = convert(convert(seq, b), a)
    assert back.format == a and back.keypoints.shape == seq.keypoints.shape
    assert (back.width, back.height, back.fps) == (512, 512, 25.0)
    names_a, names_b = body_names(a), set(body_names(b))
    for i, name in enumerate(names_a):
        if name in names_b:
            np.testing.assert_array_equal(back.keypoints[:, i], seq.keypoints[:, i], err_msg=name)
        elif name == "neck":  # re-derived from the shoulders
            li, ri = names_a.index("l_shoulder"), names_a.index("r_shoulder")
            exp = neck_from_shoulders(seq.keypoints[:, li], seq.keypoints[:, ri])
            np.testing.assert_array_equal(back.keypoints[:, i], exp)
        else:  # not representable in b: comes back missing
            assert (back.keypoints[:, i] == 0).all(), name
    if a == "dwpose133":  # face and hands survive every intermediate format through .hands/.face
        np.testing.assert_array_equal(back.keypoints[:, 23:], seq.keypoints[:, 23:])
    else:
        np.testing.assert_array_equal(back.hands, seq.hands)
        np.testing.assert_array_equal(back.face, seq.face)


def test_neck_rule_and_confidence():
    sh = lambda x, y, c: np.array([[x, y, c]], np.float32)  # noqa: E731
    kp = np.zeros((3, 17, 3), np.float32)
    li, ri = get_skeleton("coco17").index("l_shoulder"), get_skeleton("coco17").index("r_shoulder")
    kp[0, li], kp[0, ri] = sh(200, 100, 0.9), sh(100, 120, 0.5)
    kp[1, li], kp[1, ri] = sh(200, 100, 0.9), sh(100, 120, 0.3)  # exactly 0.3 is not above the threshold
    kp[2, li], kp[2, ri] = sh(200, 100, 0.31), sh(100, 120, 0.0)
    out = convert(PoseSequence(kp, format="coco17"), "coco18")
    neck = out.keypoints[:, COCO18.index("neck")]
    np.testing.assert_allclose(neck[0], [150, 110, 0.5])
    assert (neck[1:] == 0).all()
    # shoulders themselves are copied with their own confidence
    np.testing.assert_array_equal(out.keypoints[1, COCO18.index("r_shoulder")], np.float32([100, 120, 0.3]))


def test_dwpose_hands_face_and_feet():
    seq = make_seq("dwpose133", f=2)
    out = convert(seq, "coco18")
    np.testing.assert_array_equal(out.hands[:, 0], seq.keypoints[:, 91:112])
    np.testing.assert_array_equal(out.hands[:, 1], seq.keypoints[:, 112:133])
    np.testing.assert_array_equal(out.face, seq.keypoints[:, 23:91])
    # coco18 body order: r_shoulder is COCO-17 joint 6
    np.testing.assert_array_equal(out.keypoints[:, 2], seq.keypoints[:, 6])
    # feet: heels are shared with MediaPipe, the big toe is MediaPipe's foot_index, small toes are dropped
    mp = convert(seq, "mediapipe33")
    mpi = get_skeleton("mediapipe33").index
    np.testing.assert_array_equal(mp.keypoints[:, mpi("l_heel")], seq.keypoints[:, 19])
    np.testing.assert_array_equal(mp.keypoints[:, mpi("r_foot_index")], seq.keypoints[:, 20])
    assert convert(mp, "dwpose133").keypoints[:, 18].max() == 0  # l_small_toe has no MediaPipe counterpart
    assert convert(seq, "dwpose133").hands is None


def test_openpose_face70_to_dwpose_keeps_68():
    seq = make_seq("coco18", f=2)
    seq = seq.replace(face=np.concatenate([seq.face, np.ones((2, 2, 3), np.float32)], 1))
    dw = convert(seq, "dwpose133")
    np.testing.assert_array_equal(dw.keypoints[:, 23:91], seq.face[:, :68])
    assert dw.face is None and dw.hands is None


def test_mediapipe_eyes_ears_and_missing_stay_missing():
    mp = make_seq("mediapipe33", f=2)
    mpi = get_skeleton("mediapipe33").index
    mp.keypoints[:, mpi("l_ear")] = 0.0  # missing in the source
    c18 = convert(mp, "coco18")
    np.testing.assert_array_equal(c18.keypoints[:, COCO18.index("l_eye")], mp.keypoints[:, mpi("l_eye")])
    np.testing.assert_array_equal(c18.keypoints[:, COCO18.index("r_ear")], mp.keypoints[:, mpi("r_ear")])
    assert (c18.keypoints[:, COCO18.index("l_ear")] == 0).all()
    # COCO-18 -> MediaPipe: eye corners, mouth, hand points are missing, not invented
    back = convert(c18, "mediapipe33")
    for name in ("l_eye_inner", "mouth_l", "l_pinky", "r_thumb", "l_heel"):
        assert (back.keypoints[:, mpi(name)] == 0).all(), name


def test_convert_rejects_unknown_format():
    with pytest.raises(ValueError, match="humanml3d22"):
        convert(make_seq("coco18"), "humanml3d22")


def test_aist_is_coco17_order():
    seq = make_seq("coco17")
    out = convert(seq, "aist")
    np.testing.assert_array_equal(out.keypoints, seq.keypoints)


# ----------------------------------------------------------------------------------------------------------------- 3D


def test_project_joints_pinhole_numbers():
    cam = Camera(fx=100, fy=200, cx=50, cy=60, R=np.eye(3), t=[0, 0, 5])
    uv, z = project_joints(np.array([[[1.0, 2.0, 0.0], [0.0, 0.0, -6.0]]]), cam, return_depth=True)
    np.testing.assert_allclose(uv[0, 0], [100 * 1 / 5 + 50, 200 * 2 / 5 + 60])
    assert z[0, 0] == 5 and np.isnan(uv[0, 1]).all()  # second point is behind the camera


def test_look_at_and_rodrigues():
    cam = Camera.look_at(eye=[0, 1, 4], target=[0, 1, 0], width=320, height=240)
    uv = project_joints(np.array([[[0, 1, 0], [0.5, 1, 0], [0, 1.5, 0]]]), cam)[0]
    np.testing.assert_allclose(uv[0], [160, 120], atol=1e-9)
    assert uv[1, 0] > 160 and uv[2, 1] < 120  # +X is image right, +Y (up) is image up
    np.testing.assert_allclose(cam.center, [0, 1, 4], atol=1e-12)
    import cv2

    r = np.array([0.3, -1.2, 0.5])
    np.testing.assert_allclose(rodrigues(r), cv2.Rodrigues(r)[0], atol=1e-12)


def tpose(facing: float = 0.0) -> np.ndarray:
    """A (2, 22, 3) HumanML3D-like T-pose facing +Z (rotated by `facing` radians about Y), second frame moved."""
    p = {
        "pelvis": (0, 0.95, 0),
        "l_hip": (0.09, 0.88, 0),
        "r_hip": (-0.09, 0.88, 0),
        "spine1": (0, 1.05, 0),
        "l_knee": (0.1, 0.5, 0),
        "r_knee": (-0.1, 0.5, 0),
        "spine2": (0, 1.18, 0),
        "l_ankle": (0.1, 0.08, 0),
        "r_ankle": (-0.1, 0.08, 0),
        "spine3": (0, 1.3, 0),
        "l_foot": (0.1, 0.02, 0.12),
        "r_foot": (-0.1, 0.02, 0.12),
        "neck": (0, 1.5, 0),
        "l_collar": (0.07, 1.42, 0),
        "r_collar": (-0.07, 1.42, 0),
        "head": (0, 1.6, 0.02),
        "l_shoulder": (0.18, 1.43, 0),
        "r_shoulder": (-0.18, 1.43, 0),
        "l_elbow": (0.45, 1.43, 0),
        "r_elbow": (-0.45, 1.43, 0),
        "l_wrist": (0.7, 1.43, 0),
        "r_wrist": (-0.7, 1.43, 0),
    }
    j = np.array([p[n] for n in HUMANML3D22.joints], np.float64)
    c, s = np.cos(facing), np.sin(facing)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    j = j @ rot.T
    return np.stack([j, j + [0.2, 0, 0]])


def test_humanml3d_front_view_face_layout():
    j = tpose()
    cam = Camera.look_at([0, 1.0, 4.0], [0, 1.0, 0], width=256, height=256)
    seq = humanml3d_to_coco18(j, cam, 256, 256, fps=20)
    assert seq.format == "coco18" and seq.num_frames == 2 and seq.fps == 20
    k = {n: seq.keypoints[0, i] for i, n in enumerate(COCO18.joints)}
    assert all(v[2] == 1.0 for v in k.values())
    # person faces the camera: their left is on the image right
    assert k["l_shoulder"][0] > k["neck"][0] > k["r_shoulder"][0]
    assert k["l_eye"][0] > k["nose"][0] > k["r_eye"][0]
    assert k["l_ear"][0] > k["l_eye"][0] and k["r_ear"][0] < k["r_eye"][0]
    assert k["l_eye"][1] < k["nose"][1] < k["neck"][1]  # eyes above the nose, above the neck
    np.testing.assert_allclose(k["neck"][:2], (k["l_shoulder"][:2] + k["r_shoulder"][:2]) / 2, atol=1e-4)
    # every joint projects through the camera: the second frame moved +0.2 m in X -> right in the image
    assert (seq.keypoints[1, :, 0] > seq.keypoints[0, :, 0]).all()


def test_humanml3d_back_view_hides_face_and_swaps_sides():
    seq = humanml3d_to_coco18(tpose(np.pi), Camera.look_at([0, 1.0, 4.0], [0, 1.0, 0]), 256, 256)
    k = {n: seq.keypoints[0, i] for i, n in enumerate(COCO18.joints)}
    assert k["nose"][2] == 0 and k["l_eye"][2] == 0 and k["r_eye"][2] == 0
    assert k["l_ear"][2] == 1 and k["r_ear"][2] == 1
    assert k["l_shoulder"][0] < k["r_shoulder"][0]


def test_fit_camera_keeps_motion_in_frame():
    seq = humanml3d_to_coco18(tpose(), None, 200, 300)
    xy = seq.xy[seq.conf > 0]
    assert (xy[:, 0] > 0).all() and (xy[:, 0] < 200).all() and (xy[:, 1] > 0).all() and (xy[:, 1] < 300).all()
    cam = fit_camera(tpose(), 200, 300)
    assert cam.center[2] > 1.0  # in front of the actor (+Z)


def test_aist_keypoints3d_projection():
    j = tpose()
    names = get_skeleton("coco17").joints
    idx = {n: HUMANML3D22.index(n) if n in HUMANML3D22.joints else HUMANML3D22.index("head") for n in names}
    k3 = np.stack([j[:, idx[n]] for n in names], 1) * 100  # cm
    k3[1, 0] = np.nan  # a lost nose
    cam = Camera.from_aist(
        {
            "matrix": [[800, 0, 320], [0, 800, 240], [0, 0, 1]],
            "rotation": [0.0, np.pi, 0.0],
            "translation": [0.0, -100.0, 400.0],
        }
    )
    seq = aist_keypoints3d_to_coco18(k3, cam, 640, 480)
    uv = project_joints(k3, cam)
    for name in ("l_wrist", "r_knee", "l_ear"):
        np.testing.assert_allclose(seq.keypoints[:, COCO18.index(name), :2], uv[:, names.index(name)], atol=1e-3)
    assert seq.keypoints[1, COCO18.index("nose")].tolist() == [0, 0, 0] and seq.keypoints[0, 0, 2] == 1
    neck = seq.keypoints[:, COCO18.index("neck"), :2]
    np.testing.assert_allclose(neck, (uv[:, 5] + uv[:, 6]) / 2, atol=1e-3)
    assert seq.fps == 60
