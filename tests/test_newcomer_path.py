"""The first thing a new user tries works: `dancegen synth`, a frame of one clip as the photo, another clip's poses,
`dancegen animate`, all with the defaults (bundled models)."""

from __future__ import annotations

from typer.testing import CliRunner

from dancegen.cli import app

runner = CliRunner()


def test_a_synth_frame_as_the_reference_animates_with_another_clips_poses(tmp_path):
    from dancegen.io.video import read_video, video_info, write_image

    r = runner.invoke(app, ["synth", "-o", str(tmp_path / "s"), "--num-clips", "2"])  # the defaults: 256 px, 4 s
    assert r.exit_code == 0, r.output
    frame = tmp_path / "frame.png"
    write_image(frame, read_video(tmp_path / "s" / "clip_00000" / "video.mp4").frames[0])
    out = tmp_path / "out.mp4"
    r = runner.invoke(app, ["animate", "--ref", str(frame), "--poses", str(tmp_path / "s" / "clip_00001" /
                                                                               "openpose_json"),
                            "-o", str(out), "--frames", "4", "--steps", "2"])
    assert r.exit_code == 0, r.output
    # BlazePose misses the small synthetic dancer: the bundled SynthPose takes over, and says so
    assert "using the bundled SynthPose estimator" in r.output
    # the 64 px toy says what it is, and the video is written at the photo's scale, not as a thumbnail
    assert "toy trained on the synthetic world" in r.output
    info = video_info(out)
    assert (info["width"], info["height"]) == (256, 256) and info["num_frames"] == 4
