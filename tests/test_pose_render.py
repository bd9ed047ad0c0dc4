"""ControlNet pose maps (dancegen.pose.render), pixel for pixel against the controlnet_aux drawing convention."""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np
import pytest

from dancegen.pose.render import draw_pose, render_pose_sequence
from dancegen.pose.sequence import PoseSequence

W, H = 256, 256
# The reference's 18 colours and 1-based limb list, typed in from controlnet_aux dwpose/util.py.
REF_COLORS = [
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [0, 255, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [85, 0, 255],
    [170, 0, 255],
    [255, 0, 255],
    [255, 0, 170],
    [255, 0, 85],
]
REF_LIMBS = [
    [2, 3],
    [2, 6],
    [3, 4],
    [4, 5],
    [6, 7],
    [7, 8],
    [2, 9],
    [9, 10],
    [10, 11],
    [2, 12],
    [12, 13],
    [13, 14],
    [2, 1],
    [1, 15],
    [15, 17],
    [1, 16],
    [16, 18],
    [3, 17],
    [6, 18],
]
REF_HAND_EDGES = [
    [0, 1],
    [1, 2],
    [2, 3],
    [3, 4],
    [0, 5],
    [5, 6],
    [6, 7],
    [7, 8],
    [0, 9],
    [9, 10],
    [10, 11],
    [11, 12],
    [0, 13],
    [13, 14],
    [14, 15],
    [15, 16],
    [0, 17],
    [17, 18],
    [18, 19],
    [19, 20],
]
DIMMED = {0: 0, 85: 51, 170: 102, 255: 153}  # floor(0.6 * c), by hand

POSE = np.array(
    [
        [128, 40],
        [128, 80],
        [88, 80],
        [60, 120],
        [40, 160],
        [168, 80],
        [196, 120],
        [216, 160],
        [105, 160],
        [100, 205],
        [98, 245],
        [151, 160],
        [156, 205],
        [158, 245],
        [118, 30],
        [138, 30],
        [100, 40],
        [156, 40],
    ],
    np.float32,
)


def pose(conf=None):
    c = np.full(18, 0.9, np.float32) if conf is None else np.asarray(conf, np.float32)
    return np.concatenate([POSE, c[:, None]], 1)


# ------------------------------------------------------------------------------------------------------------------
# A straight transcription of controlnet_aux draw_pose / draw_bodypose / draw_handpose / draw_facepose (loop form),
# fed the way its DWposeDetector feeds them: float32 coordinates divided by W/H, score <= 0.3 -> subset -1 for the
# body, score < 0.3 -> coordinates -1 for hands and face.
# ------------------------------------------------------------------------------------------------------------------


def reference_draw(body, hands, faces, h, w):
    candidate = body[:, :2].astype(np.float32).copy()
    candidate[:, 0] /= float(w)
    candidate[:, 1] /= float(h)
    subset = np.array([[j if body[j, 2] > 0.3 else -1 for j in range(18)]], np.float32)
    canvas = np.zeros((h, w, 3), np.uint8)

    stickwidth = 4
    for i in range(17):
        for n in range(len(subset)):
            index = subset[n][np.array(REF_LIMBS[i]) - 1]
            if -1 in index:
                continue
            Y = candidate[index.astype(int), 0] * float(w)
            X = candidate[index.astype(int), 1] * float(h)
            mX = np.mean(X)
            mY = np.mean(Y)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, REF_COLORS[i])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index][0:2]
            cv2.circle(canvas, (int(x * w), int(y * h)), 4, REF_COLORS[i], thickness=-1)

    def norm(a):
        a = a.astype(np.float32).copy()
        xy = a[..., :2]
        xy[..., 0] /= float(w)
        xy[..., 1] /= float(h)
        xy[a[..., 2] < 0.3] = -1
        return xy

    eps = 0.01
    if hands is not None:
        for peaks in norm(hands):
            for ie, e in enumerate(REF_HAND_EDGES):
                x1, y1 = peaks[e[0]]
                x2, y2 = peaks[e[1]]
                x1, y1, x2, y2 = int(x1 * w), int(y1 * h), int(x2 * w), int(y2 * h)
                if x1 > eps and y1 > eps and x2 > eps and y2 > eps:
                    color = np.array(colorsys.hsv_to_rgb(ie / float(len(REF_HAND_EDGES)), 1.0, 1.0)) * 255
                    cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=2)
            for x, y in peaks:
                x, y = int(x * w), int(y * h)
                if x > eps and y > eps:
                    cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)
    if faces is not None:
        for x, y in norm(faces)[0]:
            x, y = int(x * w), int(y * h)
            if x > eps and y > eps:
                cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def random_person(rng, w, h):
    body = np.concatenate([rng.uniform(0, [w, h], (18, 2)), rng.uniform(0, 1, (18, 1))], 1).astype(np.float32)
    body[rng.random(18) < 0.1] = 0
    hands = np.concatenate([rng.uniform(-2, [w, h], (2, 21, 2)), rng.uniform(0, 1, (2, 21, 1))], -1)
    face = np.concatenate([rng.uniform(0, [w, h], (68, 2)), rng.uniform(0, 1, (68, 1))], -1)
    return body, hands.astype(np.float32), face.astype(np.float32)


