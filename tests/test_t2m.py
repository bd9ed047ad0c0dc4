"""The tiny text-to-motion model (dancegen.motion.t2m): data from the synthetic world, the network and its diffusion
sampler, training with exact resume, and the primitive detectors of its quality check. Tiny models from config,
offline, seeded; the bundled model's quality is in test_t2m_bundled.py."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.motion.t2m.data import PHRASES, canonicalize, heading, sample_pair, synth_motion, vocabulary_words
from dancegen.motion.t2m.model import T2MConfig, TextToMotion, Vocab, build_network, cosine_alphas_cumprod
from dancegen.motion.t2m.quality import DETECTABLE, detect

RECIPE = "recipes/motion/t2m_tiny.yaml"
TINY = T2MConfig(d_model=32, layers=1, heads=2, ff=64, text_layers=1, max_words=12, dropout=0.0)


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised tiny model (seeded), unit statistics."""
    import torch

    torch.manual_seed(0)
    vocab = Vocab(vocabulary_words())
    net = build_network(TINY, len(vocab)).eval()
    return TextToMotion(net, TINY, vocab, np.zeros(67, np.float32), np.ones(67, np.float32))


# ---------------------------------------------------------------------------------------------------- data
def test_pairs_are_render_clip_joints_without_the_video():
    from dancegen.synth.clip import render_clip

    clip = render_clip(seed=5, num_frames=60, fps=20.0, motion_text="a person jumps and then spins around",
                       render=False, flow=False)
    np.testing.assert_allclose(synth_motion(5, ["jumps", "spins"]), clip.joints3d, atol=1e-5)


def test_every_paraphrase_parses_back_to_its_primitive():
    from dancegen.synth.motion import VOCABULARY, parse_motion_text

    assert set(PHRASES) == set(VOCABULARY)
    for prim, phrases in PHRASES.items():
        for p in phrases:
            assert parse_motion_text(f"someone {p}")[0] == [prim], p
    for seed in range(40):  # whole sampled texts, 1-3 primitives, keep their primitives in order
        text, prims, joints = sample_pair(seed)
        assert parse_motion_text(text)[0] == prims and 1 <= len(prims) <= 3, text
        assert joints.shape == (60, 22, 3)


def test_canonical_start_faces_plus_z_at_the_origin():
    j = synth_motion(3, ["turns"])
    rot = np.radians(70.0)  # turn and move the whole motion: the canonical form does not change
    c, s = np.cos(rot), np.sin(rot)
    moved = j.copy()
    moved[..., 0], moved[..., 2] = c * j[..., 0] + s * j[..., 2] + 2.0, -s * j[..., 0] + c * j[..., 2] - 1.0
    a, b = canonicalize(j), canonicalize(moved)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert abs(a[0, 0, 0]) < 1e-6 and abs(a[0, 0, 2]) < 1e-6 and abs(heading(a[0])) < 1e-5
    np.testing.assert_allclose(a[..., 1], j[..., 1], atol=1e-6)  # heights kept


def test_spins_and_turns_are_mirrored_to_start_counter_clockwise():
    from dancegen.motion.t2m.data import first_turn, mirror

    j = canonicalize(synth_motion(1, ["spins"]))
    assert first_turn(mirror(j)) == -first_turn(j) != 0
    m = mirror(j)
    assert abs(heading(m[0])) < 1e-5 and np.allclose(mirror(m), j)
    turned = [sample_pair(s) for s in range(120)]
    assert all(first_turn(joints) >= 0 for _, _, joints in turned)
    assert sum(first_turn(joints) > 0 for _, _, joints in turned) > 10


def test_features_invert_exactly_and_carry_the_heading():
    from dancegen.motion.t2m.data import from_features, to_features

    j = canonicalize(synth_motion(2, ["spins", "walks forward"]))
    f = to_features(j)
    assert f.shape == (60, 67)
    np.testing.assert_allclose(from_features(f), j, atol=1e-5)
    np.testing.assert_allclose(from_features(to_features(synth_motion(2, ["turns"]))), synth_motion(2, ["turns"]),
                               atol=1e-5)  # any start, not only the canonical one
    assert abs(np.degrees(f[:, 0].sum())) > 300  # the spin is in the heading channel
    # the body-frame pose of a pure rotation does not change
    turned = canonicalize(j)
    turned[..., [0, 2]] = turned[..., [2, 0]] * [1, -1]  # the whole motion turned by 90 degrees
    np.testing.assert_allclose(to_features(turned)[:, 4:], f[:, 4:], atol=1e-5)


# ---------------------------------------------------------------------------------------------------- model
def test_x0_prediction_shape_and_unknown_words(tiny):
    import torch

    ids = torch.from_numpy(tiny.vocab.encode(["a person jumps", "zorblax quux", ""], TINY.max_words))
    assert ids[1, 0] == 1 and ids[1, 1] == 1 and ids[2, 0] == 1  # <unk>; an empty prompt is one <unk>
    x = torch.randn(3, 60, 67)
    out = tiny.net(x, torch.tensor([0, 500, 999]), ids, torch.ones(3, dtype=torch.bool))
    assert out.shape == (3, 60, 67) and torch.isfinite(out).all()
    m = tiny.generate("the flibbertigibbet xyzzies", steps=3)
    assert m.joints.shape == (60, 22, 3) and np.isfinite(m.joints).all()


