"""One bad-input suite over every verb: each input class gives exit 2 and one line naming the file, no traceback, no
output written, nothing outside -o touched, and no model resolved (so the error comes before any loading).

A verb is covered by its row in `CASES` (its argv with one input left to break, that input's kind, and the output);
`test_every_verb_has_a_row` fails when a verb is added without one, so a new verb gets the suite too.
"""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from dancegen.cli import app

# verb -> (argv template, the file suffix of the input {X} to break[, a valid input in the clip when not the
# suffix's usual file]); {OUT} is the output, {clip} a valid synthetic clip folder. Verbs without a file input (demo, synth, weights list) have only output and
# option cases.
CASES = {
    "animate": (["animate", "--ref", "{X}", "--poses", "{clip}/openpose_json", "-o", "{OUT}/a.mp4"], ".png"),
    "evaluate": (["evaluate", "-m", "psnr", "--pred", "{X}", "--gt", "{clip}/video.mp4", "-o", "{OUT}/r.json"],
                 ".mp4"),
    "extract-pose": (["extract-pose", "{X}", "-o", "{OUT}/poses"], ".mp4"),
    "finetune-oneshot": (["finetune-oneshot", "--source", "{X}", "--prompt", "a dancer", "-o", "{OUT}/run"], ".mp4"),
    "flow": (["flow", "{X}", "-o", "{OUT}/flow"], ".mp4", "openpose_json"),
    "music2dance": (["music2dance", "{X}", "--ref", "{clip}/ref.png", "-o", "{OUT}/m.mp4"], ".wav"),
    "pose convert": (["pose", "convert", "{X}", "--to", "coco17", "-o", "{OUT}/p.npz"], ".npz"),
    "pose render": (["pose", "render", "{X}", "-o", "{OUT}/p.mp4"], ".npz"),
    "pose retarget": (["pose", "retarget", "{clip}/openpose_json", "--ref", "{X}", "-o", "{OUT}/rt"], ".png"),
    "pose smooth": (["pose", "smooth", "{X}", "-o", "{OUT}/sm"], ".npz"),
    "text2character": (["text2character", "a dancer", "--method", "dancing-avatar", "--poses", "{X}", "-o",
                        "{OUT}/t.mp4"], ".npz"),
    "train": (["train", "--recipe", "{X}", "-o", "{OUT}/run"], ".yaml"),
}
NO_FILE_INPUT = {
    "demo": ["demo", "-o", "{OUT}/demo"],
    "synth": ["synth", "-o", "{OUT}/s", "--size", "32", "--frames", "2"],
}
OPTION_CASES = [  # (argv, word the one line must contain)
    (["synth", "-o", "{OUT}/s", "--fps", "nan"], "--fps"),
    (["synth", "-o", "{OUT}/s", "--size", "5"], "--size"),
    (["--seed", "-1", "synth", "-o", "{OUT}/s"], "seed"),
    (["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/openpose_json", "-o", "{OUT}/a.mp4", "--steps", "0"],
     "--steps"),
    (["music2dance", "{clip}/audio.wav", "--ref", "{clip}/ref.png", "-o", "{OUT}/m.mp4", "--fps", "0"], "--fps"),
    (["music2dance", "{clip}/audio.wav", "--ref", "{clip}/ref.png", "-o", "{OUT}/m.mp4", "--start", "0.75"],
     "audio.wav"),
    (["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/openpose_json", "-o", "{OUT}/a.xyz"], "a.xyz"),
    (["extract-pose", "{clip}/video.mp4", "-o", "{OUT}/p", "--max-frames", "0"], "--max-frames"),
    (["pose", "render", "{clip}/huge.npz", "-o", "{OUT}/p.mp4"], "huge.npz"),
    (["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/huge.npz", "-o", "{OUT}/a.mp4"], "huge.npz"),
    (["pose", "retarget", "{clip}/noneck.npz", "--ref", "{clip}/openpose_json", "-o", "{OUT}/rt"], "noneck.npz"),
    (["evaluate", "-m", "bas", "--pred", "{clip}/video.mp4", "--audio", "{clip}/silent.wav", "--pred-poses",
      "{clip}/openpose_json"], "silent.wav"),
    (["evaluate", "-m", "psnr", "--pred", "{clip}/video.mp4", "--gt", "{clip}/video.mp4", "--max-frames", "-1"],
     "--max-frames"),
    # a recipe whose YAML is a list, for every verb that takes --recipe
    (["train", "--recipe", "{clip}/list.yaml", "-o", "{OUT}/run"], "list.yaml"),
    (["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/openpose_json", "--recipe", "{clip}/list.yaml", "-o",
      "{OUT}/a.mp4"], "list.yaml"),
    (["text2character", "a dancer", "--recipe", "{clip}/list.yaml", "-o", "{OUT}/t.mp4"], "list.yaml"),
    (["text2character", "a dancer", "--poses", "{clip}/openpose_json", "--recipe", "{clip}/list.yaml", "-o",
      "{OUT}/t.mp4"], "list.yaml"),
    (["finetune-oneshot", "--source", "{clip}/video.mp4", "--prompt", "a dancer", "--recipe", "{clip}/list.yaml",
      "-o", "{OUT}/run"], "list.yaml"),
]
CLASSES = ("missing", "folder", "corrupt")
runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A valid 8-frame synthetic clip (video, OpenPose JSON, audio) plus its first frame as ref.png."""
    from dancegen.io.video import read_video, write_image

    root = tmp_path_factory.mktemp("world")
    r = runner.invoke(app, ["synth", "-o", str(root), "--size", "64", "--frames", "24"])
    assert r.exit_code == 0, r.output
    folder = root / "clip_00000"
    write_image(folder / "ref.png", read_video(folder / "video.mp4").frames[0])
    import numpy as np

    from dancegen.io.audio import write_audio

    write_audio(folder / "silent.wav", np.zeros(22050, np.float32), 22050)
    (folder / "list.yaml").write_text("- method: latentman\n- steps: 3\n")
    from dancegen.pose.openpose_json import read_pose_input, save_npz

    seq = read_pose_input(folder / "openpose_json")
    seq.keypoints[:, 1, 2] = 0.0  # the neck never seen
    save_npz(seq, folder / "noneck.npz")
    seq.keypoints[:, 1, 2] = 0.9
    seq.keypoints[2, 4, 0] = 1e30  # one wrist at 1e30 px
    save_npz(seq, folder / "huge.npz")
    return folder


@pytest.fixture
def no_models(monkeypatch):
    """Resolving any model (bundled or real) fails the test: input errors must come before loading."""
    import dancegen.core.weights as weights

    def refuse(*a, **k):
        raise AssertionError(f"a model was resolved before the bad input was refused: {a}")

    monkeypatch.setattr(weights, "resolve_model", refuse)


def _snapshot(*folders) -> dict:
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                out[p] = os.path.getsize(p) if os.path.isfile(p) else -1
    return out


def _fill(argv, **kw) -> list[str]:
    return [a.format(**{k: str(v) for k, v in kw.items()}) for a in argv]


def _check_refused(r, name: str, before: dict, after: dict, out) -> None:
    text = r.output  # stdout + stderr
    assert r.exit_code == 2, f"exit {r.exit_code}: {text[-800:]} {r.exception!r}"
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("> ")]  # "> ..." status lines
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert name in lines[0], f"the error does not name {name}: {lines[0]}"
    assert after == before, f"files changed: {set(after) ^ set(before)}"
    assert not out.exists() or not any(out.iterdir()), f"output written: {list(out.iterdir())}"


def _make_input(kind: str, suffix: str, tmp_path):
    x = tmp_path / "inputs" / f"bad{suffix}"
    x.parent.mkdir(exist_ok=True)
    if kind == "folder":
        x.mkdir()
        (x / "inside.txt").write_text("not what the verb reads")
    elif kind == "corrupt":
        x.write_bytes(b"\x00\x01 this is not a real file of its kind \xff" * 8)
    return x


def test_every_verb_has_a_row():
    from test_cli import _verbs

    covered = set(CASES) | set(NO_FILE_INPUT) | {"weights list"}
    assert {" ".join(v) for v in _verbs()} <= covered


@pytest.mark.parametrize("kind", CLASSES)
@pytest.mark.parametrize("verb", sorted(CASES))
def test_bad_file_input_is_one_line_exit_2(verb, kind, clip, tmp_path, no_models):
    argv, suffix = CASES[verb][:2]
    x = _make_input(kind, suffix, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(tmp_path, clip)
    r = runner.invoke(app, _fill(argv, X=x, OUT=out, clip=clip))
    _check_refused(r, x.name, before, _snapshot(tmp_path, clip), out)


def _valid_argv(verb: str, clip, out) -> list[str]:
    """The verb's row with a valid input of the right kind, so only the output `out` can be wrong."""
    argv = CASES[verb][0] if verb in CASES else NO_FILE_INPUT[verb]
    x = None
    if verb in CASES:
        suffix = CASES[verb][1]
        x = {".png": clip / "ref.png", ".mp4": clip / "video.mp4", ".wav": clip / "audio.wav",
             ".npz": clip / "pose_coco18.npz", ".yaml": clip / "recipe.yaml"}[suffix]
        if len(CASES[verb]) > 2:
            x = clip / CASES[verb][2]
        if suffix == ".npz" and not x.exists():
            from dancegen.pose.openpose_json import read_pose_input, save_npz

            save_npz(read_pose_input(clip / "openpose_json"), x)
        if suffix == ".yaml" and not x.exists():
            shutil.copy("recipes/dance_your_latents/tiny_synth.yaml", x)
    return _fill(argv, X=x, OUT=out, clip=clip)


