"""Same seed, same bytes: every verb that writes media, run twice in fresh processes with the same `--seed` (one
thread), writes byte-identical outputs (videos, images, arrays, OpenPose JSON, weights).

`test_every_verb_is_listed` fails when a verb is added without a row here, so a new verb gets the check too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# verb -> its argv after `dancegen --seed 3` ({clip}: a synthetic clip folder); bundled models at a few steps
MEDIA_VERBS = {
    "synth": ["synth", "-o", "out", "--size", "32", "--frames", "4"],
    "extract-pose": ["extract-pose", "{clip}/video.mp4", "-o", "out", "--backend", "synthpose"],
    "pose render": ["pose", "render", "{clip}/openpose_json", "-o", "out.mp4"],
    "pose retarget": ["pose", "retarget", "{clip}/openpose_json", "--ref", "{clip}/ref.png", "-o", "out"],
    "pose smooth": ["pose", "smooth", "{clip}/openpose_json", "-o", "out"],
    "pose convert": ["pose", "convert", "{clip}/openpose_json", "--to", "coco17", "-o", "out.npz"],
    "flow": ["flow", "{clip}/openpose_json", "-o", "out"],
    "animate": ["animate", "--ref", "{clip}/ref.png", "--poses", "{clip}/openpose_json", "-o", "out.mp4",
                "--steps", "2", "--frames", "4"],
    "music2dance": ["music2dance", "{clip}/audio.wav", "--ref", "{clip}/ref.png", "-o", "out.mp4", "--steps", "2",
                    "--seconds", "0.6"],
    "text2character": ["text2character", "a dancer in a red shirt", "--motion", "a person jumps", "-o", "out.mp4",
                       "--steps", "2", "--frames", "4"],
    "text2character --poses": ["text2character", "a dancer in a red shirt", "--method", "dancing-avatar", "--poses",
                               "{clip}/openpose_json", "-o", "out.mp4", "--steps", "2", "--frames", "4",
                               "--set", "intra.enabled=false"],
    "finetune-oneshot": ["finetune-oneshot", "--source", "{clip}/video.mp4", "--source-poses", "{clip}/openpose_json",
                         "--masks", "{clip}/masks", "--prompt", "a dancer", "-o", "run", "--steps", "2", "--frames",
                         "2", "--target", "{clip}/openpose_json", "--video", "out.mp4"],
}
# verbs that write no media: a report, a recipe run (checked by the methods' own resume tests), a listing; `demo`
# chains the verbs above (its summary.mp4 is covered by them) and takes minutes
OTHER_VERBS = {"evaluate", "train", "weights list", "demo"}
GENERATING = {"animate", "music2dance", "text2character", "text2character --poses", "finetune-oneshot"}
COMPARED = {".mp4", ".gif", ".png", ".npz", ".npy", ".wav", ".safetensors"}


def _cli(args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dancegen", "--quiet", "--seed", "3", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from dancegen.io.video import read_video, write_image

    root = tmp_path_factory.mktemp("world")
    r = _cli(["synth", "-o", "w", "--size", "64", "--frames", "24"], root)
    assert r.returncode == 0, r.stderr
    folder = root / "w" / "clip_00000"
    write_image(folder / "ref.png", read_video(folder / "video.mp4").frames[0])
    return folder


def _compared_files(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (p.suffix in COMPARED or p.name.endswith("_keypoints.json")):
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def test_every_verb_is_listed():
    from test_cli import _verbs

    listed = {k.split(" --")[0] for k in MEDIA_VERBS} | OTHER_VERBS
    assert {" ".join(v) for v in _verbs()} == listed


@pytest.mark.parametrize("verb", sorted(MEDIA_VERBS))
def test_same_seed_same_bytes(verb, clip, tmp_path):
    args = [a.format(clip=clip) for a in MEDIA_VERBS[verb]]
    runs = []
    for name in ("a", "b"):
        cwd = tmp_path / name
        cwd.mkdir()
        r = _cli(args, cwd)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(_compared_files(cwd))
    a, b = runs
    assert a, f"{verb} wrote no media file"
    from dancegen.io.video import read_video_metadata

    for name in a:  # every video says what made it; a generated one also with which model and seed
        if name.endswith(".mp4"):
            meta = read_video_metadata(tmp_path / "a" / name)
            assert "dancegen" in meta, name
            if verb in GENERATING:
                assert {"method", "model", "seed"} <= set(meta), (name, meta)
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    assert not differ, f"{verb}: same seed, different bytes in {differ} ({_how(tmp_path, differ)})"


def _how(root: Path, names: list[str]) -> str:
    """What differs: decoded pixels of videos, else sizes."""
    import numpy as np

    from dancegen.io.video import read_video, read_video_metadata

    out = []
    for name in names:
        pa, pb = root / "a" / name, root / "b" / name
        if pa.suffix == ".mp4":
            fa, fb = read_video(pa).frames, read_video(pb).frames
            px = int(np.abs(fa.astype(int) - fb).max()) if fa.shape == fb.shape else f"{fa.shape} vs {fb.shape}"
            out.append(f"{name}: max pixel difference {px}; metadata {read_video_metadata(pa)} vs "
                       f"{read_video_metadata(pb)}")
        else:
            out.append(f"{name}: {pa.stat().st_size} vs {pb.stat().st_size} bytes")
    return "; ".join(out)