def test_same_seed_same_motion(tiny):
    a = tiny.generate("a person jumps", seed=3, steps=4)
    b = tiny.generate("a person jumps", seed=3, steps=4)
    c = tiny.generate("a person jumps", seed=4, steps=4)
    np.testing.assert_array_equal(a.joints, b.joints)
    assert not np.allclose(a.joints, c.joints)
    assert a.format == "t2m" and a.fps == 20.0 and a.meta["text"] == "a person jumps" and a.meta["seed"] == 3
    # the batch sampler gives each text its own seed's motion
    batch = tiny.generate_batch(["someone claps", "a person jumps"], seeds=[9, 3], steps=4)
    np.testing.assert_allclose(batch[1].joints, a.joints, atol=1e-4)


def test_frame_count_crops_and_refuses_more(tiny):
    from dancegen.errors import InputError

    full, short = tiny.generate("a person kicks", steps=2), tiny.generate("a person kicks", num_frames=20, steps=2)
    assert short.num_frames == 20
    np.testing.assert_array_equal(short.joints, full.joints[:20])
    with pytest.raises(InputError, match="1..60"):
        tiny.generate("a person kicks", num_frames=61)


def test_guidance_one_is_the_conditional_branch(tiny):
    import torch

    torch.manual_seed(1)
    x, t = torch.randn(2, 60, 67), torch.tensor([10, 700])
    ids = tiny.encode(["a person jumps", "someone waves the left arm"])
    with torch.inference_mode():
        cond = tiny.net(x, t, ids, torch.ones(2, dtype=torch.bool))
        uncond = tiny.net(x, t, ids, torch.zeros(2, dtype=torch.bool))
        torch.testing.assert_close(tiny.guided_x0(x, t, ids, 1.0), cond, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiny.guided_x0(x, t, ids, 0.0), uncond, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(cond, uncond, atol=1e-3)  # the text changes the prediction
        g = tiny.guided_x0(x, t, ids, 2.5)
        torch.testing.assert_close(g, uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_cosine_schedule():
    ab = cosine_alphas_cumprod(1000)
    assert ab.shape == (1000,) and 0.999 < ab[0] <= 1 and ab[-1] < 1e-4 and np.all(np.diff(ab) < 0)


# ---------------------------------------------------------------------------------------------------- training
def _tiny_overrides(steps: int) -> list[str]:
    return ["data.num_samples=12", "data.val_samples=2", "model.d_model=32", "model.layers=1", "model.heads=2",
            "model.ff=64", "model.text_layers=1", "model.max_words=12", f"train.steps={steps}",
            "train.batch_size=4", "train.warmup=1", "train.log_every=1", "train.eval_every=100",
            "train.checkpoint_every=2", "train.threads=1", "train.quality_count=0"]


def test_train_resumes_exactly(tmp_path):
    """A tiny model from the recipe trains with a finite loss; 4 steps in one go equal 2 steps, a stop, and 2 more
    from the checkpoint (network, optimiser, numpy and torch RNG states); the model folder loads and samples."""
    import json

    import torch
    from safetensors.torch import load_file

    from dancegen import api

    straight = api.train(RECIPE, _tiny_overrides(4), out=tmp_path / "straight")
    losses = [h["loss"] for h in straight["history"] if "loss" in h]
    assert len(losses) == 4 and np.all(np.isfinite(losses)) and np.isfinite(list(straight["val"].values())).all()
    api.train(RECIPE, _tiny_overrides(2), out=tmp_path / "resumed")
    rep = api.train(RECIPE, _tiny_overrides(4), out=tmp_path / "resumed")
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert rep["steps"] == 4 and [h["step"] for h in metrics["history"] if "loss" in h] == [1, 2, 3, 4]
    folder = tmp_path / "resumed" / "model"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "stats.json",
                                                   "t2m.yaml"}
    m = TextToMotion.load(folder).generate("a person squats", steps=2)
    assert m.joints.shape == (60, 22, 3) and np.isfinite(m.joints).all()


def test_recipe_errors_and_missing_model(tmp_path):
    from dancegen import api
    from dancegen.errors import InputError, MissingWeightsError

    bad = tmp_path / "bad.yaml"
    bad.write_text("method: t2m\ntrain:\n  stepz: 3\n")
    with pytest.raises(InputError, match="stepz"):
        api.train(bad, out=tmp_path / "run")
    with pytest.raises(MissingWeightsError, match="t2m_tiny.yaml") as e:
        TextToMotion.load(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------- detectors
@pytest.mark.parametrize("prim", DETECTABLE)
def test_detectors_fire_on_real_motions_of_their_primitive(prim):
    from dancegen.synth.layouts import clip_seed

    for i in range(3):
        assert detect(canonicalize(synth_motion(clip_seed(11, i), [prim])))[prim], (prim, i)


def test_detectors_stay_quiet_on_a_standing_pose():
    from dancegen.synth.body import BodyShape, pose_body
    from dancegen.synth.motion import BASE

    f = 60
    joints = pose_body(np.repeat(BASE[None], f, 0), np.zeros(f), np.zeros((f, 2)), np.zeros(f), BodyShape())[0]
    assert not any(detect(joints).values()), detect(joints)
    # and on the calm primitives without a detector
    for prim in ("bounces", "steps side to side"):
        assert not any(detect(canonicalize(synth_motion(4, [prim]))).values()), prim
