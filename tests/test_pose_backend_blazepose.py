"""BlazePose backend: SSD anchors, decoding, weighted NMS, ROI geometry, heatmap refinement, model fetching,
and the full pipeline on public-domain photos against hand labels and against MediaPipe 0.10.21 itself."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail_without_models

from dancegen.errors import DanceGenError, InputError, MissingWeightsError
from dancegen.pose.backends import blazepose as bp
from dancegen.pose.backends import fetch

PHOTOS = Path(__file__).parent / "fixtures" / "photos"


# ---------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------


def test_ssd_anchors_match_the_pose_detection_config():
    a = bp.ssd_anchors()
    assert a.shape == (2254, 4)  # 28*28*2 + 14*14*2 + 7*7*6 (three stride-32 layers merged)
    np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(a[1], a[0])  # two anchors per cell
    np.testing.assert_allclose(a[2], [1.5 / 28, 0.5 / 28, 1, 1], rtol=1e-6)  # x varies fastest
    np.testing.assert_allclose(a[56], [0.5 / 28, 1.5 / 28, 1, 1], rtol=1e-6)  # next row after 28 cells x 2
    np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14, 1, 1], rtol=1e-6)  # stride-16 layer starts
    np.testing.assert_allclose(a[1960:1966, :2], [[0.5 / 7, 0.5 / 7]] * 6, rtol=1e-6)  # 6 anchors per 7x7 cell
    np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7, 1, 1], rtol=1e-6)
    # Without fixed_anchor_size the sizes follow the scale schedule (first layer: min_scale, then sqrt(s0*s1)).
    b = bp.ssd_anchors(fixed_anchor_size=False)
    s0, s1 = 0.1484375, 0.1484375 + (0.75 - 0.1484375) / 4
    np.testing.assert_allclose(b[0, 2:], [s0, s0], rtol=1e-6)
    np.testing.assert_allclose(b[1, 2:], [math.sqrt(s0 * s1)] * 2, rtol=1e-6)


def test_decode_detections_inverts_the_regressor_encoding():
    anchors = bp.ssd_anchors()
    raw = np.zeros((2254, 12), np.float32)
    scores = np.full(2254, -10.0, np.float32)
    i = 700
    box = np.array([0.52, 0.47, 0.2, 0.3])  # cx, cy, w, h normalised
    kps = np.array([[0.5, 0.6], [0.5, 0.2], [0.51, 0.35], [0.5, 0.1]])
    raw[i, :2] = (box[:2] - anchors[i, :2]) * 224
    raw[i, 2:4] = box[2:] * 224
    raw[i, 4:] = ((kps - anchors[i, :2]) * 224).ravel()
    scores[i] = 2.0
    boxes, k, s = bp.decode_detections(raw, scores[:, None], anchors, min_score=0.5)
    assert len(s) == 1
    np.testing.assert_allclose(s[0], 1 / (1 + math.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(boxes[0], [0.42, 0.32, 0.62, 0.62], atol=1e-5)
    np.testing.assert_allclose(k[0], kps, atol=1e-5)
    # Threshold and clipping: a huge logit gives score 1 without overflow; a score below threshold is dropped.
    scores[i] = 1e6
    scores[i + 1] = -0.1
    _, _, s = bp.decode_detections(raw, scores, anchors, min_score=0.5)
    assert s.tolist() == [1.0]


def test_weighted_nms_averages_clusters_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    kps = np.stack([np.full((4, 2), v, np.float32) for v in (0.0, 3.0, 9.0)])
    scores = np.array([0.9, 0.3, 0.6], np.float32)
    out = bp.weighted_nms(boxes, kps, scores, iou_threshold=0.3)
    assert [round(d.score, 3) for d in out] == [0.9, 0.6]
    np.testing.assert_allclose(out[0].box, [0.25, 0, 10.25, 10], atol=1e-5)  # (0.9*0 + 0.3*1) / 1.2
    np.testing.assert_allclose(out[0].keypoints, np.full((4, 2), 0.75), atol=1e-5)
    np.testing.assert_allclose(out[1].box, boxes[2])
    assert len(bp.weighted_nms(boxes, kps, scores, max_detections=1)) == 1
    assert bp.weighted_nms(boxes[:0], kps[:0], scores[:0]) == []


@pytest.mark.parametrize(
    "direction, rotation", [((0, -1), 0.0), ((1, 0), math.pi / 2), ((0, 1), math.pi), ((-1, 0), -math.pi / 2)]
)
def test_roi_from_points_size_and_rotation(direction, rotation):
    center = np.array([100.0, 200.0])
    roi = bp.roi_from_points(center, center + 40 * np.array(direction))
    assert (roi.cx, roi.cy) == (100.0, 200.0)
    assert roi.size == pytest.approx(2 * 40 * 1.25)
    assert abs(bp._normalize_radians(roi.rotation - rotation)) < 1e-9
    # The scale point is "up" in the crop: it maps to the crop's top-centre row (v < 128).
    m = bp.roi_crop_matrix(roi, 256)
    up_in_crop = np.linalg.solve(m[:, :2], center + 40 * np.array(direction) - m[:, 2])
    np.testing.assert_allclose(up_in_crop, [128, 128 - 256 / 2 / 1.25], atol=1e-6)


def test_crop_matrix_and_point_mapping_agree_with_the_warp():
    import cv2

    roi = bp.Roi(cx=130.0, cy=90.0, size=120.0, rotation=0.6)
    img = np.zeros((200, 260, 3), np.uint8)
    cv2.circle(img, (150, 70), 3, (255, 255, 255), -1)
    crop = cv2.warpAffine(img, bp.roi_crop_matrix(roi), (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    back = bp.crop_to_image_points(np.array([xs.mean(), ys.mean()]), roi)
    np.testing.assert_allclose(back, [150, 70], atol=0.6)


def test_refine_from_heatmap_weighted_mean_and_gate():
    hm = np.full((64, 64, 3), -20.0, np.float32)
    hm[30, 40, 0] = hm[30, 42, 0] = 3.0  # two equal peaks -> mean at col 41
    hm[10, 10, 1] = -0.5  # max sigmoid 0.38 < 0.5 -> not refined
    xy = np.array([[41.2 / 64, 30.5 / 64], [10.5 / 64, 10.5 / 64], [2.0, 0.5]])  # third: outside, untouched
    out = bp.refine_from_heatmap(xy, hm)
    # MediaPipe divides the weighted column index by the width; the far-away background (sigmoid(-20)) is ~0.
    np.testing.assert_allclose(out[0], [41 / 64, 30 / 64], atol=1e-6)
    np.testing.assert_allclose(out[1:], xy[1:])


# ---------------------------------------------------------------------------------------------------------------
# Fetching and missing models
# ---------------------------------------------------------------------------------------------------------------


def test_missing_models_raise_with_files_location_and_command(tmp_path):
    (tmp_path / "pose_detection.tflite").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as e:
        bp.BlazePoseEstimator(model_dir=tmp_path)
    msg = str(e.value)
    assert "pose_landmark_full.tflite" in msg and "pose_detection.tflite" not in msg.split("(")[0]
    assert str(tmp_path) in msg
    assert "python -m dancegen.pose.backends.fetch" in msg


def test_default_models_dir_follows_dancegen_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path))
    assert fetch.blazepose_dir() == tmp_path / "models" / "blazepose"
    with pytest.raises(MissingWeightsError, match="models/blazepose"):
        fetch.require_blazepose()


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_extract_rejects_wrong_hash_and_writes_nothing(tmp_path):
    inner = {v[0]: b"not a model" for v in fetch.BLAZEPOSE_FILES.values()}
    wheel = _wheel(tmp_path / "mediapipe-0.10.21-fake.whl", inner)
    with pytest.raises(DanceGenError, match="SHA-256 mismatch"):
        fetch.fetch_blazepose(tmp_path / "models", wheel=wheel)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    with pytest.raises(DanceGenError, match="not in this wheel"):
        fetch.extract_blazepose(_wheel(tmp_path / "empty.whl", {"x.txt": b""}), tmp_path / "models")


@pytest.fixture(scope="module")
def model_dir():
    try:
        paths = fetch.require_blazepose()
    except MissingWeightsError as e:
        skip_or_fail_without_models(f"BlazePose models not installed: {e}")
    return next(iter(paths.values())).parent


def test_extract_from_a_local_wheel_installs_verified_files(tmp_path, model_dir):
    inner = {v[0]: (model_dir / name).read_bytes() for name, v in fetch.BLAZEPOSE_FILES.items()}
    wheel = _wheel(tmp_path / "mp.whl", {**inner, "mediapipe/__init__.py": b""})
    out = fetch.fetch_blazepose(tmp_path / "m", wheel=wheel)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(fetch.BLAZEPOSE_FILES)
    for name, p in out.items():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == fetch.BLAZEPOSE_FILES[name][1]
    # Already there and valid: no-op even with a broken wheel argument.
    assert fetch.fetch_blazepose(tmp_path / "m", wheel=tmp_path / "missing.whl") == out
    assert fetch.main(["--dest", str(tmp_path / "m")]) == 0


# ---------------------------------------------------------------------------------------------------------------
# Real photos (tests/fixtures/photos/README.md): hand labels and MediaPipe's own output
# ---------------------------------------------------------------------------------------------------------------

#: Hand-labelled (x, y) pixels, read off the images with a 25 px grid; the person's right is on the image's left.
#: The cameraman is in profile facing right, so only his near (right) side and face are labelled.
HAND_LABELS = {
    "astronaut.jpg": {
        "nose": (222, 128),
        "r_eye": (205, 106),
        "l_eye": (243, 107),
        "r_shoulder": (110, 245),
        "l_shoulder": (312, 262),
    },
    "grace_hopper.jpg": {
        "nose": (267, 232),
        "r_eye": (227, 192),
        "l_eye": (305, 190),
        "r_shoulder": (95, 420),
        "l_shoulder": (455, 425),
    },
    "cameraman.jpg": {"nose": (249, 165), "r_eye": (236, 150)},
}
MP = {"nose": 0, "l_eye": 2, "r_eye": 5, "l_shoulder": 11, "r_shoulder": 12}
TOL = {"nose": 12, "l_eye": 12, "r_eye": 12, "l_shoulder": 35, "r_shoulder": 35}  # bulky clothes hide shoulders


@pytest.fixture(scope="module")
def estimator(model_dir):
    est = bp.BlazePoseEstimator(model_dir=model_dir, mode="image")
    yield est
    est.close()


@pytest.fixture(scope="module")
def photo_results(estimator):
    from dancegen.io.video import read_image

    out = {}
    for name in HAND_LABELS:
        img = read_image(PHOTOS / name)
        kps, mask = estimator.process(img)
        out[name] = (img, kps, mask)
    return out


@pytest.mark.parametrize("name", sorted(HAND_LABELS))
def test_photo_keypoints_match_hand_labels(photo_results, name):
    img, kps, mask = photo_results[name]
    assert kps is not None, f"no person found in {name}"
    for joint, xy in HAND_LABELS[name].items():
        err = np.hypot(*(kps[MP[joint], :2] - xy))
        assert err < TOL[joint], f"{name} {joint}: {kps[MP[joint], :2]} vs label {xy} ({err:.1f} px)"
        assert kps[MP[joint], 2] > 0.8
    nose = kps[0, :2]
    if name == "cameraman.jpg":  # leaning forward, facing right: the near (right) shoulder is behind and below
        assert kps[12, 0] < nose[0] - 80 and kps[12, 1] > nose[1]
    else:  # frontal: shoulders below the head, the person's left on the image's right
        assert kps[11, 1] > nose[1] + 80 and kps[12, 1] > nose[1] + 80
        assert kps[11, 0] > nose[0] > kps[12, 0]
        assert kps[2, 0] > nose[0] > kps[5, 0]
    assert mask.shape == img.shape[:2] and 0.2 < mask.mean() < 0.7


def test_photos_match_mediapipe_0_10_21(photo_results):
    """Same model files, our pre/post-processing vs MediaPipe's graph (reference recorded in the fixture JSON)."""
    ref = json.loads((PHOTOS / "mediapipe_reference.json").read_text())["images"]
    for name, (_, kps, mask) in photo_results.items():
        r = np.asarray(ref[name]["keypoints"])
        vis = r[:, 2] > 0.5
        err = np.hypot(*(kps[:, :2] - r[:, :2]).T)[vis]
        # Median within 2 px; the cameraman (profile, detector score ~0.6) is the least stable ROI.
        assert np.median(err) < 2.0, f"{name}: median {np.median(err):.2f} px"
        assert err.max() < (15.0 if name == "cameraman.jpg" else 4.0), f"{name}: max {err.max():.2f} px"
        assert np.abs(kps[:, 2] - r[:, 2]).max() < 0.1
        assert abs(mask.mean() - ref[name]["mask_mean"]) < 0.01


