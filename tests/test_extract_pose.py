"""extract_poses: the extract-pose output layout, caching, atomic replacement and error paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dancegen.errors import InputError, MissingWeightsError
from dancegen.pose.extract import extract_poses


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 4-frame 24 fps mp4 of the cartoon walking right."""
    from test_pose_backend_cartoon import draw_cartoon

    from dancegen.io.video import write_video

    d = tmp_path_factory.mktemp("clip")
    frames = np.stack([draw_cartoon(shift=(6 * t, 0)) for t in range(4)])
    write_video(d / "dance.mp4", frames, 24)
    return d / "dance.mp4"


def test_video_to_full_layout_and_cache(models, clip, tmp_path):
    from dancegen.io.video import read_video
    from dancegen.pose.openpose_json import load_npz, read_openpose_folder

    out = tmp_path / "poses"
    seen = []
    r = extract_poses(clip, out, progress=lambda i, n: seen.append((i, n)))
    assert not r["cached"] and seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert r["num_frames"] == 4 and r["detected_frames"] == 4 and r["detection_rate"] == 1.0
    assert (r["fps"], r["width"], r["height"]) == (24.0, 360, 480)
    assert r["native_format"] == "mediapipe33" and r["timing"]["detector_calls"] == 1  # tracked after frame 0
    assert set(r["model_hashes"]) == {"pose_detection.tflite", "pose_landmark_full.tflite"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["cache_key"] == r["cache_key"] and meta["tool"] == "dancegen extract-pose"

    seq = read_openpose_folder(out / "openpose_json")
    assert seq.format == "coco18" and seq.num_frames == 4 and (seq.width, seq.height, seq.fps) == (360, 480, 24)
    # COCO-18: person's left shoulder (index 5) on the image's right, moving 6 px per frame; neck between shoulders.
    ls = seq.keypoints[:, 5]
    assert (ls[:, 2] > 0.9).all() and abs(ls[0, 0] - 222) < 8
    np.testing.assert_allclose(np.diff(ls[:, 0]), 6, atol=2.5)
    np.testing.assert_allclose(
        seq.keypoints[:, 1, :2], (seq.keypoints[:, 2, :2] + seq.keypoints[:, 5, :2]) / 2, atol=1e-3
    )
    npz = load_npz(out / "poses.npz")
    np.testing.assert_allclose(npz.keypoints, seq.keypoints, atol=1e-2)

    maps = sorted((out / "pose_maps").glob("*.png"))
    masks = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in maps] == [f"{i:05d}.png" for i in range(4)] and len(masks) == 4
    video = read_video(out / "pose.mp4")
    assert video.num_frames == 4 and video.fps == pytest.approx(24) and video.frames.shape[1:3] == (480, 360)
    m0 = read_video(out / "masks").frames[0, ..., 0]
    assert m0[215, 180] > 200 and m0[40, 40] < 20

    # Same input and parameters: returned from meta.json without running anything.
    again = extract_poses(clip, out)
    assert again["cached"] and again["cache_key"] == r["cache_key"]
    # Another parameter: recomputed, and the folder is replaced as a whole.
    small = extract_poses(clip, out, size=240, write_masks=False, write_video=False, fmt="mediapipe33")
    assert not small["cached"] and small["cache_key"] != r["cache_key"]
    assert (small["width"], small["height"]) == (180, 240)
    assert not (out / "masks").exists() and not (out / "pose.mp4").exists()
    assert load_npz(out / "poses.npz").format == "mediapipe33"
    assert read_video(out / "pose_maps").frames.shape[1:3] == (240, 180)


def test_image_without_person_is_empty_not_an_error(models, tmp_path):
    from dancegen.io.video import write_image
    from dancegen.pose.openpose_json import read_openpose_folder

    write_image(tmp_path / "wall.png", np.full((120, 160, 3), 200, np.uint8))
    r = extract_poses(tmp_path / "wall.png", tmp_path / "out", write_video=False)
    assert r["num_frames"] == 1 and r["detected_frames"] == 0 and r["detection_rate"] == 0.0
    assert r["empty_frames"] == [0] and r["params"]["mode"] == "image"
    seq = read_openpose_folder(tmp_path / "out" / "openpose_json")
    assert (seq.keypoints == 0).all()
    assert (tmp_path / "out" / "masks" / "00000.png").is_file()


