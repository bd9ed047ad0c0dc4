"""The pose and flow verbs end to end through the CLI, including error paths (one line, exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests_helpers import dance_sequence
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.pose.openpose_json import load_npz, read_openpose_folder, write_openpose_folder

runner = CliRunner()

_dance = dance_sequence


def _run(args):
    r = runner.invoke(app, args, terminal_width=200)
    return r.exit_code, r.output  # CliRunner mixes stderr into output


def test_convert_roundtrip_through_cli(tmp_path):
    write_openpose_folder(_dance(), tmp_path / "poses")
    code, out = _run(["pose", "convert", str(tmp_path / "poses"), "--to", "coco17", "-o", str(tmp_path / "c17.npz")])
    assert code == 0, out
    assert load_npz(tmp_path / "c17.npz").format == "coco17"
    code, out = _run(["pose", "convert", str(tmp_path / "c17.npz"), "--to", "coco18", "-o", str(tmp_path / "back")])
    assert code == 0, out
    back = read_openpose_folder(tmp_path / "back" / "openpose_json")
    assert np.allclose(back.keypoints[..., :2], _dance().keypoints[..., :2], atol=1e-3)  # neck rebuilt exactly
    assert (tmp_path / "back" / "pose.mp4").is_file()


def test_retarget_onto_smaller_reference(tmp_path):
    write_openpose_folder(_dance(), tmp_path / "drv")
    ref = _dance(num_frames=1, scale=0.5, shift=(-20, 10))
    from dancegen.pose.openpose_json import save_npz

    save_npz(ref, tmp_path / "ref.npz")
    code, out = _run(["pose", "retarget", str(tmp_path / "drv"), "--ref", str(tmp_path / "ref.npz"),
                      "-o", str(tmp_path / "rt")])
    assert code == 0, out
    rt = read_openpose_folder(tmp_path / "rt" / "openpose_json")
    # The first frame lands on the reference body: same neck, half the body height.
    assert np.allclose(rt.keypoints[0, 1, :2], ref.keypoints[0, 1, :2], atol=1e-3)
    height = lambda k: k[:, 13, 1].mean() - k[:, 0, 1].mean()  # noqa: E731
    assert height(rt.keypoints) == pytest.approx(0.5 * height(_dance().keypoints), rel=0.05)


def test_flow_from_poses_reports_epe_against_ground_truth(tmp_path):
    from dancegen.flow.io import save_flow_npz

    seq = _dance()
    write_openpose_folder(seq, tmp_path / "poses")
    gt = np.zeros((seq.num_frames - 1, 2, 128, 128), np.float32)
    gt[:, 0] = 1.0  # the whole body drifts one pixel right per frame
    save_flow_npz(tmp_path / "gt.npz", gt, "forward", {})
    code, out = _run(["-v", "flow", str(tmp_path / "poses"), "-o", str(tmp_path / "flow"), "--gt", str(tmp_path / "gt.npz")])
    assert code == 0, out
    rep = json.loads((tmp_path / "flow" / "report.json").read_text())
    assert rep["num_pairs"] == 5 and len(list((tmp_path / "flow" / "flo").glob("*.flo"))) == 5
    assert "epe" in rep["gt"]


@pytest.mark.parametrize("setup,args,needle", [
    (lambda p: (p / "bad").mkdir() or (p / "bad" / "f_0.json").write_text("{not json"),
     ["pose", "render", "{p}/bad", "-o", "{p}/x.mp4"], "f_0.json"),
    (lambda p: None, ["pose", "convert", "{p}/missing", "-o", "{p}/x.npz"], "missing"),
    (lambda p: write_openpose_folder(_dance(), p / "poses"),
     ["pose", "convert", "{p}/poses", "--to", "coco99", "-o", "{p}/x.npz"], "coco99"),
    (lambda p: (p / "emptyfolder").mkdir(), ["flow", "{p}/emptyfolder", "-o", "{p}/f", "--method", "dis"],
     "emptyfolder"),
    (lambda p: write_openpose_folder(_dance(), p / "poses"),
     ["flow", "{p}/poses", "-o", "{p}/f", "--method", "raft", "--weights", "{p}/nope.pth"], "nope.pth"),
    (lambda p: (p / "v.mp4").write_bytes(b"garbage" * 20), ["flow", "{p}/v.mp4", "-o", "{p}/f", "--method", "dis"],
     "v.mp4"),
])
def test_errors_are_one_line_exit_2_naming_the_file(tmp_path, setup, args, needle):
    setup(tmp_path)
    code, out = _run([a.format(p=tmp_path) for a in args])
    assert code == 2, out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.npz").exists()


def test_flow_gt_with_mismatched_frame_count_is_an_error(tmp_path):
    from dancegen.flow.io import save_flow_npz

    write_openpose_folder(_dance(), tmp_path / "poses")
    save_flow_npz(tmp_path / "gt.npz", np.zeros((9, 2, 128, 128), np.float32), "forward", {})
    code, out = _run(["flow", str(tmp_path / "poses"), "-o", str(tmp_path / "f"), "--gt", str(tmp_path / "gt.npz")])
    assert code == 2 and "gt.npz" in out, out
