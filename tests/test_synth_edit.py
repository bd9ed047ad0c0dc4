"""Motion-editing cases with an exact target (dancegen.synth.edit, `dancegen synth --layout edit`)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dancegen.synth.body import PARENTS, J
from dancegen.synth.clip import render_clip
from dancegen.synth.edit import ROLES, edit_clips
from dancegen.synth.layouts import clip_seed, generate, render_edit_case

SIZE, FRAMES = (64, 48), 6
#: Bones whose rest offset scales uniformly with the body (legs, arms, spine, neck): their world direction is the
#: motion's alone. Hips, collars and shoulders also get a width factor, so their direction depends on the body.
UNIFORM_BONES = [j for j in range(1, 22) if j not in (J["l_hip"], J["r_hip"], J["l_collar"], J["r_collar"],
                                                     J["l_shoulder"], J["r_shoulder"])]


@pytest.fixture(scope="module")
def case():
    return edit_clips(1, 2, SIZE, FRAMES, camera_motion="static", flow=False)


def _directions(joints: np.ndarray) -> np.ndarray:
    bones = joints[:, UNIFORM_BONES] - joints[:, PARENTS[UNIFORM_BONES]]
    return bones / np.linalg.norm(bones, axis=-1, keepdims=True)


def test_clips_have_one_length_and_rate(case):
    for clip in case.values():
        assert (clip.num_frames, clip.fps, clip.width, clip.height) == (FRAMES, 24.0, *SIZE)
        assert clip.frames.shape == (FRAMES, SIZE[1], SIZE[0], 3)


def test_target_shares_appearance_scene_and_camera_with_source(case):
    src, tgt = case["source"], case["target"]
    assert src.appearance == tgt.appearance and src.appearance_text == tgt.appearance_text
    assert src.scene == tgt.scene and src.scene.camera_motion == "static"
    for name in ("K", "R", "t"):
        assert np.array_equal(getattr(src.camera, name), getattr(tgt.camera, name)), name
    # Same room, same light, same camera: every pixel outside both dancers is equal, in every frame.
    background = ~(src.masks | tgt.masks)
    assert background[0].mean() > 0.5
    assert np.array_equal(src.frames[background], tgt.frames[background])
    assert np.array_equal(src.depth[background], tgt.depth[background])
    # ... while the dancers themselves stand differently.
    assert not np.array_equal(src.masks, tgt.masks)
    # Both dancers are fully in view (the camera is fitted to both motions).
    for m in (src.masks, tgt.masks):
        assert m.any(axis=(1, 2)).all()
        assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())


def test_target_shares_motion_with_reference(case):
    src, tgt, ref = (case[r] for r in ROLES)
    assert ref.appearance != tgt.appearance
    # The motion: joint rotations and the floor trajectory are exactly the reference's; the music too.
    assert np.array_equal(tgt.rotations, ref.rotations)
    assert np.array_equal(tgt.root[:, [0, 2]], ref.root[:, [0, 2]])
    assert np.array_equal(tgt.audio, ref.audio) and np.array_equal(tgt.beat_phase, ref.beat_phase)
    assert tgt.motion_text == ref.motion_text
    # The joints differ only by the body: bone directions agree, bone lengths do not.
    np.testing.assert_allclose(_directions(tgt.joints3d), _directions(ref.joints3d), atol=1e-5)
    assert not np.allclose(tgt.joints3d, ref.joints3d, atol=1e-3)
    # Source and target dance differently.
    assert np.abs(src.rotations - tgt.rotations).max() > 0.3
    assert np.abs(_directions(src.joints3d) - _directions(tgt.joints3d)).max() > 0.3


def test_reference_is_seed_b_as_synth_renders_it(case):
    ref = render_clip(2, SIZE, FRAMES, camera_motion="static", flow=False)
    assert np.array_equal(case["reference"].frames, ref.frames)
    assert np.array_equal(case["reference"].keypoints, ref.keypoints)


def test_moving_camera_and_text_motion():
    c = edit_clips(5, 6, 48, 4, motion="a person jumps and spins", camera_motion="shake", flow=False)
    src, tgt, ref = (c[r] for r in ROLES)
    assert src.scene.camera_motion == "shake" and np.array_equal(src.camera.R, tgt.camera.R)
    background = ~(src.masks | tgt.masks)
    assert np.array_equal(src.frames[background], tgt.frames[background])
    assert tgt.motion_text == ref.motion_text == "a person jumps and then spins around"
    assert src.motion_text != tgt.motion_text
    assert np.array_equal(tgt.rotations, ref.rotations)


#: sha256 of (frames, masks, keypoints, joints3d) of two default clips, computed with the code before `frame_on`
#: existed: the default path renders exactly what it rendered before. Update only for an intended renderer change.
GOLDEN = {
    (7, (48, 32), 4, "static"): "ba998b0d80e9dc3a22b2459e066d65125afef91905e8036cfb2f993731353cf0",
    (8, 40, 3, None): "1c7143376d69cca80d7648374280b37723f49d4e8dfe97419f11e32829206c3a",
}


@pytest.mark.parametrize("key", list(GOLDEN))
def test_default_synth_is_unchanged(key):
    seed, size, frames, camera = key
    clip = render_clip(seed, size, frames, camera_motion=camera)
    digest = hashlib.sha256()
    for a in (clip.frames, clip.masks, clip.keypoints, clip.joints3d):
        digest.update(np.ascontiguousarray(a).tobytes())
    assert digest.hexdigest() == GOLDEN[key]
    # The default camera is the one fitted to the clip's own framing points.
    again = render_clip(seed, size, frames, camera_motion=camera, render=False, frame_on=clip.framing)
    assert np.array_equal(again.camera.t, clip.camera.t) and np.array_equal(again.camera.K, clip.camera.K)


def test_frame_on_shape_is_checked():
    with pytest.raises(ValueError, match=r"frame_on must have shape \(4, N, 3\)"):
        render_clip(0, 32, 4, render=False, frame_on=np.zeros((3, 5, 3)))


def test_render_edit_case_writes_a_case(tmp_path):
    rec = render_edit_case(tmp_path / "case", 1, 2, (48, 32), 4, camera_motion="static", flow=False)
    d = tmp_path / "case"
    assert json.loads((d / "case.json").read_text()) == json.loads(json.dumps(rec))
    assert rec["source_seed"] == 1 and rec["motion_seed"] == 2 and rec["num_frames"] == 4 and rec["fps"] == 24.0
    src_meta = json.loads((d / "source" / "meta.json").read_text())
    assert rec["prompt"] == src_meta["appearance_text"] == (d / "target" / "appearance.txt").read_text().strip()
    assert rec["target_motion_text"] == (d / "reference" / "motion.txt").read_text().strip()
    tgt_seeds = json.loads((d / "target" / "meta.json").read_text())["seeds"]
    ref_seeds = json.loads((d / "reference" / "meta.json").read_text())["seeds"]
    assert tgt_seeds["appearance"] == src_meta["seeds"]["appearance"]
    assert tgt_seeds["scene"] == src_meta["seeds"]["scene"]
    assert (tgt_seeds["motion"], tgt_seeds["music"]) == (ref_seeds["motion"], ref_seeds["music"])
    from dancegen.io.video import read_video
    from dancegen.pose.openpose_json import read_openpose_folder

    for role in ROLES:
        v = read_video(d / role / "video.mp4")
        assert v.frames.shape[0] == 4 and v.fps == 24.0
        assert read_openpose_folder(d / role / "openpose_json").num_frames == 4
        assert len(list((d / role / "masks").glob("*.png"))) == 4


def test_generate_edit_layout_and_cli(tmp_path):
    s = generate(tmp_path / "g", 2, layout="edit", size=(48, 32), num_frames=3, seed=4, flow=False)
    assert s["done"] == ["case_00000", "case_00001"] and s["frames"] == 18
    for i, name in enumerate(s["done"]):
        d = tmp_path / "g" / name
        assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == ["case.json", "reference", "source",
                                                                                  "target"]
        rec = json.loads((d / "case.json").read_text())
        assert rec["source_seed"] == clip_seed(4, i) != rec["motion_seed"]
    again = generate(tmp_path / "g", 2, layout="edit", size=(48, 32), num_frames=3, seed=4, flow=False)
    assert again["skipped"] == ["case_00000", "case_00001"] and not again["done"]

    from dancegen.cli import app

    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["--seed", "4", "synth", "-o", str(out), "--layout", "edit", "--size", "48x32",
                                 "--frames", "3", "--no-flow", "--camera", "static"])
    assert r.exit_code == 0, r.output
    assert (out / "case_00000" / "target" / "video.mp4").is_file()
    assert not (out / "case_00000" / "source" / "flow_forward.npz").exists()
    help_text = CliRunner().invoke(app, ["synth", "--help"]).output
    assert "--layout edit" in help_text
