"""Reliability of io/ and the pose reader: byte-identical video for the same input whatever the CPU count,
provenance in every written video, image size limits checked before decoding, one person followed through an
OpenPose sequence with several people."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dancegen
from dancegen.errors import InputError
from dancegen.io.video import read_image, read_video, write_image, write_video

ROOT = Path(__file__).resolve().parents[1]
CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
multi_cpu = pytest.mark.skipif(len(CPUS) < 2, reason="needs os.sched_setaffinity and at least 2 CPUs")


def _frames(f=8, h=128, w=160):
    """Moving smooth content plus fixed noise: tall enough for x264 to split frames into slices per thread."""
    yy, xx = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(0).integers(0, 40, (h, w, 3))
    out = []
    for t in range(f):
        r = 128 + 90 * np.sin(xx / 9 + t / 2)
        g = 128 + 90 * np.cos(yy / 7 - t / 3)
        b = 64 + 60 * np.sin((xx + yy) / 11 + t)
        out.append(np.clip(np.stack([r, g, b], -1) + noise, 0, 255).astype(np.uint8))
    return np.stack(out)


# ---- 1. same input -> same bytes -------------------------------------------------------------------------------

_WRITE = """
import os, sys
import numpy as np
os.sched_setaffinity(0, {int(c) for c in sys.argv[2].split(",")})
from dancegen.io.video import write_video
write_video(sys.argv[1], np.load(sys.argv[3]), fps=24)
"""


@multi_cpu
def test_mp4_bytes_do_not_depend_on_cpu_count_or_threads(tmp_path):
    np.save(tmp_path / "frames.npy", _frames())
    runs = [("one", [CPUS[0]], "1"), ("all", CPUS, "2"), ("all-again", CPUS, "1")]
    for name, cpus, omp in runs:
        env = {**os.environ, "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp}
        subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path / f"{name}.mp4"), ",".join(map(str, cpus)),
                        str(tmp_path / "frames.npy")], check=True, env=env, cwd=ROOT, timeout=120)
    data = {name: (tmp_path / f"{name}.mp4").read_bytes() for name, _, _ in runs}
    assert data["one"] == data["all"] == data["all-again"]


def test_mp4_has_no_wall_clock_or_library_version_tags(tmp_path):
    import av

    write_video(tmp_path / "v.mp4", _frames(f=3), fps=24, audio=np.zeros(4800, np.float32), sample_rate=24000)
    with av.open(str(tmp_path / "v.mp4")) as c:
        tags = [dict(c.metadata)] + [dict(s.metadata) for s in c.streams]
    assert not any("creation_time" in t for t in tags)
    assert not any("Lavf" in v or "Lavc" in v for t in tags for v in t.values())
    data = (tmp_path / "v.mp4").read_bytes()
    assert b"Lavf" not in data and b"Lavc" not in data  # the muxer's and the AAC encoder's version strings


@multi_cpu
def test_synth_same_seed_gives_identical_video_bytes(tmp_path):
    from dancegen.cli import app

    runner = CliRunner()
    saved = os.sched_getaffinity(0)
    outs = []
    try:
        for k, cpus in enumerate(([CPUS[0]], CPUS)):  # as on two machines (or two cgroups) with different core counts
            os.sched_setaffinity(0, set(cpus))
            out = tmp_path / f"run{k}"
            r = runner.invoke(app, ["--seed", "3", "synth", "-o", str(out), "--size", "128", "--frames", "4",
                                    "--no-flow"], terminal_width=200)
            assert r.exit_code == 0, r.output
            outs.append(out / "clip_00000" / "video.mp4")
    finally:
        os.sched_setaffinity(0, saved)
    assert outs[0].read_bytes() == outs[1].read_bytes()


# ---- 2. provenance ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v.mp4", "v.mov", "v.gif", "frames"])
def test_provenance_round_trip(tmp_path, name):
    from dancegen.io.video import read_video_metadata

    frames = _frames(f=3, h=32, w=48)
    write_video(tmp_path / "plain" / name, frames, fps=10)
    assert read_video_metadata(tmp_path / "plain" / name)["dancegen"] == dancegen.__version__

    meta = {"method": "dance-your-latents", "model": "/models/a;b=c 100%", "seed": "3"}
    write_video(tmp_path / "a" / name, frames, fps=10, metadata=meta)
    got = read_video_metadata(tmp_path / "a" / name)
    assert {k: got[k] for k in ("dancegen", *meta)} == {"dancegen": dancegen.__version__, **meta}
    assert got["comment"].startswith(f"dancegen {dancegen.__version__}; method=dance-your-latents")
    write_video(tmp_path / "b" / name, frames, fps=10, metadata=meta)  # no timestamps: the same bytes again
    if name == "frames":
        assert all((tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes()
                   for f in os.listdir(tmp_path / "a" / name))
    else:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert np.array_equal(read_video(tmp_path / "a" / "frames").frames, frames) if name == "frames" else True


def test_provenance_of_a_foreign_video_and_bad_keys(tmp_path):
    import av

    from dancegen.io.video import read_video_metadata

    with av.open(str(tmp_path / "real.mp4"), "w", format="mp4") as out:  # not written by dancegen
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
            out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    assert "dancegen" not in read_video_metadata(tmp_path / "real.mp4")
    with pytest.raises(ValueError, match="metadata key"):
        write_video(tmp_path / "x.mp4", _frames(f=1, h=16, w=16), fps=10, metadata={"bad key": "1"})
    with pytest.raises(InputError, match="no such file"):
        read_video_metadata(tmp_path / "missing.mp4")


# ---- 3. huge images ---------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _fake_png(path: Path, width: int, height: int) -> Path:
    """A well-formed PNG whose IHDR declares `width` x `height` (CRCs correct) but whose IDAT holds one row."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 16))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if a large image gets decoded (the size check must come first)."""
    from PIL import ImageFile

    original = ImageFile.ImageFile.load

    def load(self):
        if self.size[0] * self.size[1] > 10**6:
            raise AssertionError(f"decoded a {self.size} image")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("size", [(60000, 60000), (12000, 12000), (9000, 9000)])
