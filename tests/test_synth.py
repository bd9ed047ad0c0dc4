"""Tests of the synthetic dance world: determinism, outputs, exact flow, beat sync, text motions, layouts."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.pose.sequence import PoseSequence
from dancegen.synth.clip import render_clip
from dancegen.synth.layouts import generate
from dancegen.synth.motion import VOCABULARY, parse_motion_text
from dancegen.synth.render import NUM_PARTS


@pytest.fixture(scope="module")
def clip():
    return render_clip(3, (96, 64), 8)


def _arrays(c):
    return {
        k: getattr(c, k)
        for k in (
            "frames",
            "audio",
            "joints3d",
            "keypoints",
            "rotations",
            "root",
            "flow_forward",
            "flow_backward",
            "depth",
            "parts",
            "uv",
            "masks",
            "beat_phase",
        )
    }


def test_determinism(clip):
    again = render_clip(3, (96, 64), 8)
    for name, arr in _arrays(clip).items():
        assert np.array_equal(arr, _arrays(again)[name]), name
    assert clip.appearance_text == again.appearance_text and clip.motion_text == again.motion_text
    other = render_clip(4, (96, 64), 8)
    assert not np.array_equal(clip.frames, other.frames)
    assert not np.array_equal(clip.audio[:1000], other.audio[:1000]) or clip.bpm != other.bpm
    assert not np.allclose(clip.joints3d, other.joints3d)


def test_shapes_and_dtypes(clip):
    f, h, w = 8, 64, 96
    assert clip.frames.shape == (f, h, w, 3) and clip.frames.dtype == np.uint8
    assert (
        clip.audio.dtype == np.float32 and clip.audio.shape == (round(f / 24 * 22050),) and clip.sample_rate == 22050
    )
    assert np.abs(clip.audio).max() <= 1.0
    assert clip.joints3d.shape == (f, 22, 3) and clip.joints3d.dtype == np.float32
    assert clip.keypoints.shape == (f, 18, 3) and clip.keypoints.dtype == np.float32
    assert clip.rotations.shape == (f, 22, 3) and clip.root.shape == (f, 3)
    for flow in (clip.flow_forward, clip.flow_backward):
        assert flow.shape == (f - 1, 2, h, w) and flow.dtype == np.float32
    assert clip.depth.shape == (f, h, w) and clip.depth.dtype == np.float32 and (clip.depth > 0).all()
    assert clip.parts.shape == (f, h, w) and clip.parts.dtype == np.uint8 and clip.parts.max() <= NUM_PARTS
    assert clip.uv.shape == (f, h, w, 2) and clip.uv.min() >= 0 and clip.uv.max() <= 1
    assert np.array_equal(clip.masks, clip.parts > 0) and clip.masks.any(axis=(1, 2)).all()
    assert clip.beat_phase.shape == (f,) and (clip.beat_phase >= 0).all() and (clip.beat_phase < 1).all()
    assert clip.camera.K.shape == (f, 3, 3) and clip.camera.R.shape == (f, 3, 3) and clip.camera.t.shape == (f, 3)
    # Feet on the floor (Y-up metres), a person-sized body.
    assert abs(clip.joints3d[..., 1].min() - 0.035 * clip.appearance.body.height) < 0.05
    assert 1.2 < clip.joints3d[:, 15, 1].max() < 2.2
    seq = clip.pose_sequence()
    assert isinstance(seq, PoseSequence) and seq.format == "coco18" and (seq.width, seq.height) == (w, h)
    vis = seq.conf > 0
    assert vis[:, :14].all()  # body joints are always in view
    assert (seq.xy[vis] >= 0).all() and (seq.xy[..., 0][vis] <= w - 1).all() and (seq.xy[..., 1][vis] <= h - 1).all()
    # Keypoints lie on the rendered person: most body joints fall on (or right next to) the mask.
    xy = np.round(seq.xy[:, :14]).astype(int)
    on = clip.masks[np.arange(f)[:, None], xy[..., 1], xy[..., 0]]
    assert on.mean() > 0.8
    assert "dancer with" in clip.appearance_text and clip.motion_text.startswith("a person")


def _warp(img, flow):
    import cv2

    h, w = flow.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img.astype(np.float32), xs + flow[0], ys + flow[1], cv2.INTER_LINEAR)


def test_flow_is_exact_for_the_rendering():
    import cv2

    c = render_clip(11, 192, 8, motion_text="a person jumps and waves both arms", camera_motion="static")
    h, w = c.height, c.width
    ys, xs = np.mgrid[0:h, 0:w]
    err_warp, err_none, cycle = [], [], []
    for t in range(c.num_frames - 1):
        fwd, bwd = c.flow_forward[t], c.flow_backward[t]
        tx = np.clip(np.round(xs + fwd[0]).astype(int), 0, w - 1)
        ty = np.clip(np.round(ys + fwd[1]).astype(int), 0, h - 1)
        interior = cv2.erode(c.masks[t].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        visible = interior & (c.parts[t + 1][ty, tx] == c.parts[t])  # not occluded at t+1
        warped = _warp(c.frames[t + 1], fwd)
        err_warp.append(np.abs(warped - c.frames[t]).mean(-1)[visible])
        err_none.append(np.abs(c.frames[t + 1].astype(np.float32) - c.frames[t]).mean(-1)[visible])
        # Forward then backward returns to the start (sample the backward flow where the forward flow lands).
        back = _warp(np.moveaxis(bwd, 0, -1), fwd)
        cycle.append(np.linalg.norm(np.moveaxis(fwd, 0, -1) + back, axis=-1)[visible])
    e_w, e_0 = np.concatenate(err_warp).mean(), np.concatenate(err_none).mean()
    assert e_0 > 5  # the dancer really moves
    assert e_w < 0.25 * e_0, (e_w, e_0)
    assert np.median(np.concatenate(cycle)) < 0.05
    # Static camera: the background does not move at all.
    for t in range(c.num_frames - 1):
        bg = ~c.masks[t]
        assert np.abs(c.flow_forward[t][:, bg]).max() == 0.0


@pytest.mark.parametrize("motion", ["pan", "zoom"])
def test_camera_motion_gives_analytic_background_flow(motion):
    c = render_clip(5, (80, 64), 6, camera_motion=motion)
    k, r = c.camera.K, c.camera.R
    h, w = c.height, c.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pix = np.stack([xs, ys, np.ones_like(xs)], -1)
    moved = 0.0
    for t in range(c.num_frames - 1):
        # Pure rotation about the camera centre and/or a focal change: x' ~ K' R' R^T K^-1 x.
        hom = k[t + 1] @ r[t + 1] @ r[t].T @ np.linalg.inv(k[t])
        q = pix @ hom.T
        expected = q[..., :2] / q[..., 2:] - pix[..., :2]
        bg = ~c.masks[t]
        got = np.moveaxis(c.flow_forward[t], 0, -1)
        assert np.abs(got[bg] - expected[bg]).max() < 1e-3
        moved = max(moved, np.abs(expected[bg]).max())
    assert moved > 0.05


def _kinematic_beats(c):
    """Local minima of total joint speed (the AIST++ / Bailando kinematic-beat definition), seconds."""
    from scipy.signal import argrelmin

    speed = np.linalg.norm(np.diff(c.joints3d, axis=0), axis=-1).sum(-1)
    return (argrelmin(speed, order=2)[0] + 0.5) / c.fps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dance_accents_land_on_the_beats(seed):
    c = render_clip(seed, 64, seconds=6.0, fps=30, render=False)
    kb = _kinematic_beats(c)
    beats = c.beat_times[(c.beat_times > 0.2) & (c.beat_times < 5.8)]
    assert len(beats) >= 8
    period = 60.0 / c.bpm
    dist = np.abs(beats[:, None] - kb[None]).min(1) * c.fps
    shifted = np.abs((beats + 0.5 * period)[:, None] - kb[None]).min(1) * c.fps
    rng = np.random.default_rng(seed)
    rand = np.abs((beats + rng.uniform(0.2, 0.8) * period)[:, None] - kb[None]).min(1) * c.fps
    assert np.median(dist) <= 1.0 and np.mean(dist <= 1.0) > 0.8
    assert np.median(shifted) > 3 * max(np.median(dist), 0.5) and np.median(rand) > np.median(dist)
    # The exported phase is 0 on the beat.
    f_beat = np.round(c.beat_times * c.fps).astype(int)
    f_beat = f_beat[f_beat < c.num_frames]
    ph = c.beat_phase[f_beat]
    assert (np.minimum(ph, 1 - ph) <= 0.5 * c.bpm / 60 / c.fps + 1e-6).all()


def test_music_has_drums_on_the_beats():
    c = render_clip(7, 64, seconds=4.0, render=False)
    a, sr = c.audio, c.sample_rate
    assert np.allclose(np.diff(c.beat_times), 60.0 / c.bpm)
    assert 90 <= c.bpm <= 150 and len(c.beats_dict()["beat_phase"]) == c.num_frames
    win = int(0.03 * sr)
    after = [np.sqrt(np.mean(a[int(t * sr) : int(t * sr) + win] ** 2)) for t in c.beat_times if t * sr + win < a.size]
    before = [np.sqrt(np.mean(a[int(t * sr) - win : int(t * sr)] ** 2)) for t in c.beat_times if t * sr > win]
    assert np.mean(after) > 1.5 * np.mean(before)


def _yaw_deg(j):
    hips = j[:, 1] - j[:, 2]  # l_hip - r_hip
    yaw = np.unwrap(np.arctan2(hips[:, 2], hips[:, 0]))
    return np.degrees(yaw)


def test_text_motions():
    jump = render_clip(0, 64, seconds=3.0, motion_text="a person jumps", render=False)
    pelvis = jump.joints3d[:, 0, 1]
    assert pelvis.max() - np.median(pelvis) > 0.15
    assert jump.joints3d[:, [7, 8, 10, 11], 1].min(1).max() > 0.2  # both feet off the floor at the top

    spin = render_clip(0, 64, seconds=3.0, motion_text="a person spins", render=False)
    yaw = _yaw_deg(spin.joints3d)
    assert yaw.max() - yaw.min() > 300
    assert np.ptp(_yaw_deg(jump.joints3d)) < 5

    wave = render_clip(0, 64, seconds=3.0, motion_text="a person waves both arms", render=False)
    j = wave.joints3d
    above = (j[:, 20, 1] > j[:, 16, 1]) & (j[:, 21, 1] > j[:, 17, 1])  # wrists above shoulders
    assert above.mean() > 0.6
    # ... and waving: the wrists swing sideways back and forth several times.
    swing = np.diff(np.sign(np.diff(j[:, 20, 0])))
    assert np.count_nonzero(swing) >= 3
    clap = render_clip(0, 64, seconds=3.0, motion_text="claps", render=False)
    assert (clap.joints3d[:, 20, 1] > clap.joints3d[:, 16, 1]).mean() < 0.1
    assert wave.motion_text == "a person waves both arms" and "jumps" in jump.motion_text


def test_motion_text_parsing():
    assert parse_motion_text("a person jumps and spins")[0] == ["jumps", "spins"]
    assert parse_motion_text("Someone spins, then jumps!")[0] == ["spins", "jumps"]
    assert parse_motion_text("a man waves his left hand then kicks")[0] == ["waves left arm", "kicks"]
    assert parse_motion_text("raises both arms and claps")[0] == ["raises arms", "claps"]
    assert parse_motion_text("steps side to side, bounces and walks forward")[0] == [
        "steps side to side",
        "bounces",
        "walks forward",
    ]
    prims, ignored = parse_motion_text("a person jumps and juggles")
    assert prims == ["jumps"] and ignored == ["juggles"]
    with pytest.raises(InputError) as e:
        parse_motion_text("a person juggles knives")
    assert all(v in str(e.value) for v in VOCABULARY)
    with pytest.raises(InputError):
        render_clip(0, 64, 4, motion_text="moonwalk")


def test_sizes_and_fps():
    for size, fps in (((64, 64), 24), ((96, 64), 30), ((64, 112), 12), ((512, 288), 24)):
        c = render_clip(2, size, 3, fps=fps, flow=False)
        assert c.frames.shape == (3, size[1], size[0], 3) and c.flow_forward is None
        assert c.masks.any(axis=(1, 2)).all()
        # The whole dancer is framed: no person pixel touches the image border.
        m = c.masks
        assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())
    assert render_clip(0, 64, seconds=0.5, fps=30, render=False).num_frames == 15


def test_appearance_and_motion_seeds_split():
    a = render_clip(1, 64, 12, appearance_seed=42, render=False)
    b = render_clip(2, 64, 12, appearance_seed=42, render=False)
    assert a.appearance == b.appearance and a.appearance_text == b.appearance_text
    assert not np.allclose(a.rotations, b.rotations)
    # Same dance (motion + music seeds), another dancer: same joint rotations, different bone lengths.
    c = render_clip(1, 64, 12, appearance_seed=7, render=False)
    assert c.appearance != a.appearance
    assert np.allclose(c.rotations, a.rotations, atol=1e-5)
    bone = lambda x: np.linalg.norm(x.joints3d[:, 4] - x.joints3d[:, 1], axis=-1)  # noqa: E731 (l_hip->l_knee)
    assert abs(bone(a).mean() - bone(c).mean()) > 1e-3


def test_generate_clips_layout_and_resume(tmp_path):
    from dancegen.io.video import read_video

    calls = []
    s = generate(tmp_path, 2, size=(64, 48), num_frames=6, progress=lambda *a: calls.append(a))
    assert s["done"] == ["clip_00000", "clip_00001"] and s["frames"] == 12 and len(calls) == 2
    d = tmp_path / "clip_00000"
    expected = {
        "video.mp4",
        "audio.wav",
        "openpose_json",
        "pose_coco18.npy",
        "joints3d.npy",
        "smpl.npz",
        "flow_forward.npz",
        "flow_backward.npz",
        "depth.npz",
        "iuv.npz",
        "masks",
        "beats.json",
        "camera.json",
        "appearance.txt",
        "motion.txt",
        "meta.json",
    }
    assert expected <= {p.name for p in d.iterdir()}
    assert read_video(d / "video.mp4").frames.shape == (6, 48, 64, 3)
    assert np.load(d / "flow_forward.npz")["flow"].shape == (5, 2, 48, 64)
    assert np.load(d / "joints3d.npy").shape == (6, 22, 3)
    frame0 = json.loads(sorted((d / "openpose_json").glob("*_keypoints.json"))[0].read_text())
    assert len(frame0["people"][0]["pose_keypoints_2d"]) == 54
    assert np.allclose(
        np.array(frame0["people"][0]["pose_keypoints_2d"]).reshape(18, 3), np.load(d / "pose_coco18.npy")[0], atol=1e-3
    )
    assert json.loads((d / "meta.json").read_text())["motion_text"] == (d / "motion.txt").read_text().strip()
    ref = render_clip(json.loads((d / "meta.json").read_text())["seeds"]["seed"], (64, 48), 6)
    assert np.array_equal(np.load(d / "joints3d.npy"), ref.joints3d)
    # Resume: nothing to do; a crash leftover (a .part folder) is ignored; overwrite re-renders.
    mtime = (d / "meta.json").stat().st_mtime_ns
    s2 = generate(tmp_path, 2, size=(64, 48), num_frames=6)
    assert s2["done"] == [] and s2["skipped"] == ["clip_00000", "clip_00001"]
    assert (d / "meta.json").stat().st_mtime_ns == mtime
    assert generate(tmp_path, 3, size=(64, 48), num_frames=6, shard="2/2")["done"] == []  # clip 1 exists
    assert generate(tmp_path, 3, size=(64, 48), num_frames=6, shard="1/2")["done"] == ["clip_00002"]
    with pytest.raises(InputError):
        generate(tmp_path, 1, layout="coco")
    with pytest.raises(InputError):
        generate(tmp_path, 1, motion="a person yodels")


def test_generate_other_layouts(tmp_path):
    from dancegen.pose.convert import Camera

    t = generate(tmp_path / "tt", 2, layout="tiktok", size=64, num_frames=4)
    assert t["done"] == ["00001", "00002"]
    for sub in ("images", "masks", "densepose"):
        assert sorted(p.name for p in (tmp_path / "tt" / "00001" / sub).iterdir()) == [
            f"{i:04d}.png" for i in range(4)
        ]
    assert len(list((tmp_path / "tt" / "00001" / "openpose_json").glob("*_keypoints.json"))) == 4
    assert (tmp_path / "tt" / "train.txt").read_text() == "00001\n00002\n"

    a = generate(tmp_path / "aist", 2, layout="aist", size=(80, 64), num_frames=4, fps=30)
    seq = a["done"][0]
    assert seq == "gBR_sBM_cAll_d01_mBR0_ch01"
    root = tmp_path / "aist"
    assert (root / "videos" / "gBR_sBM_c01_d01_mBR0_ch01.mp4").exists() and (root / "wavs" / "mBR0.wav").exists()
    k2 = pickle.loads((root / "keypoints2d" / f"{seq}.pkl").read_bytes())["keypoints2d"]
    k3 = pickle.loads((root / "keypoints3d" / f"{seq}.pkl").read_bytes())["keypoints3d"]
    mo = pickle.loads((root / "motions" / f"{seq}.pkl").read_bytes())
    assert k2.shape == (9, 4, 17, 3) and k3.shape == (4, 17, 3) and mo["smpl_poses"].shape == (4, 72)
    assert f"{seq} setting1" in (root / "cameras" / "mapping.txt").read_text()
    cams = json.loads((root / "cameras" / "setting1.json").read_text())
    for v in (0, 4):
        cam = Camera.from_aist(cams[v])
        xc = k3.astype(np.float64) @ cam.R.T + cam.t
        uv = np.stack([cam.fx * xc[..., 0] / xc[..., 2] + cam.cx, cam.fy * xc[..., 1] / xc[..., 2] + cam.cy], -1)
        vis = k2[v, ..., 2] > 0
        assert vis[:, 5:].all() and np.abs(uv[vis] - k2[v][vis][:, :2]).max() < 1e-2

    generate(tmp_path / "h", 2, layout="humanml3d", num_frames=48, fps=24)
    j = np.load(tmp_path / "h" / "new_joints" / "000000.npy")
    assert j.shape == (40, 22, 3) and abs(j[..., 1].min()) < 1e-6  # 2 s at 20 fps, floor at 0
    line = (tmp_path / "h" / "texts" / "000000.txt").read_text().splitlines()[0]
    cap, tokens, t0, t1 = line.split("#")
    assert cap.startswith("a person") and "/VERB" in tokens and (t0, t1) == ("0.0", "0.0")
    assert (tmp_path / "h" / "test.txt").exists()


def test_generate_workers_match_serial(tmp_path):
    generate(tmp_path / "w1", 2, size=48, num_frames=3, flow=False)
    generate(tmp_path / "w2", 2, size=48, num_frames=3, flow=False, workers=2)
    for name in ("clip_00000", "clip_00001"):
        for f in ("joints3d.npy", "iuv.npz", "pose_coco18.npy"):
            assert (tmp_path / "w1" / name / f).read_bytes() == (tmp_path / "w2" / name / f).read_bytes()


def test_overwrite_with_fewer_clips_removes_the_old_extra_clips(tmp_path):
    """Issue 15: `synth --overwrite` with fewer clips left the old extra clips beside the new ones (and in the index
    files' place). Only clips the previous run wrote go; other files stay."""
    generate(tmp_path / "c", 3, size=64, num_frames=3, flow=False)
    (tmp_path / "c" / "notes.txt").write_text("mine")
    generate(tmp_path / "c", 1, size=64, num_frames=3, flow=False, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) == ["clip_00000"]
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"
    generate(tmp_path / "h", 3, layout="humanml3d", size=64, num_frames=3, flow=False)
    before = sorted(p.name for p in (tmp_path / "h" / "new_joints").iterdir())
    generate(tmp_path / "h", 2, layout="humanml3d", size=64, num_frames=3, flow=False, overwrite=True)
    after = sorted(p.name for p in (tmp_path / "h" / "new_joints").iterdir())
    assert len(before) == 3 and after == before[:2]
    assert not list((tmp_path / "h").rglob(before[2].split(".")[0] + ".*"))


def test_place_text_is_the_scene_description_without_its_camera():
    import numpy as np

    from dancegen.synth.appearance import Scene, place_text

    for seed, motion in ((0, "static"), (1, "pan"), (2, "shake")):
        scene = Scene.sample(np.random.default_rng(seed), camera_motion=motion)
        text = scene.describe()
        assert place_text(text).startswith("in a room with ") and "camera" not in place_text(text)
        assert text.startswith(place_text(text) + ", filmed by ") and text.endswith("camera")
