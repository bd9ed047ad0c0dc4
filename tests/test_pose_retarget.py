"""Retargeting onto a reference body and Edit-Your-Motion's skeleton offset (dancegen.pose.retarget)."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.pose.retarget import height_ratio, kinematic_tree, retarget, skeleton_offset
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18

LIMBS = COCO18.limbs  # parents first, rooted at the neck
BASE_LEN = np.array([40, 40, 50, 45, 50, 45, 90, 80, 80, 90, 80, 80, 50, 12, 14, 12, 14], float)


def build(lengths, angles, root):
    """(F, 18, 3) skeleton from per-frame bone lengths (F, 17), angles (F, 17) and neck positions (F, 2)."""
    f = len(angles)
    xy = np.zeros((f, 18, 2))
    xy[:, 1] = root
    for k, (p, c) in enumerate(LIMBS):
        xy[:, c] = xy[:, p] + lengths[:, k, None] * np.stack([np.cos(angles[:, k]), np.sin(angles[:, k])], -1)
    return np.concatenate([xy, np.full((f, 18, 1), 0.9)], -1).astype(np.float32)


def driving(f=6, seed=0, vary=True):
    rng = np.random.default_rng(seed)
    base_ang = rng.uniform(-np.pi, np.pi, 17)
    ang = base_ang + rng.normal(0, 0.3, (f, 17))
    lengths = BASE_LEN * (rng.uniform(0.8, 1.2, (f, 17)) if vary else np.ones((f, 17)))
    root = np.array([256, 200]) + np.cumsum(rng.normal(0, 5, (f, 2)), 0)
    return PoseSequence(build(lengths, ang, root), width=512, height=512, fps=25.0)


def reference(seed=1, scale=1.6):
    rng = np.random.default_rng(seed)
    lengths = (BASE_LEN * scale * rng.uniform(0.9, 1.1, 17))[None]
    return PoseSequence(
        build(lengths, rng.uniform(-np.pi, np.pi, (1, 17)), np.array([[300, 150]])), width=640, height=480
    )


def bones(kps, tree):
    xy = kps[..., :2].astype(np.float64)
    xy = np.concatenate([xy, (xy[:, 8:9] + xy[:, 11:12]) / 2], 1)
    p, c = np.array(tree).T
    v = xy[:, c] - xy[:, p]
    n = np.linalg.norm(v, axis=-1)
    return n, v / n[..., None]


@pytest.mark.parametrize("root", ["neck", "mid_hip"])
def test_bone_lengths_from_reference_directions_from_driving(root):
    drv, ref = driving(), reference()
    out = retarget(drv, ref, root=root)
    tree = kinematic_tree(root)
    len_out, dir_out = bones(out.keypoints, tree)
    len_ref, _ = bones(ref.keypoints, tree)
    _, dir_drv = bones(drv.keypoints, tree)
    np.testing.assert_allclose(len_out, np.broadcast_to(len_ref, len_out.shape), atol=1e-4 * len_ref.max() + 1e-4)
    np.testing.assert_allclose(dir_out, dir_drv, atol=1e-4)
    assert (out.width, out.height, out.fps) == (640, 480, 25.0)
    np.testing.assert_array_equal(out.conf, drv.conf)


def test_root_trajectory_starts_on_reference_and_scales():
    drv, ref = driving(), reference()
    out = retarget(drv, ref)
    s = height_ratio(drv, ref)
    assert 1.3 < s < 1.9  # the reference body is about 1.6x larger
    np.testing.assert_allclose(out.keypoints[0, 1, :2], ref.keypoints[0, 1, :2], atol=1e-4)
    np.testing.assert_allclose(
        out.keypoints[:, 1, :2] - ref.keypoints[0, 1, :2],
        s * (drv.keypoints[:, 1, :2] - drv.keypoints[0, 1, :2]),
        atol=1e-3,
    )
    assert out.meta["retarget"]["scale"] == pytest.approx(s)


def test_height_ratio_by_hand():
    a = np.zeros((1, 18, 3), np.float32)
    a[0, :, 2] = 0.0
    a[0, [1, 8], :] = [[0, 0, 1], [0, 100, 1]]  # only the neck - right hip bone is visible: 100 px
    b = a.copy()
    b[0, 8, 1] = 250
    assert height_ratio(PoseSequence(a), PoseSequence(b)) == pytest.approx(2.5)


def test_self_retarget_is_identity():
    ref = reference()
    np.testing.assert_allclose(retarget(ref, ref).keypoints, ref.keypoints, atol=1e-3)
    drv = driving(vary=False)  # constant bone lengths: the body is its own first frame
    out = retarget(drv, drv[0])
    np.testing.assert_allclose(out.keypoints, drv.keypoints, atol=1e-3)


def test_missing_joints_and_bones():
    drv, ref = driving(), reference()
    drv.keypoints[2, 3] = 0.0  # r_elbow missing in frame 2 -> r_wrist (child) is placed by the global map
    drv.keypoints[:, 16] = 0.0  # r_ear missing everywhere
    drv.keypoints[4, 5, 2] = 0.2  # l_shoulder below threshold in frame 4 (kept, with its confidence)
    ref.keypoints[0, 12] = 0.0  # the reference has no l_knee -> bones 11->12 and 12->13 use s * driving length
    out = retarget(drv, ref)
    s = height_ratio(drv, ref)
    assert out.keypoints[2, 3].tolist() == [0, 0, 0] and (out.keypoints[:, 16] == 0).all()
    origin = ref.keypoints[0, 1, :2].astype(np.float64) - s * drv.keypoints[0, 1, :2]
    np.testing.assert_allclose(out.keypoints[2, 4, :2], origin + s * drv.keypoints[2, 4, :2], atol=1e-3)
    np.testing.assert_allclose(out.keypoints[4, 5], np.r_[origin + s * drv.keypoints[4, 5, :2], 0.2], atol=1e-3)
    for f in range(drv.num_frames):
        for p, c in ((11, 12), (12, 13)):
            d_len = np.linalg.norm(drv.keypoints[f, c, :2] - drv.keypoints[f, p, :2])
            o_len = np.linalg.norm(out.keypoints[f, c, :2] - out.keypoints[f, p, :2])
            assert o_len == pytest.approx(s * d_len, rel=1e-4)


def test_hands_and_face_follow_their_parent():
    drv, ref = driving(f=3), reference()
    rng = np.random.default_rng(5)
    hands = np.concatenate([rng.uniform(0, 512, (3, 2, 21, 2)), np.ones((3, 2, 21, 1))], -1)
    face = np.concatenate([rng.uniform(0, 512, (3, 68, 2)), np.ones((3, 68, 1))], -1)
    hands[1, 1, 4] = 0
    drv = drv.replace(hands=hands, face=face)
    out = retarget(drv, ref)
    s = out.meta["retarget"]["scale"]
    for h, wrist in ((0, 7), (1, 4)):
        exp = out.keypoints[:, wrist, None, :2] + s * (hands[:, h, :, :2] - drv.keypoints[:, wrist, None, :2])
        ok = hands[:, h, :, 2] > 0
        np.testing.assert_allclose(out.hands[:, h, :, :2][ok], exp[ok], atol=1e-2)
    assert out.hands[1, 1, 4].tolist() == [0, 0, 0]
    exp = out.keypoints[:, 0, None, :2] + s * (face[..., :2] - drv.keypoints[:, 0, None, :2])
    np.testing.assert_allclose(out.face[..., :2], exp, atol=1e-2)


def test_retarget_errors():
    drv, ref = driving(), reference()
    ref.keypoints[0, 1, 2] = 0.1
    with pytest.raises(InputError, match="no visible neck"):
        retarget(drv, ref)
    with pytest.raises(ValueError, match="root must be"):
        retarget(drv, reference(), root="pelvis")


# ------------------------------------------------------------------------------------------ Edit-Your-Motion Alg. 1


def seq_of(points, width=512, height=512):
    kps = np.zeros((len(points), 18, 3), np.float32)
    for f, pts in enumerate(points):
        for j, p in pts.items():
            kps[f, j] = p
    return PoseSequence(kps, width=width, height=height)


def test_algorithm1_hand_computed():
    # source box: x 100..140, y 200..300 -> centre (120, 250), h 100, w 40
    src = seq_of([{0: (100, 200, 0.9), 1: (140, 300, 0.9), 2: (500, 500, 0.2)}], width=640, height=480)
    # reference box: x 10..30, y 20..120 -> centre (20, 70), h 100, w 20 -> scale_h 1, scale_w 2, dis (-100, -180)
    ref = seq_of([{0: (10, 20, 0.9), 1: (30, 120, 0.9), 3: (25, 95, 0.2)}])
    out = skeleton_offset(src, ref)
    k = out.keypoints[0]
    np.testing.assert_allclose(k[0], [100, 200, 0.9])
    np.testing.assert_allclose(k[1], [140, 300, 0.9])
    np.testing.assert_allclose(k[3], [130, 275, 0.2])  # low-confidence point moved by the same map
    assert (k[4:] == 0).all() and (k[2] == 0).all()  # missing keypoints untouched
    assert (out.width, out.height) == (640, 480)
    iso = skeleton_offset(src, ref, keep_aspect=True).keypoints[0]
    np.testing.assert_allclose(iso[0, :2], [20 + (10 - 20) * 1 + 100, 200])


def test_algorithm1_modes():
    src = seq_of([{0: (100, 200, 0.9), 1: (140, 300, 0.9)}])
    f0 = {0: (10, 20, 0.9), 1: (30, 120, 0.9)}
    f1 = {0: (60, 20, 0.9), 1: (80, 120, 0.9)}  # the reference walks 50 px right
    f2 = {0: (60, 20, 0.9), 1: (100, 220, 0.9)}  # and doubles in size
    ref = seq_of([f0, f1, f2])
    first = skeleton_offset(src, ref, mode="first_frame").keypoints
    np.testing.assert_allclose(first[1, :2, 0] - first[0, :2, 0], [100, 100])  # 50 px x scale_w 2: trajectory kept
    per = skeleton_offset(src, ref, mode="per_frame").keypoints
    np.testing.assert_allclose(per[:, :2], np.broadcast_to(first[0, :2], (3, 2, 3)), atol=1e-5)  # pinned
    med = skeleton_offset(src, ref, mode="median").keypoints
    # median centre (x 70, y 70), median h 100, w 20 -> same scales; point (10, 20) -> (20 + (10-70)*2 + 50...)
    np.testing.assert_allclose(med[0, 0, :2], [120 + (10 - 70) * 2, 250 + (20 - 70) * 1])
    with pytest.raises(InputError, match="1 or 3 source frames"):
        skeleton_offset(seq_of([{0: (1, 1, 1), 1: (5, 5, 1)}] * 2), ref, mode="per_frame")


def test_algorithm1_zero_size_guard():
    src = seq_of([{0: (100, 200, 0.9), 1: (140, 300, 0.9)}])
    with pytest.raises(InputError, match="reference skeleton has zero height or width"):
        skeleton_offset(src, seq_of([{0: (10, 20, 0.9), 1: (10, 120, 0.9)}]))  # vertical line: w = 0
    with pytest.raises(InputError, match="reference skeleton has zero"):
        skeleton_offset(src, seq_of([{0: (10, 20, 0.9), 1: (50, 120, 0.1)}]))  # one confident point
    with pytest.raises(InputError, match="no keypoint above"):
        skeleton_offset(src, seq_of([{0: (10, 20, 0.1)}]))
    with pytest.raises(InputError, match="source skeleton has zero"):
        skeleton_offset(seq_of([{0: (100, 200, 0.9)}]), seq_of([{0: (10, 20, 0.9), 1: (30, 120, 0.9)}]))
