"""CLI misuse and batch behaviour found in review: bad choices, foreign OpenPose JSON, failing batch items, reruns
with changed options, non-flow output folders. Every error is exactly one `error:` line (batches: a header plus one
line per failed item), exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests_helpers import dance_sequence
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.io.video import write_video
from dancegen.pose.openpose_json import write_openpose_folder

runner = CliRunner()


def _run(args):
    r = runner.invoke(app, [str(a) for a in args], terminal_width=200)
    return r.exit_code, r.output


def _one_error_line(out: str) -> str:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out, out
    return lines[0]


@pytest.fixture
def poses(tmp_path):
    write_openpose_folder(dance_sequence(), tmp_path / "poses")
    return tmp_path / "poses"


@pytest.mark.parametrize("args,needle", [
    (["pose", "render", "{poses}", "-o", "{tmp}/x.avi"], "x.avi"),
    (["pose", "retarget", "{poses}", "--ref", "{poses}", "-o", "{tmp}/r", "--root", "foot"], "--root"),
    (["pose", "convert", "{poses}", "--to", "humanml3d22", "-o", "{tmp}/c.npz"], "humanml3d22"),
    (["synth", "-o", "{tmp}/s", "--camera", "fly", "--frames", "4", "--size", "64"], "fly"),
    (["synth", "-o", "{tmp}/s", "--size", "16", "--frames", "4"], "--size"),
    (["--device", "tpu", "synth", "-o", "{tmp}/s"], "--device"),
    (["flow", "{poses}", "-o", "{tmp}/f", "--shard", "3/2"], "--shard"),
])
def test_bad_choices_are_one_line_errors(tmp_path, poses, args, needle):
    code, out = _run([a.format(poses=poses, tmp=tmp_path) for a in args])
    assert code == 2, out
    assert needle in _one_error_line(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses"]  # nothing written


def test_openpose_json_without_image_size_from_other_tools(tmp_path, poses):
    (poses / "pose_meta.json").unlink()  # as OpenPose / controlnet_aux write them
    code, out = _run(["flow", poses, "-o", tmp_path / "f"])
    assert code == 2 and "image size unknown" in _one_error_line(out)
    code, out = _run(["flow", poses, "-o", tmp_path / "f", "--image-size", "128x128"])
    assert code == 0, out
    assert json.loads((tmp_path / "f" / "report.json").read_text())["width"] == 128
    code, out = _run(["pose", "render", poses, "-o", tmp_path / "r.mp4", "--width", "128", "--height", "128"])
    assert code == 0, out
    code, out = _run(["extract-pose", poses, "-o", tmp_path / "e", "--backend", "openpose-json",
                      "--image-size", "128x128", "--no-video", "--no-maps"])
    assert code == 0, out


def _videos(folder, bad=True):
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = (rng.random((1, 32, 32, 3)) * 255).astype(np.uint8)
    frames = np.concatenate([np.roll(base, t, axis=2) for t in range(4)])
    write_video(folder / "a.mp4", frames, fps=8)
    if bad:
        (folder / "b.mp4").write_bytes(b"not a video" * 30)
    return folder


def test_batch_with_a_failing_item_exits_2_and_keeps_finished_items(tmp_path):
    vids = _videos(tmp_path / "vids")
    code, out = _run(["flow", vids, "-o", tmp_path / "f", "--method", "dis"])
    assert code == 2 and "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: 1 of 2 items failed") and "b.mp4" in lines[1]
    assert (tmp_path / "f" / "a" / "report.json").is_file() and not (tmp_path / "f" / "b").exists()


def test_batch_rerun_skips_same_options_and_redoes_changed_ones(tmp_path):
    vids = _videos(tmp_path / "vids", bad=False)
    assert _run(["flow", vids, "-o", tmp_path / "f", "--method", "dis"])[0] == 0
    code, out = _run(["-v", "flow", vids, "-o", tmp_path / "f", "--method", "dis"])
    assert code == 0 and "0 done, 1 skipped" in out, out
    code, out = _run(["-v", "flow", vids, "-o", tmp_path / "f", "--method", "farneback"])
    assert code == 0 and "1 done, 0 skipped" in out, out
    assert json.loads((tmp_path / "f" / "a" / "report.json").read_text())["method"] == "farneback"


def test_synth_rerun_with_other_options_is_refused(tmp_path):
    assert _run(["synth", "-o", tmp_path / "s", "--size", "64", "--frames", "4"])[0] == 0
    code, out = _run(["synth", "-o", tmp_path / "s", "--size", "96", "--frames", "4"])
    assert code == 2 and "size" in _one_error_line(out)
    assert json.loads((tmp_path / "s" / "synth.json").read_text())["size"] == [64, 64]
    assert _run(["synth", "-o", tmp_path / "s", "--size", "96", "--frames", "4", "--overwrite"])[0] == 0


def test_flow_never_replaces_a_folder_that_is_not_a_flow_output(tmp_path, poses):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    code, out = _run(["flow", poses, "-o", tmp_path / "mine"])
    assert code == 2 and "not a flow output" in _one_error_line(out)
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"


def test_synth_backward_flow_records_its_direction(tmp_path):
    assert _run(["synth", "-o", tmp_path / "s", "--size", "64", "--frames", "4"])[0] == 0
    clip = tmp_path / "s" / "clip_00000"
    code, out = _run(["flow", clip / "openpose_json", "-o", tmp_path / "f", "--gt", clip / "flow_backward.npz"])
    assert code == 2 and "backward" in _one_error_line(out)


@pytest.mark.parametrize("args,needle", [
    (["synth", "-o", "{tmp}/s", "--fps", "nan"], "--fps"),
    (["synth", "-o", "{tmp}/s", "--fps", "inf"], "--fps"),
    (["synth", "-o", "{tmp}/s", "--seconds", "nan"], "--seconds"),
    (["--seed", "-1", "synth", "-o", "{tmp}/s"], "--seed"),
    (["--seed", str(2**32), "synth", "-o", "{tmp}/s"], "--seed"),
])
def test_non_finite_and_out_of_range_numbers_are_one_line_errors(tmp_path, args, needle):
    """Issue 15: `synth --fps nan` and `--seed -1` were tracebacks (NaN passed `fps <= 0`; numpy refused -1)."""
    code, out = _run([a.format(tmp=tmp_path) for a in args])
    assert code == 2 and needle in _one_error_line(out)
    assert not (tmp_path / "s").exists()


def test_zero_is_not_a_silent_default(tmp_path, poses):
    """Issue 15: `--fps 0` meant "not given" (the model's / the file's rate); now it is refused, in under a second,
    before any model loads."""
    img = tmp_path / "ref.png"
    from dancegen.io.video import write_image

    write_image(img, np.zeros((64, 64, 3), np.uint8))
    song = tmp_path / "song.wav"
    from dancegen.io.audio import write_audio

    write_audio(song, np.zeros(22050, np.float32), 22050)
    for args, needle in (
        (["music2dance", song, "--ref", img, "-o", tmp_path / "d.mp4", "--fps", "0"], "--fps"),
        (["music2dance", song, "--ref", img, "-o", tmp_path / "d.mp4", "--seconds", "-1"], "--seconds"),
        (["music2dance", song, "--ref", img, "-o", tmp_path / "d.mp4", "--start", "nan"], "--start"),
        (["pose", "convert", poses, "-o", tmp_path / "p.npz", "--fps", "0"], "--fps"),
    ):
        code, out = _run(args)
        assert code == 2 and needle in _one_error_line(out), out
    assert not (tmp_path / "d.mp4").exists() and not (tmp_path / "p.npz").exists()


def test_help_lists_what_exists():
    """Issue 15 (clarity): `pose convert --to` names its formats; the top-level help does not advertise verbs that do
    not exist yet; the demo help does not hedge about a model that is bundled."""
    from dancegen.pose.convert import FORMATS

    code, out = _run(["pose", "convert", "--help"])
    assert code == 0 and all(f in out for f in FORMATS), out
    code, out = _run(["--help"])
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for verb in ("text2character", "finetune-oneshot"):
        assert (verb in registered) == (verb in out)
    assert ("still to come" in out) == ("text2character" not in registered), out
    code, out = _run(["demo", "--help"])
    assert code == 0 and "once one is installed" not in out


def test_quiet_silences_other_libraries_and_restores_them(tmp_path):
    """Issue 15: --quiet left diffusers' / transformers' tqdm bars ("Writing model shards") on stderr."""
    import os

    args = ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "--set", "data.num_clips=2", "--set", "data.num_frames=4",
            "--set", "data.frame_step=2", "--set", "data.captions_per_clip=2",
            "--set", "model.vae_from=dyl-tiny", "--set", "train.stages=[{name: t2i, steps: 1, lr: 1e-3, batch_size: 2}]"]
    code, loud = _run(args + ["-o", tmp_path / "loud"])
    assert code == 0 and "Writing model shards" in loud, loud
    code, quiet = _run(["-q"] + args + ["-o", tmp_path / "quiet"])
    assert code == 0 and quiet.strip() == "", quiet
    assert (tmp_path / "quiet" / "model" / "unet").is_dir()
    assert "TQDM_DISABLE" not in os.environ  # the switch lasts for the command only


def test_a_recipe_of_another_method_is_named_before_loading(tmp_path, poses):
    """Issue 15: `animate --recipe <a dance-any-beat recipe>` loaded the model, then failed with a type error."""
    import time

    from dancegen.io.video import write_image

    write_image(tmp_path / "ref.png", np.zeros((64, 64, 3), np.uint8))
    t0 = time.perf_counter()
    code, out = _run(["animate", "--ref", tmp_path / "ref.png", "--poses", poses, "-o", tmp_path / "a.mp4",
                      "--recipe", "recipes/dance_any_beat/tiny_synth.yaml"])
    line = _one_error_line(out)
    assert code == 2 and "for method dance-any-beat" in line and "tiny_synth.yaml" in line
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "a.mp4").exists()


def test_a_folder_where_a_file_is_expected_says_so(tmp_path, poses):
    """Issue 15: `--ref FOLDER` read "image file not found"."""
    code, out = _run(["animate", "--ref", tmp_path, "--poses", poses, "-o", tmp_path / "a.mp4"])
    assert code == 2 and "is a folder" in _one_error_line(out)
    code, out = _run(["music2dance", tmp_path, "--ref", tmp_path, "-o", tmp_path / "m.mp4"])
    assert code == 2 and "is a folder" in _one_error_line(out)
    from dancegen.errors import InputError
    from dancegen.io.audio import read_audio
    from dancegen.io.video import read_image

    for reader in (read_image, read_audio):
        with pytest.raises(InputError, match="is a folder"):
            reader(tmp_path)


def test_cached_batch_rerun_reports_skipped_not_done(tmp_path):
    """Issue 15: a rerun of extract-pose over a folder of videos said "2 done" although its cache recomputed nothing."""
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    (tmp_path / "v").mkdir()
    for name in ("a", "b"):
        write_video(tmp_path / "v" / f"{name}.mp4", frames, fps=4)
    args = ["extract-pose", tmp_path / "v", "-o", tmp_path / "o", "--backend", "synthpose"]
    code, first = _run(args)
    assert code == 0 and "2 done, 0 skipped" in first, first
    code, again = _run(args)
    assert code == 0 and "0 done, 2 skipped" in again, again


def test_results_go_to_stdout_and_messages_to_stderr(tmp_path):
    """Issue 15: results were on stderr only; a script reads them from stdout."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dancegen", "synth", "-o", str(tmp_path / "s"), "--size", "32",
                        "--frames", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "out_dir: " in r.stdout and "done: 1" in r.stdout
    assert "out_dir" not in r.stderr