def test_oversized_png_is_refused_from_its_header(tmp_path, no_decoding, size):
    from dancegen.io.video import MAX_IMAGE_PIXELS

    assert size[0] * size[1] > MAX_IMAGE_PIXELS
    p = _fake_png(tmp_path / "bomb.png", *size)
    with pytest.raises(InputError) as e:
        read_image(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and f"{size[0]}x{size[1]}" in msg and "megapixel" in msg
    (tmp_path / "frames").mkdir()
    write_image(tmp_path / "frames" / "0.png", np.zeros((8, 8, 3), np.uint8))
    _fake_png(tmp_path / "frames" / "1.png", *size)
    with pytest.raises(InputError, match=r"1\.png"):  # a frame folder goes through the same check
        read_video(tmp_path / "frames")


def test_pixel_limit_is_a_parameter_and_an_environment_variable(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    write_image(p, np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(InputError, match="50x40"):
        read_image(p, max_pixels=1999)
    assert read_image(p, max_pixels=2000).shape == (40, 50, 3)
    monkeypatch.setenv("DANCEGEN_MAX_IMAGE_PIXELS", "1999")
    with pytest.raises(InputError, match="DANCEGEN_MAX_IMAGE_PIXELS=1999"):
        read_image(p)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_large_image_is_reduced_on_read_to_cover_the_target(tmp_path, fmt):
    from PIL import Image

    h, w = 1800, 2400
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], -1).astype(np.uint8)
    p = tmp_path / f"big.{fmt}"
    write_image(p, img)
    small = read_image(p, target_size=(256, 192))
    # Reduced by an integer factor (JPEG: decoded at 1/8 scale), never below the size the caller resizes to.
    assert small.shape[2] == 3 and small.shape[1] >= 256 and small.shape[0] >= 192
    assert small.shape[1] <= 2 * 256 and small.shape[0] <= 2 * 192
    assert small.shape[1] / small.shape[0] == pytest.approx(w / h, rel=0.02)
    ref = np.asarray(Image.fromarray(img).resize(small.shape[1::-1], Image.BOX)).astype(int)
    assert np.abs(small.astype(int) - ref).mean() < 4
    assert read_image(p, target_size=(4000, 4000)).shape == (h, w, 3)  # never enlarged
    assert read_image(p).shape == (h, w, 3)


# ---- 4. several people in OpenPose frames -------------------------------------------------------------------------

def _person_at(cx: float, scale: float) -> dict:
    from tests_helpers import STAND

    xy = (STAND - [64, 64]) * scale + [cx, 120]
    kp = np.concatenate([xy, np.full((18, 1), 0.9)], 1)
    return {"pose_keypoints_2d": kp.reshape(-1).round(3).tolist()}


def test_openpose_follows_one_person_when_several_are_present(tmp_path, capsys):
    from dancegen.pose.openpose_json import read_openpose_folder

    # A on the left walks right, B on the right walks left; they take turns being the larger one, and their order
    # in the "people" list flips every other frame. A is the larger in the first frame.
    expected = []
    for t in range(6):
        a = _person_at(60 + 4 * t, 1.2 if t % 2 == 0 else 0.9)
        b = _person_at(260 - 4 * t, 1.0)
        people = [a, b] if t % 3 else [b, a]
        expected.append(people.index(a))
        (tmp_path / f"f_{t}_keypoints.json").write_text(json.dumps({"people": people}))
    (tmp_path / "f_6_keypoints.json").write_text(json.dumps({"people": []}))  # nobody: an empty frame
    (tmp_path / "f_7_keypoints.json").write_text(json.dumps({"people": [_person_at(260, 1.0),
                                                                         _person_at(84, 1.0)]}))
    expected += [-1, 1]
    seq = read_openpose_folder(tmp_path, width=320, height=240)
    neck_x = seq.keypoints[:, 1, 0]
    np.testing.assert_allclose(neck_x[:6], [60 + 4 * t for t in range(6)], atol=1e-3)  # always A
    assert neck_x[7] == pytest.approx(84, abs=1e-3)  # A again after the empty frame
    assert seq.meta["person_indices"] == expected
    assert seq.meta["max_people"] == 2 and seq.meta["empty_frames"] == [6]
    err = " ".join(capsys.readouterr().err.split())  # one message (rich may wrap it at the console width)
    assert "2 people" in err and "followed" in err and err.count("person_indices") == 1

    # One person per frame: nothing said, nothing recorded; an index still picks by position in the list.
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.json").write_text(json.dumps({"people": [_person_at(100, 1.0)]}))
    single = read_openpose_folder(one, width=320, height=240)
    assert "person_indices" not in single.meta and capsys.readouterr().err == ""
    second = read_openpose_folder(tmp_path, width=320, height=240, person=1)
    assert second.keypoints[0, 1, 0] == pytest.approx(60, abs=1e-3)  # frame 0 lists [b, a]


def test_safetensors_metadata_is_written_in_sorted_order(tmp_path):
    """safetensors writes its metadata from a hash map (another order in every process); ours comes out sorted, so
    the same weights give the same bytes."""
    import json
    import struct

    import torch
    from safetensors.torch import load_file, safe_open

    from dancegen.io.atomic import save_safetensors

    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    meta = {k: f"value of {k}" for k in ("step", "format", "zeta", "alpha", "lora_rank", "base")}
    a = save_safetensors(tensors, tmp_path / "a.safetensors", dict(meta))
    b = save_safetensors(tensors, tmp_path / "b.safetensors", dict(reversed(list(meta.items()))))
    assert a.read_bytes() == b.read_bytes()
    raw = a.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert list(json.loads(raw[8:8 + n])["__metadata__"]) == sorted(meta)
    with safe_open(str(a), "pt") as f:
        assert f.metadata() == meta
    assert torch.equal(load_file(str(a))["w"], tensors["w"])


def test_pose_frames_without_a_person_are_named_not_silently_used(tmp_path, capsys):
    import numpy as np

    from dancegen.pose.inputs import load_poses
    from dancegen.pose.openpose_json import write_openpose_folder
    from dancegen.pose.sequence import PoseSequence

    kp = np.zeros((5, 18, 3), np.float32)
    kp[..., 0], kp[..., 1], kp[..., 2] = 20.0, 30.0, 0.9
    kp[[1, 3]] = 0.0  # two frames with nobody
    write_openpose_folder(PoseSequence(kp, "coco18", width=64, height=64, fps=8.0), tmp_path / "p")
    seq = load_poses(tmp_path / "p")
    assert len(seq) == 5
    err = capsys.readouterr().err
    assert "2 of 5 pose frames hold no person (frames 1, 3)" in err and str(tmp_path / "p") in err
    kp[[1, 3]] = kp[0]
    write_openpose_folder(PoseSequence(kp, "coco18", width=64, height=64, fps=8.0), tmp_path / "q")
    load_poses(tmp_path / "q")
    assert "no person" not in capsys.readouterr().err


def test_gaps_in_frame_numbers_and_a_wrong_meta_count_are_said(tmp_path, capsys):
    import numpy as np

    from dancegen.pose.openpose_json import read_openpose_folder, write_openpose_folder
    from dancegen.pose.sequence import PoseSequence

    kp = np.zeros((6, 18, 3), np.float32)
    kp[..., :2], kp[..., 2] = 20.0, 0.9
    d = tmp_path / "p"
    write_openpose_folder(PoseSequence(kp, "coco18", width=64, height=64, fps=8.0), d)
    read_openpose_folder(d)
    assert "warning" not in capsys.readouterr().err  # our own folders are complete
    (d / "frame_000002_keypoints.json").unlink()
    (d / "frame_000003_keypoints.json").unlink()
    seq = read_openpose_folder(d)
    err = capsys.readouterr().err
    assert len(seq) == 4
    assert "jump 1 time(s) (first from 1 to 4; 2 frame(s) missing)" in err
    assert "pose_meta.json counts 6 frames but the folder holds 4" in err


def test_other_libraries_notices_are_hidden_at_the_default_verbosity_but_not_their_bars(capsys):
    import logging
    import warnings

    from dancegen.console import quiet_libraries

    with quiet_libraries(active=True, bars=False):
        warnings.warn("a third-party notice", UserWarning, stacklevel=1)
        logging.getLogger("transformers").warning("a transformers notice")
        logging.getLogger("transformers").error("a transformers error")
        from tqdm import tqdm

        bar = tqdm(total=2)
        assert not bar.disable
        bar.close()
    err = capsys.readouterr().err
    assert "third-party notice" not in err and "transformers notice" not in err
    with warnings.catch_warnings(record=True) as seen:  # the filters are restored afterwards
        warnings.simplefilter("always")
        warnings.warn("after", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["after"]