@pytest.mark.parametrize("verb", sorted(CASES) + sorted(NO_FILE_INPUT))
def test_output_under_a_regular_file_is_one_line_exit_2(verb, clip, tmp_path, no_models):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file the user owns")
    argv = _valid_argv(verb, clip, blocker)
    before = _snapshot(tmp_path, clip)
    r = runner.invoke(app, argv)
    after = _snapshot(tmp_path, clip)
    _check_refused(r, "blocker", before, after, tmp_path / "nothing")
    assert blocker.read_text() == "a file the user owns"


@pytest.mark.parametrize("verb", sorted(CASES) + sorted(NO_FILE_INPUT))
def test_read_only_output_folder_is_one_line_exit_2(verb, clip, tmp_path, no_models, monkeypatch):
    """A read-only folder for -o is refused before any work. The test machines run as root, for whom no folder is
    read-only, so the folder is made read-only and, for root, `os.access` reports what it would for a user."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access

        def access(path, mode, *a, **k):
            if os.path.realpath(path) == os.path.realpath(ro) and mode & os.W_OK:
                return False
            return real_access(path, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)
    argv = _valid_argv(verb, clip, ro)
    before = _snapshot(tmp_path, clip)
    try:
        r = runner.invoke(app, argv)
    finally:
        ro.chmod(0o755)
    _check_refused(r, "readonly", before, _snapshot(tmp_path, clip), ro)


@pytest.mark.parametrize("argv,word", OPTION_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_option_is_one_line_exit_2(argv, word, clip, tmp_path, no_models):
    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot(tmp_path, clip)
    r = runner.invoke(app, _fill(argv, OUT=out, clip=clip))
    _check_refused(r, word, before, _snapshot(tmp_path, clip), out)


@pytest.mark.parametrize("verb", ["animate", "pose render"])
def test_a_folder_output_never_replaces_the_users_files(verb, clip, tmp_path, no_models):
    """`-o DIR` on a folder with the user's files is refused before any work; the files stay. A folder dancegen
    wrote (its hidden marker) is replaced on a rerun."""
    from dancegen.io.atomic import OWNED_MARKER

    out = tmp_path / "frames"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    argv = {"animate": ["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/openpose_json", "-o", "{OUT}"],
            "pose render": ["pose", "render", "{clip}/openpose_json", "-o", "{OUT}"]}[verb]
    before = _snapshot(tmp_path, clip)
    r = runner.invoke(app, _fill(argv, OUT=out, clip=clip))
    _check_refused(r, "frames", before, _snapshot(tmp_path, clip), tmp_path / "nothing")
    assert (out / "mine.txt").read_text() == "the user's"
    if verb == "pose render":  # no model: check the rerun over dancegen's own folder too
        (out / "mine.txt").unlink()
        assert runner.invoke(app, _fill(argv, OUT=out, clip=clip)).exit_code == 0
        assert (out / OWNED_MARKER).is_file() and (out / "00000.png").is_file()
        r = runner.invoke(app, _fill(argv, OUT=out, clip=clip))
        assert r.exit_code == 0, r.output


def test_a_folder_named_like_a_file_is_refused(clip, tmp_path, no_models):
    out = tmp_path / "x.mp4"
    out.mkdir()
    r = runner.invoke(app, ["animate", "--ref", str(clip / "ref.png"), "--poses", str(clip / "openpose_json"), "-o",
                            str(out)])
    _check_refused(r, "x.mp4", {}, {}, tmp_path / "nothing")
    assert out.is_dir()


def test_a_video_the_user_made_is_never_overwritten(clip, tmp_path, no_models):
    """`-o` naming an existing video without dancegen's provenance (the user's own) is refused; one dancegen wrote
    is replaced on a rerun (pose render needs no model)."""
    import av

    user = tmp_path / "holiday.mp4"  # the synthetic clip remuxed without dancegen's provenance: a user's video
    with av.open(str(clip / "video.mp4")) as src, av.open(str(user), "w", format="mp4") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    from dancegen.io.video import read_video_metadata

    assert "dancegen" not in read_video_metadata(user)
    before = user.read_bytes()
    argv = ["pose", "render", str(clip / "openpose_json"), "-o", str(user)]
    r = runner.invoke(app, argv)
    _check_refused(r, "holiday.mp4", {}, {}, tmp_path / "nothing")
    assert user.read_bytes() == before
    ours = tmp_path / "render.mp4"
    for _ in range(2):
        r = runner.invoke(app, ["pose", "render", str(clip / "openpose_json"), "-o", str(ours)])
        assert r.exit_code == 0, r.output
