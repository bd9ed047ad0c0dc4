"""OpenPose JSON folders and npz pose files (dancegen.pose.openpose_json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.pose.openpose_json import (
    load_npz,
    read_openpose_folder,
    read_pose_input,
    save_npz,
    write_openpose_folder,
)
from dancegen.pose.sequence import PoseSequence
from dancegen.pose.skeletons import COCO18

FIXTURES = Path(__file__).parent / "fixtures" / "pose"


def make_seq(f=3, seed=0, face_k=70):
    rng = np.random.default_rng(seed)
    kps = np.concatenate([rng.uniform(1, 300, (f, 18, 2)), rng.uniform(0.1, 1, (f, 18, 1))], -1)
    kps[0, 4] = 0  # a missing joint
    hands = np.concatenate([rng.uniform(1, 300, (f, 2, 21, 2)), rng.uniform(0.1, 1, (f, 2, 21, 1))], -1)
    hands[1, 0] = 0
    face = np.concatenate([rng.uniform(1, 300, (f, face_k, 2)), rng.uniform(0.1, 1, (f, face_k, 1))], -1)
    return PoseSequence(kps, width=320, height=240, fps=24.0, hands=hands, face=face, meta={"backend": "test"})


def frame(tmp: Path, name: str, doc) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    p = tmp / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def person(n_joints=18, value=(10.0, 20.0, 0.9), **extra):
    return {"pose_keypoints_2d": list(value) * n_joints, **extra}


def test_write_read_round_trip(tmp_path):
    seq = make_seq()
    paths = write_openpose_folder(seq, tmp_path / "poses")
    assert [p.name for p in paths] == [f"frame_{i:06d}_keypoints.json" for i in range(3)]
    doc = json.loads(paths[0].read_text())
    assert doc["version"] == 1.3 and len(doc["people"]) == 1
    body = doc["people"][0]["pose_keypoints_2d"]
    assert len(body) == 54 and body[12:15] == [0, 0, 0]  # missing joint written as 0,0,0
    assert len(doc["people"][0]["face_keypoints_2d"]) == 210 and len(doc["people"][0]["hand_left_keypoints_2d"]) == 63
    meta = json.loads((tmp_path / "poses" / "pose_meta.json").read_text())
    assert meta["width"] == 320 and meta["height"] == 240 and meta["fps"] == 24.0 and meta["format"] == "coco18"

    back = read_openpose_folder(tmp_path / "poses")
    assert (back.width, back.height, back.fps, back.num_frames) == (320, 240, 24.0, 3)
    np.testing.assert_allclose(back.keypoints, seq.keypoints, atol=1e-4)
    np.testing.assert_allclose(back.hands, seq.hands, atol=1e-4)
    np.testing.assert_allclose(back.face, seq.face, atol=1e-4)
    assert back.meta["backend"] == "test" and back.meta["empty_frames"] == [] and not back.meta["normalized_input"]


def test_rewrite_removes_stale_frames_and_converts_format(tmp_path):
    write_openpose_folder(make_seq(f=5), tmp_path)
    (tmp_path / "other_000009_keypoints.json").write_text(json.dumps({"people": []}))  # another prefix is kept
    seq17 = PoseSequence(np.full((2, 17, 3), 50.0, np.float32) * [1, 1, 0.018], format="coco17", width=320, height=240)
    write_openpose_folder(seq17, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("frame_*.json")) == [
        "frame_000000_keypoints.json",
        "frame_000001_keypoints.json",
    ]
    assert (tmp_path / "other_000009_keypoints.json").exists()


def test_empty_frame_written_and_read_as_zeros(tmp_path):
    seq = make_seq(f=3).replace(hands=None, face=None)
    seq.keypoints[1] = 0
    write_openpose_folder(seq, tmp_path)
    assert json.loads((tmp_path / "frame_000001_keypoints.json").read_text())["people"] == []
    back = read_openpose_folder(tmp_path)
    assert back.meta["empty_frames"] == [1] and (back.keypoints[1] == 0).all() and back.hands is None


def test_body25_largest_person_and_no_people(tmp_path):
    seq = read_openpose_folder(FIXTURES / "body25", width=640, height=480, fps=30)
    assert seq.num_frames == 2 and seq.meta["empty_frames"] == [1]
    k = seq.keypoints[0]
    # the larger person (second in the file) is chosen; MidHip (BODY_25 #8) is dropped, RHip is BODY_25 #9
    np.testing.assert_allclose(k[COCO18.index("r_hip")], [300, 280, 0.8], atol=1e-6)
    np.testing.assert_allclose(k[COCO18.index("l_ear")], [336, 96, 0.8], atol=1e-6)
    np.testing.assert_allclose(k[COCO18.index("nose")], [320, 100, 0.8], atol=1e-6)
    assert k[COCO18.index("r_ear")].tolist() == [0, 0, 0]
    assert (seq.keypoints[1] == 0).all()
    small = read_openpose_folder(FIXTURES / "body25", width=640, height=480, person=0)
    np.testing.assert_allclose(small.keypoints[0, 0], [100, 35, 0.9], atol=1e-6)
    assert small.meta["fps_assumed"] is True and small.fps == 30.0


def test_normalised_coordinates_and_natural_sort(tmp_path):
    for i in (10, 2, 1):
        frame(tmp_path, f"f_{i}.json", {"people": [person(value=(0.5, 0.25 + i / 100, 1.0))]})
    seq = read_openpose_folder(tmp_path, width=200, height=100)
    np.testing.assert_allclose(seq.keypoints[:, 0, 0], [100, 100, 100])
    np.testing.assert_allclose(seq.keypoints[:, 0, 1], [26, 27, 35], atol=1e-4)  # order 1, 2, 10
    assert seq.meta["normalized_input"] is True


def test_coco17_body_gets_neck(tmp_path):
    kp = np.zeros((17, 3))
    kp[5], kp[6] = [60, 40, 0.9], [40, 40, 0.8]
    frame(tmp_path, "a.json", {"people": [{"pose_keypoints_2d": kp.reshape(-1).tolist()}]})
    seq = read_openpose_folder(tmp_path, width=100, height=100)
    np.testing.assert_allclose(seq.keypoints[0, 1], [50, 40, 0.8], atol=1e-6)


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ({"version": 1.3}, 'no "people"'),
        ({"people": [{"pose_keypoints_2d": [1.0] * 53}]}, "not a multiple of 3"),
        ({"people": [person(n_joints=20)]}, "20 joints"),
        ({"people": [person(hand_left_keypoints_2d=[1.0] * 30)]}, "expected 21"),
        ({"people": [person(pose_keypoints_2d=["a"] * 54)]}, "list of numbers"),
    ],
)
def test_bad_frames_name_the_file(tmp_path, content, match):
    frame(tmp_path, "a_0.json", {"people": [person()]})
    bad = frame(tmp_path, "a_1.json", content)
    with pytest.raises(InputError, match=match) as e:
        read_openpose_folder(tmp_path, width=64, height=64)
    assert e.value.path == str(bad)


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no OpenPose"):
        read_openpose_folder(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        read_openpose_folder(tmp_path / "nope")
    frame(tmp_path, "a.json", {"people": [person()]})
    with pytest.raises(InputError, match="image size unknown"):
        read_openpose_folder(tmp_path)
    frame(tmp_path, "b.json", {"people": [person(face_keypoints_2d=[1.0, 1.0, 1.0] * 70)]})
    bad = frame(tmp_path, "c.json", {"people": [person(face_keypoints_2d=[1.0, 1.0, 1.0] * 68)]})
    with pytest.raises(InputError, match="face_keypoints_2d has 68") as e:
        read_openpose_folder(tmp_path, width=64, height=64)
    assert e.value.path == str(bad)


def test_npz_round_trip_and_read_pose_input(tmp_path):
    seq = make_seq(face_k=68)
    save_npz(seq, tmp_path / "p.npz")
    back = load_npz(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.keypoints, seq.keypoints)
    np.testing.assert_array_equal(back.hands, seq.hands)
    np.testing.assert_array_equal(back.face, seq.face)
    assert (back.format, back.width, back.height, back.fps, back.meta) == (
        "coco18",
        320,
        240,
        24.0,
        {"backend": "test"},
    )
    assert not list(tmp_path.glob("*.part*"))
    np.testing.assert_array_equal(read_pose_input(tmp_path / "p.npz").keypoints, seq.keypoints)
    half = read_pose_input(tmp_path / "p.npz", width=160, height=120)
    np.testing.assert_allclose(half.keypoints[..., 0], seq.keypoints[..., 0] / 2, rtol=1e-6)

    write_openpose_folder(seq, tmp_path / "json")
    assert read_pose_input(tmp_path / "json").num_frames == 3
    one = read_pose_input(tmp_path / "json" / "frame_000002_keypoints.json")  # one frame, size from pose_meta.json
    np.testing.assert_allclose(one.keypoints[0], seq.keypoints[2], atol=1e-4)

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not a dancegen pose npz"):
        read_pose_input(tmp_path / "other.npz")
    with pytest.raises(InputError, match="not found"):
        read_pose_input(tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="expected a folder"):
        read_pose_input(tmp_path / "x.txt")
