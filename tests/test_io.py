"""io/: video/image/audio round trips, natural sort, atomic writes, error paths."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.io.atomic import atomic_dir, atomic_path
from dancegen.io.audio import is_silent, read_audio, resample, write_audio
from dancegen.io.video import list_images, natural_key, read_image, read_video, video_info, write_image, write_video


def _frames(f=6, h=32, w=48, seed=0):
    # Smooth content so lossy codecs keep it close.
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(f):
        r = (128 + 100 * np.sin(xx / 7 + t)).astype(np.uint8)
        g = (128 + 100 * np.cos(yy / 5 - t)).astype(np.uint8)
        b = np.full_like(r, 40 * (seed + 1))
        out.append(np.stack([r, g, b], -1))
    return np.stack(out)


def test_natural_sort(tmp_path):
    for n in [10, 2, 1, 33]:
        write_image(tmp_path / f"frame{n}.png", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in list_images(tmp_path)] == ["frame1.png", "frame2.png", "frame10.png", "frame33.png"]
    assert natural_key("a10") > natural_key("a9")


def test_mp4_roundtrip_keeps_fps_size_and_content(tmp_path):
    frames = _frames()
    write_video(tmp_path / "v.mp4", frames, fps=12.5)
    v = read_video(tmp_path / "v.mp4")
    assert v.frames.shape == frames.shape and v.fps == pytest.approx(12.5)
    # Colour error is dominated by yuv420p chroma subsampling (even crf 0 gives ~4.6 here); luma is near exact.
    assert np.abs(v.frames.astype(int) - frames).mean() < 6
    grey = np.repeat(frames[..., :1], 3, axis=-1)
    write_video(tmp_path / "g.mp4", grey, fps=12.5)
    assert np.abs(read_video(tmp_path / "g.mp4").frames.astype(int) - grey).mean() < 2
    info = video_info(tmp_path / "v.mp4")
    assert (info["width"], info["height"], info["num_frames"]) == (48, 32, 6)


def test_mp4_is_h264_with_audio_track(tmp_path):
    import av

    sr = 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr).astype(np.float32)
    write_video(tmp_path / "a.mp4", _frames(f=24), fps=24, audio=audio, sample_rate=sr)
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
    v = read_video(tmp_path / "a.mp4", with_audio=True)
    assert v.sample_rate == sr and abs(v.audio.shape[0] - sr) < 2048
    got, _ = read_audio(tmp_path / "a.mp4")
    spectrum = np.abs(np.fft.rfft(got[:sr]))
    assert abs(np.argmax(spectrum) * sr / len(got[:sr]) - 440) < 5


def test_odd_size_is_padded_not_rejected(tmp_path):
    write_video(tmp_path / "o.mp4", _frames(h=31, w=45), fps=10)
    assert read_video(tmp_path / "o.mp4").frames.shape[1:3] == (32, 46)


def test_gif_and_frame_folder_roundtrip(tmp_path):
    frames = _frames()
    write_video(tmp_path / "v.gif", frames, fps=10)
    g = read_video(tmp_path / "v.gif")
    assert g.frames.shape == frames.shape and g.fps == pytest.approx(10)
    write_video(tmp_path / "frames", frames, fps=8)
    d = read_video(tmp_path / "frames")
    assert np.array_equal(d.frames, frames) and d.fps == 8


def test_single_image_is_one_frame_video(tmp_path):
    img = _frames(f=1)[0]
    write_image(tmp_path / "x.png", img)
    v = read_video(tmp_path / "x.png")
    assert v.frames.shape == (1, 32, 48, 3) and np.array_equal(read_image(tmp_path / "x.png"), img)


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing.mp4", "no such file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no image frames"),
    (lambda p: (p / "bad.mp4").write_bytes(b"not a video at all" * 10) and p / "bad.mp4", "cannot open video"),
    (lambda p: (p / "bad.png").write_bytes(b"\x89PNG garbage") and p / "bad.png", "cannot decode image"),
])
def test_bad_video_inputs_raise_input_error_naming_the_path(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as ei:
        read_video(path)
    assert message in str(ei.value) and str(path) in str(ei.value)


def test_mismatched_frame_sizes_in_folder(tmp_path):
    write_image(tmp_path / "0.png", np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "1.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(InputError, match="different sizes"):
        read_video(tmp_path)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("x")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_its_own_folder_but_never_the_users(tmp_path):
    from dancegen.errors import InputError
    from dancegen.io.atomic import OWNED_MARKER

    with atomic_dir(tmp_path / "d") as d:
        (d / "old").write_text("old")
    with atomic_dir(tmp_path / "d") as d:  # dancegen's own folder (marked): replaced whole
        (d / "new").write_text("new")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [OWNED_MARKER, "new"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "mine.txt").write_text("the user's")
    with pytest.raises(InputError, match="did not write"), atomic_dir(tmp_path / "u") as d:
        (d / "new").write_text("new")
    assert [p.name for p in (tmp_path / "u").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "u"]  # no temporary folder left behind
    (tmp_path / "e").mkdir()  # an empty folder is fine
    with atomic_dir(tmp_path / "e") as d:
        (d / "new").write_text("new")


def test_audio_roundtrip_resample_and_silence(tmp_path):
    sr = 22050
    t = np.arange(sr) / sr
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)], 1).astype(np.float32)
    write_audio(tmp_path / "s.wav", stereo, sr)
    x, r = read_audio(tmp_path / "s.wav", mono=False)
    assert r == sr and x.shape == (sr, 2) and np.abs(x - stereo).max() < 1e-3
    m, r16 = read_audio(tmp_path / "s.wav", sr=16000)
    assert r16 == 16000 and m.shape == (16000,)
    assert np.allclose(resample(m, 16000, 16000), m)
    assert is_silent(np.zeros(100)) and not is_silent(m)


def test_bad_audio(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(InputError, match="cannot decode audio"):
        read_audio(tmp_path / "x.wav")
    write_audio(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    with pytest.raises(InputError, match="no samples"):
        read_audio(tmp_path / "empty.wav")


@pytest.mark.parametrize("suffix,fmt,codec", [(".webm", "webm", "libvpx-vp9"), (".mov", "mov", "mpeg4"),
                                              (".mkv", "matroska", "libx264"), (".avi", "avi", "mpeg4")])
def test_reads_other_containers(tmp_path, suffix, fmt, codec):
    """Files written by another tool (PyAV here, as ffmpeg would) in the other containers people hand us."""
    import av

    frames = _frames(f=5, h=32, w=48)
    path = tmp_path / f"x{suffix}"
    with av.open(str(path), "w", format=fmt) as out:
        st = out.add_stream(codec, rate=15)
        st.width, st.height, st.pix_fmt = 48, 32, "yuv420p"
        for img in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    v = read_video(path)
    assert v.frames.shape == frames.shape and v.fps == pytest.approx(15)
    assert np.abs(v.frames.astype(int) - frames).mean() < 12


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_killed_writers_leftovers_are_swept_and_never_read_as_items(tmp_path):
    """Issue 15: kill -9 left hidden .part folders forever, and batch inputs took `.x.part.mp4` for a video."""
    import os

    from dancegen.api import video_batch
    from dancegen.metrics.evaluate import _video_entries

    dead = _dead_pid()
    stale_dir = tmp_path / f".out.{dead}.abc.part"
    stale_dir.mkdir()
    (stale_dir / "0000.png").write_bytes(b"x")
    stale_file = tmp_path / f".clip.{dead}.xyz.part.mp4"
    stale_file.write_bytes(b"x")
    live = tmp_path / f".out.{os.getpid()}.def.part"  # a writer of this process still at work: kept
    live.mkdir()
    other = tmp_path / ".out.notapid.part"  # not ours to judge: kept
    other.mkdir()
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=4)
    assert not stale_file.exists() and live.exists()  # writing clip.mp4 swept its own stale sibling
    (tmp_path / f".clip2.{os.getpid()}.q.part.mp4").write_bytes(b"x")  # mid-write: not swept, not an item
    assert [p.name for p in video_batch(tmp_path)] == ["clip.mp4"]
    with atomic_dir(tmp_path / "out") as d:
        (d / "a.txt").write_text("a")
    assert not stale_dir.exists() and live.exists() and other.exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "a"
    (tmp_path / "frames").mkdir()
    write_image(tmp_path / "frames" / "0000.png", frames[0])
    (tmp_path / "frames" / ".0001.123.part.png").write_bytes(b"broken")
    assert [p.name for p in list_images(tmp_path / "frames")] == ["0000.png"]
    assert set(_video_entries(tmp_path, "pred")) == {"clip", "frames"}


def test_keyed_npz_cache_is_reused_only_when_whole_and_made_with_the_same_key(tmp_path):
    """io.atomic's settings-keyed cache (training data, evaluate's per-item results): the arrays come back for the
    same key; a missing, stale, truncated or non-npz file reads as no cache (it is remade, not a traceback)."""
    from dancegen.io.atomic import load_keyed_npz, save_keyed_npz

    f = tmp_path / "cache.npz"
    assert load_keyed_npz(f, "k") is None
    save_keyed_npz(f, "k", {"a": np.arange(4), "b": np.ones((2, 2), np.float32)})
    got = load_keyed_npz(f, "k")
    assert set(got) == {"a", "b"} and np.array_equal(got["a"], np.arange(4)) and got["b"].dtype == np.float32
    assert load_keyed_npz(f, "other settings") is None
    f.write_bytes(f.read_bytes()[:40])  # truncated by something else
    assert load_keyed_npz(f, "k") is None
    f.write_bytes(b"not an npz at all")
    assert load_keyed_npz(f, "k") is None