def test_frame_folder_input(models, tmp_path):
    from test_pose_backend_cartoon import draw_cartoon

    from dancegen.io.video import write_frames

    write_frames(tmp_path / "frames", np.stack([draw_cartoon(), draw_cartoon(shift=(4, 0))]), fps=12)
    r = extract_poses(
        tmp_path / "frames",
        tmp_path / "out",
        write_maps=False,
        write_video=False,
        write_masks=False,
        smooth="gaussian",
    )
    assert r["num_frames"] == 2 and r["fps"] == 12 and r["detection_rate"] == 1.0
    assert r["source_fingerprint"]["kind"] == "folder" and set(r["outputs"]) == {"openpose_json", "poses"}


def test_openpose_json_import_backend(tmp_path):
    from dancegen.pose.openpose_json import read_openpose_folder, write_openpose_folder
    from dancegen.pose.sequence import PoseSequence

    kp = np.zeros((3, 18, 3), np.float32)
    kp[:, :, :2] = np.random.default_rng(0).uniform(20, 100, (3, 18, 2))
    kp[:, :, 2] = 0.9
    kp[1] = 0
    write_openpose_folder(PoseSequence(kp, width=128, height=96, fps=15), tmp_path / "json")
    r = extract_poses(tmp_path / "json", tmp_path / "out", backend="openpose-json", write_video=False)
    assert r["num_frames"] == 3 and r["detected_frames"] == 2 and r["empty_frames"] == [1]
    assert (r["width"], r["height"], r["fps"]) == (128, 96, 15) and r["model_hashes"] == {}
    back = read_openpose_folder(tmp_path / "out" / "openpose_json")
    np.testing.assert_allclose(back.keypoints, kp, atol=1e-3)
    assert "masks" not in r["outputs"] and len(list((tmp_path / "out" / "pose_maps").glob("*.png"))) == 3


def test_dwpose_backend_through_extract(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_pose_backend_dwpose import _constant_model, _yolox_output_with_box

    from dancegen.io.video import write_image
    from dancegen.pose.openpose_json import load_npz

    sx = np.full((1, 133, 576), -1.0, np.float32)
    sy = np.full((1, 133, 768), -1.0, np.float32)
    sx[0, :, 288], sy[0, :, 384] = 0.8, 0.9
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "yolox_l.onnx").write_bytes(
        _constant_model("images", (1, 3, 640, 640), {"output": _yolox_output_with_box(160, 120, 80, 160, ratio=2.0)})
    )
    (tmp_path / "w" / "dw-ll_ucoco_384.onnx").write_bytes(
        _constant_model("input", (1, 3, 384, 288), {"simcc_x": sx, "simcc_y": sy})
    )
    write_image(tmp_path / "img.png", np.zeros((240, 320, 3), np.uint8))
    r = extract_poses(
        tmp_path / "img.png",
        tmp_path / "out",
        backend="dwpose",
        weights_dir=tmp_path / "w",
        fmt="dwpose133",
        write_video=False,
    )
    assert r["native_format"] == "dwpose133" and r["detection_rate"] == 1.0 and len(r["model_hashes"]) == 2
    seq = load_npz(tmp_path / "out" / "poses.npz")
    assert seq.format == "dwpose133"
    np.testing.assert_allclose(seq.keypoints[0, :, :2], np.tile([160, 120], (133, 1)), atol=1e-4)


def test_error_paths(tmp_path, monkeypatch):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video at all" * 10)
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    # Missing models are reported before anything is decoded, with the fetch command.
    with pytest.raises(MissingWeightsError, match="python -m dancegen.pose.backends.fetch"):
        extract_poses(bad, tmp_path / "out")
    with pytest.raises(InputError, match="unknown pose backend"):
        extract_poses(bad, tmp_path / "out", backend="openpose")
    with pytest.raises(InputError, match="unknown pose format"):
        extract_poses(bad, tmp_path / "out", fmt="body25")
    with pytest.raises(InputError, match="no such file"):
        extract_poses(tmp_path / "nope.mp4", tmp_path / "out")
    # A folder that is not an extract-pose output is never replaced.
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing"):
        extract_poses(bad, foreign, backend="openpose-json")
    assert (foreign / "thesis.txt").read_text() == "keep me"


def test_unreadable_video_is_an_input_error(models, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video at all" * 10)
    with pytest.raises(InputError):
        extract_poses(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