def test_json_puts_the_whole_result_on_stdout(tmp_path):
    """Issue 15: `--json` gives scripts one JSON object per verb on stdout (also with --quiet), messages stay on
    stderr; verbs that show a table (evaluate) print it there and the JSON on stdout."""
    import json
    import subprocess
    import sys

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "dancegen", *map(str, args)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return r

    r = run("--json", "-q", "synth", "-o", tmp_path / "s", "--size", "32", "--frames", "2")
    rep = json.loads(r.stdout)
    assert rep["out_dir"] == str(tmp_path / "s") and rep["done"] == 1
    clip = tmp_path / "s" / "clip_00000"
    r = run("--json", "evaluate", "-m", "psnr,frame-mse", "--pred", clip / "video.mp4", "--gt", clip / "video.mp4")
    rep = json.loads(r.stdout)
    assert rep["metrics"]["psnr"]["value"] is None  # identical videos: infinite PSNR is null, not a NaN token
    assert rep["metrics"]["frame-mse"]["value"] > 0
    assert "frame-mse" in r.stderr  # the table
    r = run("--json", "weights", "list", "--kind", "bundled")
    assert any(e["name"] == "t2i-tiny" for e in json.loads(r.stdout))
    r = run("synth", "-o", tmp_path / "s", "--size", "32", "--frames", "2")  # without --json: key: value lines
    assert r.stdout.startswith("out_dir: ")


def test_text2character_takes_the_prompt_as_an_argument_or_as_prompt(monkeypatch, tmp_path):
    """Issue 18: `--prompt` is the free-text shortcut (the same as PROMPT); giving both is one line, exit 2."""
    from dancegen import api

    seen = []
    monkeypatch.setattr(api, "text2character", lambda prompt, out, **kw: seen.append(prompt) or {"output": str(out)})
    for args in (["a dancer in red"], ["--prompt", "a dancer in red"]):
        code, out = _run(["text2character", *args, "--poses", tmp_path, "-o", tmp_path / "o.mp4"])
        assert code == 0, out
    assert seen == ["a dancer in red", "a dancer in red"]
    code, out = _run(["text2character", "a dancer", "--prompt", "a dancer", "-o", tmp_path / "o.mp4"])
    assert code == 2 and "give the prompt once" in out
