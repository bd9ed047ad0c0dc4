"""`compute_flow` (the `dancegen flow` verb): pose and video sources, outputs, ground-truth EPE, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.flow.compute import compute_flow
from dancegen.flow.io import load_flow_npz, read_flow_folder, save_flow_npz
from dancegen.flow.pose_flow import pose_sequence_flow
from dancegen.pose.sequence import PoseSequence

_STAND = np.array([
    [0, -40], [0, -30], [-12, -29], [-22, -15], [-30, -2], [12, -29], [22, -15], [30, -2],
    [-8, 0], [-9, 20], [-10, 40], [8, 0], [9, 20], [10, 40], [-3, -42], [3, -42], [-5, -41], [5, -41],
], np.float32)


def _seq(n=3, size=96):
    k = np.ones((n, 18, 3), np.float32)
    for t in range(n):
        k[t, :, :2] = _STAND + [40 + 3 * t, 48]
    return PoseSequence(k, "coco18", size, size, fps=8.0)


def test_pose_method_writes_flo_pictures_preview_and_gt_epe(tmp_path):
    seq = _seq()
    gt = tmp_path / "gt.npz"
    save_flow_npz(gt, pose_sequence_flow(seq, "forward"), "forward")
    rep = compute_flow(seq, tmp_path / "out", method="pose", gt=gt)
    out = tmp_path / "out"
    assert rep["num_pairs"] == 2 and (rep["height"], rep["width"]) == (96, 96)
    assert (out / "flo" / "frame_00001.flo").is_file() and (out / "flo" / "frame_00001.png").is_file()
    assert (out / "preview.mp4").stat().st_size > 0
    assert json.loads((out / "report.json").read_text()) == rep
    assert rep["gt"]["epe"] == pytest.approx(0.0, abs=1e-6)
    flows = read_flow_folder(out / "flo").flow
    assert flows.shape == (2, 2, 96, 96)
    body = np.abs(flows[0]).sum(0) > 0
    np.testing.assert_allclose(flows[0, 0][body], 3.0, atol=1e-4)


def test_openpose_folder_source_size_and_npz_output(tmp_path):
    from dancegen.pose.openpose_json import write_openpose_folder

    write_openpose_folder(_seq(), tmp_path / "poses")
    rep = compute_flow(tmp_path / "poses", tmp_path / "out", method="pose", direction="backward", size=48,
                       output_format="npz", preview=False)
    d = load_flow_npz(tmp_path / "out" / "flows.npz")
    assert d.flow.shape == (2, 2, 48, 48) and d.direction == "backward" and d.meta["method"] == "pose"
    body = np.abs(d.flow[0]).sum(0) > 0
    np.testing.assert_allclose(d.flow[0, 0][body], -1.5, atol=1e-3)  # 3 px at 96 -> 1.5 px at 48, backward
    assert len(list((tmp_path / "out" / "color").glob("*.png"))) == 2
    assert "preview" not in rep["outputs"]


def test_dis_on_rendered_pose_maps_and_on_video(tmp_path):
    from dancegen.io.video import write_video

    seq = _seq()
    gt = tmp_path / "gt.npz"
    save_flow_npz(gt, pose_sequence_flow(seq, "forward"), "forward")
    rep = compute_flow(seq, tmp_path / "dis", method="dis", gt=gt, preview=False)
    assert rep["method"] == "dis" and rep["gt"]["epe"] < rep["mean_magnitude"] + 1.0
    rng = np.random.default_rng(0)
    frames = np.repeat((rng.random((1, 64, 64, 1)) * 255).astype(np.uint8), 3, 0).repeat(3, -1)
    write_video(tmp_path / "clip", frames, fps=5.0)  # a folder of PNG frames
    rep = compute_flow(tmp_path / "clip", tmp_path / "vid", method="farneback", preview=True)
    assert rep["num_pairs"] == 2 and rep["mean_magnitude"] < 0.05  # identical frames: no motion
    assert (tmp_path / "vid" / "preview.mp4").is_file()


def test_errors(tmp_path):
    from dancegen.io.video import write_video

    frames = np.zeros((2, 32, 32, 3), np.uint8)
    write_video(tmp_path / "clip", frames, fps=5.0)
    with pytest.raises(InputError, match="needs poses"):
        compute_flow(tmp_path / "clip", tmp_path / "o", method="pose")
    with pytest.raises(InputError, match="unknown flow method"):
        compute_flow(_seq(), tmp_path / "o", method="optical")
    with pytest.raises(InputError, match="not found"):
        compute_flow(tmp_path / "missing", tmp_path / "o")
    with pytest.raises(InputError, match="at least 2"):
        compute_flow(_seq(1), tmp_path / "o")
    gt = tmp_path / "gt.npz"
    save_flow_npz(gt, np.zeros((2, 2, 96, 96), np.float32), "backward")
    with pytest.raises(InputError, match="backward"):
        compute_flow(_seq(), tmp_path / "o", gt=gt, preview=False)