def test_photo_without_a_person_gives_none(estimator):
    from dancegen.io.video import read_image

    img = read_image(PHOTOS / "grace_hopper.jpg")[:120, :120]  # a patch of flag
    kps, mask = estimator.process(np.ascontiguousarray(img))
    assert kps is None and mask is None
    kps, mask = estimator.process(np.full((240, 320, 3), 127, np.uint8))
    assert kps is None and estimator.last_presence == 0.0


def test_bad_image_is_an_input_error(estimator):
    with pytest.raises(InputError):
        estimator.process(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError):
        estimator.process(np.zeros((10, 10, 3), np.float32))


def test_video_mode_tracks_without_rerunning_the_detector(model_dir):
    from test_pose_backend_cartoon import JOINTS, draw_cartoon

    est = bp.BlazePoseEstimator(model_dir=model_dir, mode="video")
    shifts = [(-20 + 5 * t, 2 * t) for t in range(6)]
    ran, shoulders = [], []
    for s in shifts:
        kps, _ = est.process(draw_cartoon(shift=s))
        ran.append(est.last_ran_detector)
        shoulders.append(kps[11, :2])
    assert ran == [True] + [False] * 5
    moved = np.array(shoulders) - shoulders[0]
    np.testing.assert_allclose(moved, np.array(shifts) - shifts[0], atol=3.0)
    # Losing the person re-runs the detector and clears the track.
    kps, _ = est.process(np.full((480, 360, 3), 200, np.uint8))
    assert kps is None and est.last_ran_detector
    est.process(draw_cartoon())
    assert est.last_ran_detector
    assert len(est.timings["detector"]) == 3 and len(est.timings["landmarks"]) == 8
    assert np.hypot(*(est.process(draw_cartoon())[0][11, :2] - JOINTS["l_shoulder"])) < 10
    est.close()
