"""Pose-driven motion flow (DYL §4.4.1 from skeletons alone): exactness under rigid motion, locality, warping."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dancegen.flow.pose_flow import person_size, pose_flow, pose_flow_to_reference, pose_sequence_flow
from dancegen.flow.warp import backward_warp
from dancegen.pose.sequence import PoseSequence

H = W = 256
# COCO-18 offsets from the centre: nose neck rsh relb rwri lsh lelb lwri rhip rknee rank lhip lknee lank reye leye
# rear lear.
_STAND = np.array([
    [0, -80], [0, -60], [-25, -58], [-45, -30], [-60, -5], [25, -58], [45, -30], [60, -5],
    [-15, 0], [-18, 40], [-20, 80], [15, 0], [18, 40], [20, 80], [-5, -85], [5, -85], [-10, -82], [10, -82],
], np.float64)


def standing(cx=128.0, cy=128.0, s=1.0) -> np.ndarray:
    k = np.ones((18, 3), np.float32)
    k[:, :2] = _STAND * s + [cx, cy]
    return k


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _body(flow_a, flow_b=None):
    m = np.abs(flow_a).sum(0) > 0
    return m if flow_b is None else m | (np.abs(flow_b).sum(0) > 0)


def test_pure_translation_is_exact_on_body_and_zero_elsewhere():
    a = standing()
    b = a.copy()
    b[:, :2] += [3.5, -2.0]
    f = pose_flow(a, b, "coco18", H, W)
    assert f.shape == (2, H, W) and f.dtype == np.float32
    body = _body(f)
    assert 0.05 < body.mean() < 0.4
    np.testing.assert_allclose(f[0][body], 3.5, atol=1e-4)
    np.testing.assert_allclose(f[1][body], -2.0, atol=1e-4)
    assert (f[:, :10, :] == 0).all() and (f[:, :, :40] == 0).all()  # background far from the body is static
    for name in ("r_wrist", "nose", "l_ankle"):  # every joint location is on the body
        x, y = a[["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
                  "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle"].index(name), :2].astype(int)
        assert body[y, x]


def test_identical_poses_give_zero_flow():
    a = standing()
    assert np.abs(pose_flow(a, a.copy(), "coco18", H, W)).max() < 1e-6


def test_rotating_forearm_is_rotational_and_local():
    a = standing()
    b = a.copy()
    elbow, wrist = a[3, :2].astype(np.float64), a[4, :2].astype(np.float64)
    R = _rot(np.deg2rad(30))
    b[4, :2] = elbow + R @ (wrist - elbow)
    f = pose_flow(a, b, "coco18", H, W)
    v = wrist - elbow
    n = np.array([-v[1], v[0]]) / np.linalg.norm(v)
    for t in (0.5, 0.75, 1.0):
        for off in (-2.0, 0.0, 2.0):  # on and beside the bone axis
            p = np.round(elbow + t * v + off * n).astype(int)
            expected = elbow + R @ (p - elbow) - p
            np.testing.assert_allclose(f[:, p[1], p[0]], expected, atol=0.05)
    assert np.abs(f[:, 150:215, 100:118]).max() < 1e-6  # still right leg
    assert np.abs(f[:, 150:215, 138:156]).max() < 1e-6  # still left leg
    p = np.round(a[2, :2] + 0.3 * (elbow - a[2, :2])).astype(int)  # upper arm near the shoulder
    assert np.abs(f[:, p[1], p[0]]).max() < 1e-3


def test_rigid_rotation_of_whole_skeleton_is_exact_on_body():
    a = standing()
    b = a.copy()
    c = np.array([128.0, 128.0])
    R = _rot(np.deg2rad(8))
    b[:, :2] = (a[:, :2] - c) @ R.T + c
    f = pose_flow(a, b, "coco18", H, W)
    body = _body(f)
    ys, xs = np.nonzero(body)
    p = np.stack([xs, ys], 1).astype(np.float64)
    expected = (p - c) @ R.T + c - p
    np.testing.assert_allclose(f[0][body], expected[:, 0], atol=1e-3)
    np.testing.assert_allclose(f[1][body], expected[:, 1], atol=1e-3)


def test_missing_joint_drops_its_bones():
    a = standing()
    b = a.copy()
    b[:, :2] += [4.0, 0.0]
    b[4, 2] = 0.0  # right wrist missing in frame b: the forearm contributes nothing
    f = pose_flow(a, b, "coco18", H, W)
    x, y = a[4, :2].astype(int)
    assert (f[:, y, x] == 0).all()
    x, y = a[7, :2].astype(int)  # the other wrist still moves
    np.testing.assert_allclose(f[:, y, x], [4.0, 0.0], atol=1e-4)
    none = a.copy()
    none[:, 2] = 0
    assert (pose_flow(none, b, "coco18", H, W) == 0).all()


def test_support_radius_scales_with_person_and_is_a_parameter():
    a, b = standing(), standing()
    b[:, :2] += 2
    small = _body(pose_flow(a, b, "coco18", H, W)).sum()
    a2, b2 = standing(s=1.5), standing(s=1.5)
    b2[:, :2] += 2
    big = _body(pose_flow(a2, b2, "coco18", H, W)).sum()
    assert 1.8 < big / small < 2.8  # area ~ scale^2 = 2.25
    thin = _body(pose_flow(a, b, "coco18", H, W, limb_width=3)).sum()
    assert thin < 0.6 * small
    assert person_size(a) == pytest.approx(165.0)


def test_hands_move_with_their_bones():
    a = standing()
    b = a.copy()
    b[:, :2] += [0.0, 3.0]
    hand = np.zeros((2, 21, 3), np.float32)
    ang = np.linspace(-0.6, 0.6, 5)
    for f_i in range(5):  # five straight fingers fanning out below the left wrist
        for j in range(4):
            hand[1, 1 + 4 * f_i + j] = [60 + 128 + (j + 1) * 5 * np.sin(ang[f_i]), 123 + (j + 1) * 5 * np.cos(ang[f_i]), 1]
    hand[1, 0] = [188, 123, 1]
    hb = hand.copy()
    hb[1, :, 1] += 6.0  # the hand moves 6 px down while the body moves 3
    f = pose_flow(a, b, "coco18", H, W, hands_a=hand, hands_b=hb)
    x, y = np.round(hand[1, 11, :2]).astype(int)  # on the middle finger, 15 px from the wrist
    np.testing.assert_allclose(f[:, y, x], [0.0, 6.0], atol=1e-3)
    no_hands = pose_flow(a, b, "coco18", H, W)
    assert (no_hands[:, y, x] == 0).all()  # without hand keypoints the fingers are outside the body support


def test_pose_flow_moves_the_pose_map_back():
    """Warping frame b's pose map with flow a->b reproduces frame a's map much better than zero flow."""
    from dancegen.pose.render import draw_pose

    a = standing()
    b = a.copy()
    b[:, :2] += [5.0, 2.0]
    for j, pivot, deg in ((4, 3, 35), (7, 6, -25), (10, 9, 20), (3, 2, 15)):
        R = _rot(np.deg2rad(deg))
        moving = {3: [3, 4], 4: [4], 7: [7], 10: [10]}[j]
        for m in moving:
            b[m, :2] = b[pivot, :2] + R @ (b[m, :2] - b[pivot, :2])
    map_a = draw_pose(a, W, H).astype(np.float32)
    map_b = draw_pose(b, W, H).astype(np.float32)
    f = pose_flow(a, b, "coco18", H, W)
    warped = backward_warp(map_b.transpose(2, 0, 1), f).transpose(1, 2, 0)
    err_zero = np.abs(map_b - map_a).mean()
    err_flow = np.abs(warped - map_a).mean()
    assert err_flow < 0.35 * err_zero, (err_flow, err_zero)


def _walk(frames=5):
    ks = []
    for t in range(frames):
        k = standing(cx=100 + 6 * t)
        R = _rot(np.deg2rad(10 * np.sin(t)))
        k[4, :2] = k[3, :2] + R @ (k[4, :2] - k[3, :2])
        ks.append(k)
    return PoseSequence(np.stack(ks), "coco18", W, H, fps=10.0)


def test_sequence_directions_and_reference():
    seq = _walk(4)
    fw = pose_sequence_flow(seq, "forward")
    bw = pose_sequence_flow(seq, "backward")
    assert fw.shape == bw.shape == (3, 2, H, W)
    lw = 0.05 * float(np.median([person_size(k) for k in seq.keypoints]))
    np.testing.assert_array_equal(fw[1], pose_flow(seq.keypoints[1], seq.keypoints[2], "coco18", H, W, limb_width=lw))
    np.testing.assert_array_equal(bw[1], pose_flow(seq.keypoints[2], seq.keypoints[1], "coco18", H, W, limb_width=lw))
    body = _body(fw[0])
    np.testing.assert_allclose(fw[0][0][body].mean(), 6.0, atol=0.5)  # walking right by 6 px per frame
    ref = np.array([1, 1, 1, 2])
    r = pose_flow_to_reference(seq, ref)
    assert r.shape == (4, 2, H, W)
    assert (r[1] == 0).all() and np.abs(r[2]).max() > 1  # r(1) = 1: identity; frame 2 -> 1 moves
    np.testing.assert_array_equal(r[2], bw[1])
    np.testing.assert_array_equal(r[0], fw[0])
    np.testing.assert_array_equal(r[3], bw[2])
    np.testing.assert_array_equal(pose_sequence_flow(seq, reference=ref), r)
    with pytest.raises(ValueError, match="reference"):
        pose_flow_to_reference(seq, [0, 1, 2, 9])


def test_other_skeletons_and_errors():
    from dancegen.pose.convert import convert

    seq = _walk(2)
    c17 = convert(seq, "coco17")
    f = pose_sequence_flow(c17, "forward")
    body = _body(f[0])
    np.testing.assert_allclose(f[0, 0][body].mean(), 6.0, atol=0.6)
    with pytest.raises(ValueError, match="2D"):
        pose_flow(np.ones((22, 3)), np.ones((22, 3)), "humanml3d22", 64, 64)
    with pytest.raises(ValueError, match="keypoints"):
        pose_flow(np.ones((17, 3)), np.ones((17, 3)), "coco18", 64, 64)


def test_speed_256():
    a = standing()
    b = a.copy()
    b[:, :2] += 2
    b[4, :2] += [5, -3]
    pose_flow(a, b, "coco18", H, W)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        pose_flow(a, b, "coco18", H, W)
        times.append(time.perf_counter() - t)
    assert min(times) < 0.15, times  # typically ~20 ms on 2 shared cores
