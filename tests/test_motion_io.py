"""dancegen.motion: every reader on small hand-made files, the restricted unpickler, errors, projection, CLI routing."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.errors import InputError
from dancegen.motion.io import FOOT_FORWARD, FOOT_UP, SPINE_FRACTIONS, Motion, project_motion, read_motion
from dancegen.motion.safe_pickle import safe_unpickle
from dancegen.pose.skeletons import COCO17, COCO18, HUMANML3D22

runner = CliRunner()
H = HUMANML3D22.index


@pytest.fixture(scope="module")
def clip_joints() -> np.ndarray:
    from dancegen.synth import render_clip

    return render_clip(seed=0, size=64, num_frames=8, render=False, flow=False).joints3d


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], lines[0]


# ---- HumanML3D / synth joints3d ---------------------------------------------------------------------------------


def test_humanml3d_new_joints_default_20_fps(tmp_path, clip_joints):
    (tmp_path / "new_joints").mkdir()
    p = tmp_path / "new_joints" / "000000.npy"
    np.save(p, clip_joints.astype(np.float64))
    m = read_motion(p)
    assert isinstance(m, Motion) and m.format == "humanml3d" and m.fps == 20.0
    assert m.joints.dtype == np.float32 and m.joints.shape == (8, 22, 3)
    np.testing.assert_allclose(m.joints, clip_joints, atol=1e-6)
    assert read_motion(p, fps=30).fps == 30.0


def test_synth_joints3d_takes_fps_from_sibling_meta_json(tmp_path, clip_joints):
    np.save(tmp_path / "joints3d.npy", clip_joints)
    (tmp_path / "meta.json").write_text(json.dumps({"fps": 24.0, "generator": "dancegen synth"}))
    m = read_motion(tmp_path / "joints3d.npy")
    assert m.format == "synth" and m.fps == 24.0
    (tmp_path / "meta.json").write_text("{not json")  # unreadable meta.json: ignored, HumanML3D rule
    m = read_motion(tmp_path / "joints3d.npy")
    assert m.format == "humanml3d" and m.fps == 20.0


# ---- MDM results.npy --------------------------------------------------------------------------------------------


def _mdm_results(path, joints: np.ndarray, n: int = 3, lengths=(8, 5, 6)):
    motions = np.stack([joints + 0.1 * k for k in range(n)])  # (N, T, 22, 3)
    d = {
        "motion": motions.transpose(0, 2, 3, 1).astype(np.float32),  # (N, 22, 3, T)
        "text": [f"a person dances {k}" for k in range(n)],
        "lengths": np.array(lengths, dtype=np.int64),
        "num_samples": n,
        "num_repetitions": 1,
    }
    np.save(path, d)
    return motions


def test_mdm_results_npy_sample_and_trim(tmp_path, clip_joints):
    p = tmp_path / "results.npy"
    motions = _mdm_results(p, clip_joints)
    m = read_motion(p, sample=1)
    assert m.format == "mdm" and m.fps == 20.0 and m.joints.shape == (5, 22, 3)
    np.testing.assert_allclose(m.joints, motions[1, :5], atol=1e-6)
    assert m.meta["text"] == "a person dances 1" and m.meta["sample"] == 1 and m.meta["num_samples"] == 3
    assert read_motion(p).joints.shape == (8, 22, 3)
    with pytest.raises(InputError, match=r"sample 3 out of range: the file has 3 samples"):
        read_motion(p, sample=3)


def test_mdm_wrong_shape_names_found_and_expected(tmp_path):
    p = tmp_path / "results.npy"
    np.save(p, {"motion": np.zeros((2, 25, 6, 10), np.float32), "lengths": np.array([10, 10])})
    with pytest.raises(InputError, match=re.escape("(2, 25, 6, 10); expected (N, 22, 3, T)")):
        read_motion(p)


# ---- AIST++ keypoints3d -----------------------------------------------------------------------------------------


def _coco17_cm(num_frames: int = 3) -> np.ndarray:
    """A standing COCO-17 body facing +Z (its left is +X), centimetres, drifting along +X over time."""
    pts = {
        "nose": (0, 165, 10),
        "l_eye": (3, 168, 8),
        "r_eye": (-3, 168, 8),
        "l_ear": (8, 166, 0),
        "r_ear": (-8, 166, 0),
        "l_shoulder": (18, 145, 0),
        "r_shoulder": (-18, 145, 0),
        "l_elbow": (20, 118, 0),
        "r_elbow": (-20, 118, 0),
        "l_wrist": (21, 92, 0),
        "r_wrist": (-21, 92, 0),
        "l_hip": (9, 95, 0),
        "r_hip": (-9, 95, 0),
        "l_knee": (10, 52, 2),
        "r_knee": (-10, 52, 2),
        "l_ankle": (10, 9, -2),
        "r_ankle": (-10, 9, -2),
    }
    k = np.array([pts[n] for n in COCO17.joints], np.float64)
    return np.stack([k + [5.0 * t, 0, 0] for t in range(num_frames)]).astype(np.float32)


def test_aist_keypoints3d_pkl_centimetres_and_mapping(tmp_path):
    k_cm = _coco17_cm()
    p = tmp_path / "gBR_sBM_cAll_d04_mBR0_ch01.pkl"
    # keypoints3d_optim is preferred over keypoints3d when both are present
    p.write_bytes(pickle.dumps({"keypoints3d": k_cm + 50.0, "keypoints3d_optim": k_cm}, protocol=4))
    m = read_motion(p)
    assert m.format == "aist++" and m.fps == 60.0 and m.joints.shape == (3, 22, 3)
    k = k_cm.astype(np.float64) / 100.0
    c = COCO17.index
    j = m.joints
    for name in ("l_hip", "r_hip", "l_knee", "r_ankle", "l_shoulder", "r_elbow", "l_wrist"):
        np.testing.assert_allclose(j[:, H(name)], k[:, c(name)], atol=1e-6)
    pelvis = (k[:, c("l_hip")] + k[:, c("r_hip")]) / 2
    neck = (k[:, c("l_shoulder")] + k[:, c("r_shoulder")]) / 2
    np.testing.assert_allclose(j[:, H("pelvis")], pelvis, atol=1e-6)
    np.testing.assert_allclose(j[:, H("neck")], neck, atol=1e-6)
    np.testing.assert_allclose(j[:, H("spine2")], pelvis + SPINE_FRACTIONS[1] * (neck - pelvis), atol=1e-6)
    np.testing.assert_allclose(j[:, H("head")], (k[:, c("l_ear")] + k[:, c("r_ear")]) / 2, atol=1e-6)
    np.testing.assert_allclose(j[:, H("l_collar")], (neck + k[:, c("l_shoulder")]) / 2, atol=1e-6)
    # toes: ankle + FOOT_FORWARD along +Z (the body faces +Z) + FOOT_UP vertically
    np.testing.assert_allclose(j[:, H("l_foot")], k[:, c("l_ankle")] + [0, FOOT_UP, FOOT_FORWARD], atol=1e-6)
    assert set(m.meta["estimated_joints"]) == {
        "pelvis",
        "spine1",
        "spine2",
        "spine3",
        "neck",
        "head",
        "l_collar",
        "r_collar",
        "l_foot",
        "r_foot",
    }
    assert read_motion(p, fps=30).fps == 30.0


def test_aist_smpl_motion_pkl_gets_a_hint(tmp_path):
    p = tmp_path / "motion.pkl"
    p.write_bytes(pickle.dumps({"smpl_poses": np.zeros((4, 72)), "smpl_trans": np.zeros((4, 3))}))
    with pytest.raises(InputError, match="keypoints3d"):
        read_motion(p)


# ---- BVH --------------------------------------------------------------------------------------------------------

#: A 22-joint figure in metres (Mixamo/CMU names), each node (name, offset, channel order, children).
_ZXY = "Zrotation Xrotation Yrotation"


def _leg(side: str, sx: float):
    return (
        f"{side}UpLeg",
        (0.1 * sx, -0.05, 0.0),
        _ZXY,
        [
            (
                f"{side}Leg",
                (0.0, -0.4, 0.0),
                _ZXY,
                [(f"{side}Foot", (0.0, -0.4, 0.0), _ZXY, [(f"{side}ToeBase", (0.0, -0.05, 0.1), _ZXY, [None])])],
            )
        ],
    )


def _arm(side: str, sx: float, forearm_order: str = _ZXY):
    return (
        f"{side}Shoulder",
        (0.05 * sx, 0.08, 0.0),
        _ZXY,
        [
            (
                f"{side}Arm",
                (0.1 * sx, 0.0, 0.0),
                _ZXY,
                [
                    (
                        f"{side}ForeArm",
                        (0.25 * sx, 0.0, 0.0),
                        forearm_order,
                        [(f"{side}Hand", (0.25 * sx, 0.0, 0.0), _ZXY, [None])],
                    )
                ],
            )
        ],
    )


def _figure(rename=None, drop=(), short_spine=False):
    upper = [
        ("Neck", (0.0, 0.1, 0.0), _ZXY, [("Head", (0.0, 0.1, 0.0), _ZXY, [None])]),
        _arm("Left", 1.0, "Xrotation Yrotation Zrotation"),
        _arm("Right", -1.0),
    ]
    if short_spine:  # Hips -> Chest -> Neck, the neck still at 0.5 m above the hips
        spine = ("Chest", (0.0, 0.4, 0.0), _ZXY, upper)
    else:
        spine = (
            "Spine",
            (0.0, 0.1, 0.0),
            _ZXY,
            [("Spine1", (0.0, 0.15, 0.0), _ZXY, [("Spine2", (0.0, 0.15, 0.0), _ZXY, upper)])],
        )
    root = (
        "Hips",
        (0.0, 0.0, 0.0),
        "Xposition Yposition Zposition " + _ZXY,
        [_leg("Left", 1), _leg("Right", -1), spine],
    )

    def fix(node):
        if node is None:
            return None
        name, off, ch, kids = node
        kids = [fix(k) for k in kids if k is None or k[0] not in drop] or [None]
        return ((rename or {}).get(name, name), off, ch, kids)

    return fix(root)


def _write_bvh(path, root, frames: list[dict[str, dict[str, float]]], scale: float = 1.0, frame_time=0.04):
    """Write a BVH; `frames[t][joint][channel]` gives channel values (default 0; positions in metres)."""
    lines, order = ["HIERARCHY"], []

    def emit(node, depth, kind):
        ind = "  " * depth
        if node is None:
            lines.extend([f"{ind}End Site", f"{ind}{{", f"{ind}  OFFSET 0 0 {0.05 * scale}", f"{ind}}}"])
            return
        name, off, ch, kids = node
        lines.extend(
            [
                f"{ind}{kind} {name}",
                f"{ind}{{",
                f"{ind}  OFFSET " + " ".join(str(v * scale) for v in off),
                f"{ind}  CHANNELS {len(ch.split())} {ch}",
            ]
        )
        order.append((name, ch.split()))
        for k in kids:
            emit(k, depth + 1, "JOINT")
        lines.append(f"{ind}}}")

    emit(root, 0, "ROOT")
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time}"]
    for fr in frames:
        vals = []
        for name, chans in order:
            for c in chans:
                v = fr.get(name, {}).get(c, 0.0)
                vals.append(v * scale if c.endswith("position") else v)
        lines.append(" ".join(f"{v:g}" for v in vals))
    path.write_text("\n".join(lines) + "\n")


_BVH_FRAMES = [
    {"Hips": {"Yposition": 1.0}},
    # root moved and turned 90 degrees about Y; the left elbow bent by Xrotation 90, Zrotation 90 in XYZ order
    {
        "Hips": {"Xposition": 1.0, "Yposition": 1.0, "Zposition": 2.0, "Yrotation": 90.0},
        "LeftForeArm": {"Xrotation": 90.0, "Zrotation": 90.0},
    },
]


@pytest.mark.parametrize("scale,units", [(1.0, "m"), (100.0, "cm")])
def test_bvh_forward_kinematics_and_alias_mapping(tmp_path, scale, units):
    p = tmp_path / "dance.bvh"
    _write_bvh(p, _figure(), _BVH_FRAMES, scale=scale)
    m = read_motion(p)
    assert m.format == "bvh" and m.fps == pytest.approx(25.0) and m.meta["units"] == units
    j = m.joints.astype(np.float64)
    # frame 0: rest pose on the root position (0, 1, 0); offsets add up
    np.testing.assert_allclose(j[0, H("pelvis")], [0, 1, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("l_hip")], [0.1, 0.95, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("l_ankle")], [0.1, 0.15, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("l_foot")], [0.1, 0.10, 0.1], atol=1e-5)  # LeftToeBase
    np.testing.assert_allclose(j[0, H("spine3")], [0, 1.4, 0], atol=1e-5)  # Spine2
    np.testing.assert_allclose(j[0, H("neck")], [0, 1.5, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("l_collar")], [0.05, 1.48, 0], atol=1e-5)  # LeftShoulder
    np.testing.assert_allclose(j[0, H("l_shoulder")], [0.15, 1.48, 0], atol=1e-5)  # LeftArm
    np.testing.assert_allclose(j[0, H("l_wrist")], [0.65, 1.48, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("r_wrist")], [-0.65, 1.48, 0], atol=1e-5)
    # frame 1: Ry(90) maps (x, y, z) -> (z, y, -x); the elbow (0.4, 0.48, 0) above the root lands at (0, .48, -.4)
    np.testing.assert_allclose(j[1, H("pelvis")], [1, 1, 2], atol=1e-5)
    np.testing.assert_allclose(j[1, H("l_elbow")], [1, 1.48, 1.6], atol=1e-5)
    # forearm: Ry90 @ (Rx90 @ Rz90) @ (0.25, 0, 0) = Ry90 @ (0, 0, 0.25) = (0.25, 0, 0) (channel order X then Z);
    # the opposite order (Rz90 @ Rx90) would put the wrist at (1, 1.73, 1.6)
    np.testing.assert_allclose(j[1, H("l_wrist")], [1.25, 1.48, 1.6], atol=1e-5)
    np.testing.assert_allclose(j[1, H("l_hip")], [1, 0.95, 1.9], atol=1e-5)
    sj = m.meta["source_joints"]
    assert (sj["l_collar"], sj["l_shoulder"], sj["l_ankle"], sj["l_foot"]) == (
        "LeftShoulder",
        "LeftArm",
        "LeftFoot",
        "LeftToeBase",
    )
    assert (sj["spine1"], sj["spine2"], sj["spine3"]) == ("Spine", "Spine1", "Spine2")
    assert m.meta["estimated_joints"] == []


def test_bvh_smpl_names_resolve_shoulder_collar_and_foot(tmp_path):
    names = {"Hips": "Pelvis", "Spine": "Spine1", "Spine1": "Spine2", "Spine2": "Spine3"}
    for side, s in (("Left", "L"), ("Right", "R")):
        names.update(
            {
                f"{side}UpLeg": f"{s}_Hip",
                f"{side}Leg": f"{s}_Knee",
                f"{side}Foot": f"{s}_Ankle",
                f"{side}ToeBase": f"{s}_Foot",
                f"{side}Shoulder": f"{s}_Collar",
                f"{side}Arm": f"{s}_Shoulder",
                f"{side}ForeArm": f"{s}_Elbow",
                f"{side}Hand": f"{s}_Wrist",
            }
        )
    _write_bvh(tmp_path / "smpl.bvh", _figure(rename=names), [{"Pelvis": {"Yposition": 1.0}}])
    m = read_motion(tmp_path / "smpl.bvh")
    sj = m.meta["source_joints"]
    assert (sj["l_collar"], sj["l_shoulder"], sj["l_ankle"], sj["l_foot"], sj["r_wrist"], sj["spine1"]) == (
        "L_Collar",
        "L_Shoulder",
        "L_Ankle",
        "L_Foot",
        "R_Wrist",
        "Spine1",
    )
    np.testing.assert_allclose(m.joints[0, H("l_shoulder")], [0.15, 1.48, 0], atol=1e-5)


def test_bvh_short_spine_is_resampled_and_toe_falls_back_to_end_site(tmp_path):
    _write_bvh(tmp_path / "short.bvh", _figure(drop=("LeftToeBase",), short_spine=True), _BVH_FRAMES[:1])
    m = read_motion(tmp_path / "short.bvh")
    j = m.joints.astype(np.float64)
    np.testing.assert_allclose(j[0, H("neck")], [0, 1.5, 0], atol=1e-5)
    for name, f in zip(
        ("spine1", "spine2", "spine3"), SPINE_FRACTIONS, strict=True
    ):  # along the 0.5 m pelvis -> neck path
        np.testing.assert_allclose(j[0, H(name)], [0, 1 + 0.5 * f, 0], atol=1e-5)
    np.testing.assert_allclose(j[0, H("l_foot")], [0.1, 0.15, 0.05], atol=1e-5)  # LeftFoot's End Site
    np.testing.assert_allclose(j[0, H("r_foot")], [-0.1, 0.10, 0.1], atol=1e-5)  # RightToeBase
    assert m.meta["estimated_joints"] == ["spine1", "spine2", "spine3"]
    assert m.meta["source_joints"]["l_foot"] == "LeftFoot/End Site"


def test_bvh_missing_joint_is_named(tmp_path):
    _write_bvh(tmp_path / "nohand.bvh", _figure(drop=("LeftHand",)), _BVH_FRAMES[:1])
    with pytest.raises(InputError, match=r"no joint for l_wrist \(for l_wrist looked for LeftWrist, LeftHand"):
        read_motion(tmp_path / "nohand.bvh")


def test_bvh_frame_count_mismatch(tmp_path):
    p = tmp_path / "bad.bvh"
    _write_bvh(p, _figure(), _BVH_FRAMES)
    p.write_text(p.read_text().replace("Frames: 2", "Frames: 3"))
    with pytest.raises(InputError, match="Frames: 3"):
        read_motion(p)


# ---- restricted unpickler -----------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("container", ["pkl", "npy"])
def test_restricted_unpickler_refuses_os_system(tmp_path, monkeypatch, container):
    monkeypatch.chdir(tmp_path)
    payload = {"keypoints3d": _Evil(os.system, "touch PWNED")}
    p = tmp_path / f"evil.{container}"
    if container == "pkl":
        p.write_bytes(pickle.dumps(payload))
    else:
        np.save(p, payload)  # a 0-d object array: header says dtype object, payload is a pickle
    with pytest.raises(InputError) as exc:
        read_motion(p)
    assert not (tmp_path / "PWNED").exists()
    msg = str(exc.value)
    assert re.search(r"refuses to unpickle (os|posix|nt)\.system", msg), msg
    assert str(p) in msg and "\n" not in msg


def test_restricted_unpickler_refuses_eval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pickle.dumps(_Evil(eval, "__import__('os').system('touch PWNED')"))
    with pytest.raises(InputError, match=r"refuses to unpickle builtins\.eval"):
        safe_unpickle(data)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_restricted_unpickler_accepts_numpy_data(protocol):
    d = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "s": np.float32(1.5),
        "i": np.int64(7),
        "t": ["x", "y"],
        "set": {1, 2},
        "b": b"raw",
        "c": 1 + 2j,
        "o": np.array(["u", "v"]),
        "nested": (np.zeros(2, bool), None),
    }
    out = safe_unpickle(pickle.dumps(d, protocol=protocol))
    assert out.keys() == d.keys()
    np.testing.assert_array_equal(out["a"], d["a"])
    assert out["a"].dtype == np.float32 and out["s"] == np.float32(1.5) and isinstance(out["i"], np.int64)
    assert out["t"] == ["x", "y"] and out["set"] == {1, 2} and out["b"] == b"raw" and out["c"] == 1 + 2j
    np.testing.assert_array_equal(out["o"], d["o"])


def test_truncated_pickle_is_an_input_error(tmp_path):
    p = tmp_path / "cut.pkl"
    p.write_bytes(pickle.dumps({"keypoints3d": np.zeros((2, 17, 3))})[:40])
    with pytest.raises(InputError, match="not a readable data pickle"):
        read_motion(p)


# ---- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,array,message",
    [
        ("shape.npy", np.zeros((5, 17, 3)), "shape (5, 17, 3); expected (T, 22, 3)"),
        ("feats.npy", np.zeros((5, 263)), "new_joint_vecs"),
        ("zero.npy", np.zeros((0, 22, 3)), "zero frames"),
        ("nan.npy", np.where(np.arange(66).reshape(1, 22, 3) == 7, np.nan, 0.0), "NaN or inf"),
        ("far.npy", np.full((2, 22, 3), 2e4), "beyond 1e+04 m"),
    ],
)
def test_bad_arrays_raise_input_error(tmp_path, name, array, message):
    np.save(tmp_path / name, array)
    with pytest.raises(InputError, match=re.escape(message)) as exc:
        read_motion(tmp_path / name)
    assert exc.value.path == str(tmp_path / name)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="no such motion file"):
        read_motion(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown motion format"):
        read_motion(tmp_path / "x.txt")
    (tmp_path / "fake.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="no NUMPY magic"):
        read_motion(tmp_path / "fake.npy")


def test_cli_pose_convert_bad_motion_file_is_one_line_exit_2(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 17, 3)))
    r = runner.invoke(
        app, ["pose", "convert", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "out")], terminal_width=400
    )
    _one_line_error(r, "bad.npy", "(T, 22, 3)")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"keypoints3d": _Evil(os.system, "true")}))
    r = runner.invoke(app, ["pose", "convert", str(evil), "-o", str(tmp_path / "out2")], terminal_width=400)
    _one_line_error(r, "refuses to unpickle")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


# ---- projection and the pose verbs ------------------------------------------------------------------------------


def test_project_motion_front_camera(clip_joints):
    seq = project_motion(Motion(clip_joints, 24.0, "synth"), width=256, height=192)
    assert seq.format == "coco18" and (seq.width, seq.height, seq.fps) == (256, 192, 24.0)
    c = COCO18.index
    k = seq.keypoints
    body = [c(n) for n in ("neck", "r_shoulder", "l_shoulder", "r_hip", "l_hip", "r_ankle", "l_ankle")]
    assert (k[:, body, 2] == 1).all()
    xy = k[:, body, :2]
    assert (xy >= 0).all() and (xy[..., 0] < 256).all() and (xy[..., 1] < 192).all()
    neck, ls, rs = k[:, c("neck"), :2], k[:, c("l_shoulder"), :2], k[:, c("r_shoulder"), :2]
    np.testing.assert_allclose(neck, (ls + rs) / 2, atol=1e-3)
    assert (np.minimum(ls[:, 0], rs[:, 0]) < neck[:, 0]).all() and (neck[:, 0] < np.maximum(ls[:, 0], rs[:, 0])).all()
    # seen from the front (camera on +Z), the person's left shoulder is on the image's right
    assert (ls[:, 0] > rs[:, 0]).all()
    hips_y = (k[:, c("l_hip"), 1] + k[:, c("r_hip"), 1]) / 2
    assert (k[:, c("nose"), 1] < neck[:, 1]).all() and (neck[:, 1] < hips_y).all()
    assert seq.meta["motion"]["format"] == "synth"


def test_pose_convert_and_render_a_synth_joints3d(tmp_path, clip_joints):
    src = tmp_path / "clip" / "joints3d.npy"
    src.parent.mkdir()
    np.save(src, clip_joints)
    (src.parent / "meta.json").write_text(json.dumps({"fps": 24.0}))
    out = tmp_path / "poses"
    r = runner.invoke(app, ["pose", "convert", str(src), "-o", str(out), "--image-size", "96x64"])
    assert r.exit_code == 0, r.output
    files = sorted((out / "openpose_json").glob("*.json"))
    frames = [f for f in files if f.name != "pose_meta.json"]
    assert len(frames) == 8 and (out / "pose.mp4").exists()
    meta = json.loads((out / "openpose_json" / "pose_meta.json").read_text())
    assert (meta["width"], meta["height"], meta["fps"]) == (96, 64, 24.0)
    people = json.loads(frames[0].read_text())["people"]
    assert len(people) == 1 and len(people[0]["pose_keypoints_2d"]) == 54

    video = tmp_path / "maps.mp4"
    r = runner.invoke(app, ["pose", "render", str(src), "-o", str(video), "--width", "64", "--height", "64"])
    assert r.exit_code == 0, r.output
    assert video.stat().st_size > 0 and "frames: 8" in r.output


def test_pose_convert_aist_pkl_to_coco17_npz(tmp_path):
    from dancegen.pose.openpose_json import load_npz

    p = tmp_path / "k3d.pkl"
    p.write_bytes(pickle.dumps({"keypoints3d": _coco17_cm(4)}))
    r = runner.invoke(app, ["pose", "convert", str(p), "-o", str(tmp_path / "p.npz"), "--to", "coco17"])
    assert r.exit_code == 0, r.output
    seq = load_npz(tmp_path / "p.npz")
    assert seq.format == "coco17" and seq.num_frames == 4 and seq.fps == 60.0


def test_import_is_cheap():
    code = (
        "import sys, dancegen.motion, dancegen.motion.io, dancegen.motion.safe_pickle; "
        "print(','.join(m for m in ('torch', 'scipy', 'cv2', 'av', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
