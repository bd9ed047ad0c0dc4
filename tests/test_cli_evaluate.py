"""`dancegen evaluate` end to end on the synthetic world: pairing, side inputs, report files, rhythm on real dancers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dancegen.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from dancegen import api

    root = tmp_path_factory.mktemp("world")
    api.synth(root, num_clips=2, size=96, num_frames=12, fps=24, seed=5, flow=False)
    return root


def _run(args):
    r = runner.invoke(app, args, terminal_width=200)
    return r.exit_code, r.output


def test_report_json_and_csv_with_protocol(world, tmp_path):
    a, b = world / "clip_00000", world / "clip_00001"
    code, out = _run(["evaluate", "-m", "psnr,psnr-disco,ssim,niqe-body,h-mse", "--pred", str(a / "video.mp4"),
                      "--gt", str(b / "video.mp4"), "--masks", str(a / "masks"), "--iuv", str(a / "iuv.npz"),
                      "--max-frames", "4", "-o", str(tmp_path / "r.json")])
    assert code == 0, out
    rep = json.loads((tmp_path / "r.json").read_text())
    m = rep["metrics"]
    assert set(m) == {"psnr", "psnr-disco", "ssim", "niqe-body", "h-mse"}
    assert m["psnr-disco"]["value"] > m["psnr"]["value"]  # the uint8 wrap-around inflates legacy PSNR
    assert m["niqe-body"]["protocol"]["region"] == "body" and m["psnr"]["protocol"]["num_videos"] == 1
    assert (tmp_path / "r.csv").read_text().count("\n") >= 2
    # Rerun resumes from the cache and gives the same numbers.
    code, out = _run(["evaluate", "-m", "psnr,h-mse", "--pred", str(a / "video.mp4"), "--gt", str(b / "video.mp4"),
                      "--iuv", str(a / "iuv.npz"), "--max-frames", "4", "-o", str(tmp_path / "r.json")])
    assert code == 0, out
    rep2 = json.loads((tmp_path / "r.json").read_text())
    assert rep2["metrics"]["psnr"]["value"] == m["psnr"]["value"]


def test_identical_videos_score_perfectly(world, tmp_path):
    v = world / "clip_00000" / "video.mp4"
    code, out = _run(["evaluate", "-m", "psnr,ssim,l1", "--pred", str(v), "--gt", str(v), "-o", str(tmp_path / "r.json")])
    assert code == 0, out
    m = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert m["ssim"]["value"] == pytest.approx(1.0) and m["l1"]["value"] == 0.0
    assert m["psnr"]["value"] is None and "infinite for 1 video" in m["psnr"]["note"]
    # issue 15: `-o NAME` without .json writes NAME.json and says so (it printed NAME)
    code, out = _run(["evaluate", "-m", "l1", "--pred", str(v), "--gt", str(v), "-o", str(tmp_path / "rep")])
    assert code == 0 and (tmp_path / "rep.json").is_file() and not (tmp_path / "rep").exists()
    assert f"report: {tmp_path / 'rep.json'}" in out.replace("\n", ""), out


@pytest.mark.parametrize("args,needle", [
    (["-m", "nope", "--pred", "{a}/video.mp4"], "nope"),
    (["-m", "psnr", "--pred", "{a}/video.mp4"], "--gt"),
    (["-m", "niqe-body", "--pred", "{a}/video.mp4"], "--masks"),
    (["-m", "psnr", "--pred", "{a}/video.mp4", "--gt", "{a}/audio.wav"], "audio.wav"),
    (["-m", "fvd", "--pred", "{a}/video.mp4", "--gt", "{a}/video.mp4", "--weights-dir", "{a}"], "i3d"),
])
def test_evaluate_errors_are_one_line(world, args, needle):
    code, out = _run(["evaluate", *[x.format(a=world / "clip_00000") for x in args]])
    assert code == 2, out
    assert out.strip().startswith("error:") and needle in out and "Traceback" not in out


def test_mismatched_frame_counts_are_an_error(world, tmp_path):
    from dancegen.io.video import read_video, write_video

    v = read_video(world / "clip_00000" / "video.mp4")
    write_video(tmp_path / "short.mp4", v.frames[:8], v.fps)
    code, out = _run(["evaluate", "-m", "psnr", "--pred", str(tmp_path / "short.mp4"),
                      "--gt", str(world / "clip_00000" / "video.mp4")])
    assert code == 2 and "frame counts differ" in out and "--frames min" in out
    code, out = _run(["evaluate", "-m", "psnr", "--pred", str(tmp_path / "short.mp4"),
                      "--gt", str(world / "clip_00000" / "video.mp4"), "--frames", "min"])
    assert code == 0, out


def test_synthetic_dancer_on_the_beat_scores_higher_than_shifted_off_it():
    """BAS and 2D-MM Align of a `dancegen synth` dancer against its own music, vs the same dancer half a beat late."""
    from dancegen.metrics.rhythm import beat_alignment_score, mm_align_2d, motion_beats_from_keypoints, music_beats
    from dancegen.synth import render_clip

    on, off = [], []
    for seed in (0, 1, 2):
        clip = render_clip(seed=seed, num_frames=144, fps=24, size=96, render=False, flow=False)
        music = music_beats(clip.audio, clip.sample_rate, clip.fps)
        half_beat = int(round(0.5 * 60.0 / clip.bpm * clip.fps))
        for kps, scores in ((clip.keypoints, on), (np.roll(clip.keypoints, half_beat, axis=0), off)):
            motion = motion_beats_from_keypoints(kps, clip.fps)
            scores.append((beat_alignment_score(motion, music, direction="music"), mm_align_2d(kps, music, clip.fps)))
    on, off = np.array(on), np.array(off)
    assert (on[:, 0] > off[:, 0] + 0.15).all(), (on, off)   # BAS
    assert (on[:, 1] > off[:, 1] + 0.15).all(), (on, off)   # 2D-MM Align