@pytest.mark.parametrize("seed,size", [(0, (256, 256)), (1, (300, 200)), (2, (512, 384)), (3, (97, 131))])
def test_matches_reference_transcription(seed, size):
    w, h = size
    rng = np.random.default_rng(seed)
    for _ in range(3):
        body, hands, face = random_person(rng, w, h)
        body[rng.integers(18), 2] = np.float32(0.3)  # exactly at the threshold: not drawn
        ours = draw_pose(body, w, h, hands=hands, face=face)
        ref = reference_draw(body, hands[[0, 1]], face[None], h, w)
        np.testing.assert_array_equal(ours, ref)


def test_matches_reference_on_fixed_pose_and_sequence():
    body = pose()
    ref = reference_draw(body, None, None, H, W)
    np.testing.assert_array_equal(draw_pose(body, W, H), ref)
    seq = PoseSequence(np.stack([body, body]), width=W, height=H)
    out = render_pose_sequence(seq)
    assert out.shape == (2, H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], ref)


def _dist_point_segment(p, a, b):
    ab, ap = b - a, p - a
    t = np.clip(ap @ ab / max(ab @ ab, 1e-9), 0, 1)
    return np.linalg.norm(ap - t * ab)


def test_golden_limb_midpoints_and_joint_centres():
    img = draw_pose(pose(), W, H)
    limbs = [(a - 1, b - 1) for a, b in REF_LIMBS[:17]]
    checked = 0
    for i, (a, b) in enumerate(limbs):
        mid = (POSE[a] + POSE[b]) / 2
        clear_joints = all(np.linalg.norm(mid - POSE[j]) > 7 for j in range(18))
        clear_limbs = all(_dist_point_segment(mid, POSE[c], POSE[d]) > 7 for k, (c, d) in enumerate(limbs) if k != i)
        if clear_joints and clear_limbs:
            x, y = int(mid[0]), int(mid[1])
            assert img[y, x].tolist() == [DIMMED[c] for c in REF_COLORS[i]], f"limb {i}"
            checked += 1
    assert checked >= 12
    for j in range(18):
        x, y = POSE[j].astype(int)
        assert img[y, x].tolist() == REF_COLORS[j], f"joint {j}"
    # RGB, not BGR: limb 0 (neck - right shoulder) is red in channel 0
    assert img[80, 108].tolist() == [153, 0, 0]


def test_skipped_joint_leaves_black():
    conf = np.full(18, 0.9)
    conf[7] = 0.3  # left wrist at the threshold -> missing; limb 5 (l_elbow-l_wrist) is skipped too
    img = draw_pose(pose(conf), W, H)
    assert img[160, 216].tolist() == [0, 0, 0]
    assert img[140, 206].tolist() == [0, 0, 0]
    assert img[120, 196].tolist() == REF_COLORS[6]  # the elbow is still drawn
    assert draw_pose(pose(np.zeros(18)), W, H).max() == 0


def test_hand_and_face_colours():
    hands = np.zeros((2, 21, 3), np.float32)
    hands[0, 0], hands[0, 1], hands[0, 2] = [40, 200, 1], [100, 200, 1], [100, 140, 1]
    hands[1, 5] = [0.5, 50, 1]  # truncates to x = 0 -> skipped like controlnet_aux (int(x * W) > 0.01)
    face = np.array([[200, 60, 1.0], [220, 60, 0.29]], np.float32)
    img = draw_pose(np.zeros((18, 3), np.float32), W, H, hands=hands, face=face)
    assert img[200, 70].tolist() == [255, 0, 0]  # edge 0: hue 0
    assert img[170, 100].tolist() == [255, 77, 0]  # edge 1: hue 1/20 -> (1, 0.3, 0) * 255, rounded by OpenCV
    assert img[200, 40].tolist() == [0, 0, 255] and img[140, 100].tolist() == [0, 0, 255]  # points are blue
    assert img[50, 0].tolist() == [0, 0, 0] and img[50, 1].tolist() == [0, 0, 0]
    assert img[60, 200].tolist() == [255, 255, 255] and img[60, 220].tolist() == [0, 0, 0]  # conf < 0.3 skipped


def test_resize_and_draw_size():
    seq = PoseSequence(pose()[None], width=W, height=H)
    big = render_pose_sequence(seq, width=512, height=512)
    np.testing.assert_array_equal(big[0], draw_pose(seq.resized(512, 512).keypoints[0], 512, 512))
    via = render_pose_sequence(seq, width=512, height=512, draw_size=(W, H))
    np.testing.assert_array_equal(
        via[0], cv2.resize(draw_pose(pose(), W, H), (512, 512), interpolation=cv2.INTER_LINEAR)
    )
    coco17 = PoseSequence(np.zeros((1, 17, 3), np.float32), format="coco17", width=64, height=48)
    assert render_pose_sequence(coco17).shape == (1, 48, 64, 3)
