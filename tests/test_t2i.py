"""Tests of dancegen.t2i (captions, data, training in the real diffusers layouts, quality measurements) and
pose/depth.py, without the bundled weights: tiny runs of `dancegen train` make the folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dancegen.pose.depth import INVERSE_FLOOR, depth_control_image
from dancegen.t2i import captions as C
from dancegen.t2i import quality as Q

TINY = ["--set", "data.num_clips=6", "--set", "data.num_frames=6", "--set", "data.frame_step=3",
        "--set", "data.captions_per_clip=4", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]


# ------------------------------------------------------------------------------------------------------- captions
def _app_scene(seed=3):
    from dancegen.synth.appearance import Appearance, Scene

    rng = np.random.default_rng(seed)
    return Appearance.sample(rng), Scene.sample(rng)


def test_captions_name_garments_only_with_their_colour_and_are_reproducible():
    app, scene = _app_scene()
    caps = C.caption_variants(app, scene, 200, seed=5)
    assert caps == C.caption_variants(app, scene, 200, seed=5)
    assert len(set(caps)) > 20  # parts are dropped at random: many distinct captions
    for c in caps:
        for garment in ("shirt", app.bottom):
            if garment in c:
                colour = app.top_colour if garment == "shirt" else app.bottom_colour
                assert colour in c, c
    assert any(c == f"{app.describe()}, {scene.describe()}" for c in caps)  # the world's full description
    assert any(len(c.split()) <= 8 for c in caps)  # short prompts too


def test_tokenizer_words_cover_the_captions(tmp_path):
    from dancegen.core.text import build_clip_tokenizer
    from dancegen.synth.appearance import COLOURS

    words = C.tokenizer_words(samples=200)
    assert set(COLOURS) <= set(words) and {"dancer", "trousers", "shirt", "skirt"} <= set(words)
    tok = build_clip_tokenizer(tmp_path, words)
    app, scene = _app_scene(11)
    for c in C.caption_variants(app, scene, 20, seed=1):
        ids = tok(c).input_ids[1:-1]
        assert len(ids) == len(tok.tokenize(c)) and len(ids) <= len(c.split()) + c.count(",") + 2 * c.count("-")
    unk = tok("a dancer in a vermilion kimono").input_ids
    assert tok.unk_token_id not in unk[1:-1] and len(unk) > 8  # unknown words split into pieces, never <unk>


# ------------------------------------------------------------------------------------------------------- depth
def test_depth_control_image_near_is_bright_background_zero():
    z = np.full((2, 8, 8), 100.0)
    z[:, 2:6, 2:6] = np.linspace(2.0, 3.0, 4)[None, None, :]  # nearer on the left
    img = depth_control_image(z)
    assert img.dtype == np.uint8 and img.shape == z.shape
    assert (img[:, :2] == 0).all() and (img[:, 6:] == 0).all()
    row = img[0, 3, 2:6].astype(int)
    assert row[0] == 255 and row[-1] == round(INVERSE_FLOOR * 255) and (np.diff(row) < 0).all()
    mask = np.zeros((2, 8, 8), bool)
    mask[:, 2:6, 2:4] = True
    assert (depth_control_image(z, mask)[:, :, 4:] == 0).all()
    lin = depth_control_image(z, encoding="official_linear")
    assert lin[0, 3, 2] == round(2.0 / 5 * 255) and lin[0, 0, 0] == 0
    with pytest.raises(ValueError, match="one of"):
        depth_control_image(z, encoding="midas")


# ------------------------------------------------------------------------------------------------------- quality
@pytest.fixture(scope="module")
def heldout():
    return Q.heldout_frames(8)


def test_heldout_frames_are_plain_clothes_and_unseen(heldout):
    assert len(heldout["facts"]) == 8 and heldout["frames"].shape == (8, 64, 64, 3)
    assert all(f["top_pattern"] == "solid" and f["bottom_pattern"] == "solid" for f in heldout["facts"])
    assert heldout["pose_maps"].shape == (8, 64, 64, 3) and heldout["depth_maps"].shape == (8, 64, 64)
    # the depth map's foreground is the person mask
    assert ((heldout["depth_maps"] > 0) == heldout["masks"]).all()


def test_colour_namer_reads_real_frames_and_not_another_clips_colours(heldout):
    """The measurement's ceiling and its control on real frames: right colours at the driving joints, and a
    different clip's described colours do not match."""
    facts, kps = heldout["facts"], heldout["keypoints"]
    own = [h for i in range(8) for h in Q._colour_hits(heldout["frames"][i], kps[i], facts[i])]
    other = [h for i in range(8) for h in Q._colour_hits(heldout["frames"][i], kps[i], facts[(i + 4) % 8])]
    assert len(own) == 16 and np.mean(own) >= 0.9
    assert np.mean(other) <= 0.25


def test_garment_regions_sit_on_the_torso_and_thighs(heldout):
    kps, masks = heldout["keypoints"][0], heldout["masks"][0]
    regions = Q.garment_regions(kps, 64)
    for name in ("top", "bottom"):
        assert regions[name] is not None and regions[name].sum() >= 4
        assert masks[regions[name]].mean() >= 0.9  # inside the person
    assert np.nonzero(regions["top"])[0].mean() < np.nonzero(regions["bottom"])[0].mean()  # top above bottom
    hidden = kps.copy()
    hidden[Q.L_HIP, 2] = 0
    assert Q.garment_regions(hidden, 64) == {"top": None, "bottom": None}


def test_silhouette_edge_ratio_prefers_the_own_outline(heldout):
    own = [Q.silhouette_edge_ratio(heldout["frames"][i], heldout["masks"][i]) for i in range(8)]
    other = [Q.silhouette_edge_ratio(heldout["frames"][i], heldout["masks"][(i + 4) % 8]) for i in range(8)]
    assert np.mean(own) > 1.5 * np.mean(other)


def test_colour_name_is_nearest():
    from dancegen.synth.appearance import COLOURS

    for name, rgb in COLOURS.items():
        assert Q.colour_name(np.array(rgb) + 3) == name


# ------------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step t2i run and 2-step ControlNet runs on it (tiny data), through the CLI."""
    from dancegen.cli import app

    root = tmp_path_factory.mktemp("t2i")
    runner = CliRunner()
    base = root / "t2i"
    r = runner.invoke(app, ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "-o", str(base), *TINY,
                            "--set", "train.stages=[{name: vae, steps: 2, lr: 1e-3, batch_size: 4}, "
                            "{name: t2i, steps: 2, lr: 1e-3, batch_size: 4}]"])
    assert r.exit_code == 0, r.output
    nets = {}
    for control in ("openpose", "depth"):
        nets[control] = root / control
        r = runner.invoke(app, ["train", "--recipe", f"recipes/t2i/controlnet_{control}_tiny.yaml", "-o",
                                str(nets[control]), *TINY, "--set", f"model.base={base / 'model'}",
                                "--set", "train.stages=[{name: controlnet, steps: 2, lr: 1e-3, batch_size: 4}]"])
        assert r.exit_code == 0, r.output
    return base / "model", {k: v / "model" for k, v in nets.items()}


def test_trained_folders_have_the_real_diffusers_layouts(trained):
    """What diffusers' own pipelines load: an SD-1.5 text-to-image folder and ControlNet folders."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    base, nets = trained
    assert sorted(p.name for p in (base / "tokenizer").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    index = json.loads((base / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.rescale_betas_zero_snr
    cn = ControlNetModel.from_pretrained(nets["openpose"])
    assert list(cn.config.conditioning_embedding_out_channels) == [16, 32, 64]  # 64 px map -> 16x16 latent
    cpipe = StableDiffusionControlNetPipeline.from_pretrained(base, controlnet=cn, safety_checker=None)
    pose = Q.heldout_frames(1)["pose_maps"][0]
    out = cpipe("a dancer in a red t-shirt", image=torch.from_numpy(pose).permute(2, 0, 1)[None] / 255.0,
                height=64, width=64, num_inference_steps=2, output_type="np",
                generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_bundle_generation_equals_diffusers_controlnet_pipeline(trained):
    """`T2IBundle.generate` (the core's frame loop) gives diffusers' StableDiffusionControlNetPipeline's image."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    base, nets = trained
    bundle = Q.T2IBundle.load(str(base), {k: str(v) for k, v in nets.items()})
    pose = Q.heldout_frames(1)["pose_maps"][0]
    ours = bundle.generate("a dancer in a red t-shirt", {"openpose": pose}, seed=3, steps=4, guidance=3.0)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        base, controlnet=ControlNetModel.from_pretrained(nets["openpose"]), safety_checker=None)
    ref = pipe("a dancer in a red t-shirt", image=torch.from_numpy(pose).permute(2, 0, 1)[None] / 255.0, height=64,
               width=64, num_inference_steps=4, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(ours.astype(float) - ref * 255).max() <= 1.0


def test_autoencode(trained):
    """`T2IBundle.autoencode` returns the frames through the model's autoencoder (the `real_through_vae` ceiling):
    what core.latents' encode / decode give, as uint8 images."""
    from dancegen.core.latents import decode_latents, encode_images
    from dancegen.t2i.data import to_unit

    bundle = Q.T2IBundle.load(str(trained[0]), {})
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out = bundle.autoencode(frames)
    vae = bundle.components.vae
    with torch.no_grad():
        ref = decode_latents(vae, encode_images(vae, to_unit(frames) * 2 - 1)).permute(0, 2, 3, 1).numpy()
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - ref * 255).max() <= 0.5 + 1e-3


def test_controlnet_training_leaves_the_base_untouched(trained):
    from diffusers import ControlNetModel, UNet2DConditionModel

    base, nets = trained
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    cn = ControlNetModel.from_pretrained(nets["depth"])
    # the ControlNet started as a copy of the base encoder and moved; the base folder is what the t2i run wrote
    a, b = unet.conv_in.weight, cn.conv_in.weight
    assert a.shape == b.shape and not torch.equal(a, b)
    run = nets["depth"].parent
    report = [json.loads(line) for line in (run / "stage-1-controlnet" / "metrics.jsonl").read_text().splitlines()]
    assert report[-1]["step"] == 2


def test_recipe_errors_name_the_problem(tmp_path):
    from dancegen.errors import InputError
    from dancegen.t2i.config import load_config

    with pytest.raises(InputError, match=r"trains stages \['controlnet'\]"):
        load_config("recipes/t2i/controlnet_depth_tiny.yaml",
                    ["train.stages=[{name: t2i, steps: 2, lr: 1e-3}]"])
    with pytest.raises(InputError, match="control must be"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["control=canny"])
    with pytest.raises(InputError, match="model.base"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["control=depth", "train.stages=[{name: controlnet}]"])
    with pytest.raises(InputError, match="vae stage comes first"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["train.stages=[{name: t2i}, {name: vae}]"])
    with pytest.raises(InputError, match="set to null when a vae stage"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["model.vae_from=dyl-tiny"])
    with pytest.raises(InputError, match="model.init_from: a model trained on another autoencoder"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["model.init_from=t2i-tiny"])
    with pytest.raises(InputError, match="name an autoencoder to reuse or add a vae stage"):
        load_config("recipes/t2i/t2i_tiny.yaml", ["train.stages=[{name: t2i}]"])


def test_vae_stage_trains_the_autoencoder_the_base_then_uses(tmp_path):
    """Stage vae writes an autoencoder whose latents have unit std on the frames (its scaling factor); the t2i stage
    trains on that autoencoder and ships it in the SD-1.5 folder; a t2i-only rerun takes it from the vae stage's
    folder, and without that folder it is one line."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from dancegen.cli import app
    from dancegen.core.latents import encode_images
    from dancegen.t2i.data import to_unit

    runner = CliRunner()
    run = tmp_path / "run"
    stages = "train.stages=[{name: vae, steps: 3, lr: 1e-3, batch_size: 4, person_weight: 4.0}, " \
             "{name: t2i, steps: 2, lr: 1e-3, batch_size: 4}]"
    r = runner.invoke(app, ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "-o", str(run), *TINY,
                            "--set", stages])
    assert r.exit_code == 0, r.output
    trained = AutoencoderKL.from_pretrained(run / "stage-1-vae" / "model" / "vae")
    shipped = AutoencoderKL.from_pretrained(run / "model" / "vae")
    for a, b in zip(trained.state_dict().values(), shipped.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert shipped.config.scaling_factor == trained.config.scaling_factor != 0.18215
    with np.load(run / "data" / "frames.npz") as z:
        frames = z["frames"]
    with torch.no_grad():
        z = encode_images(shipped, to_unit(frames) * 2 - 1)
    assert abs(float(z.std()) - 1.0) < 1e-3  # every frame is in the calibration subset here
    pipe = StableDiffusionPipeline.from_pretrained(run / "model", safety_checker=None, requires_safety_checker=False)
    assert pipe.vae.config.scaling_factor == shipped.config.scaling_factor

    # train.run = the t2i stage only: the autoencoder comes from the vae stage's folder
    r = runner.invoke(app, ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "-o", str(run), *TINY,
                            "--set", stages, "--set", "train.run=[t2i]", "--resume", "never"])
    assert r.exit_code == 0, r.output
    fresh = tmp_path / "fresh"
    r = runner.invoke(app, ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "-o", str(fresh), *TINY,
                            "--set", stages, "--set", "train.run=[t2i]"])
    assert r.exit_code == 2 and "the vae stage has not run yet" in r.output and "Traceback" not in r.output

    # training further from the model (init_from, no vae stage) keeps its autoencoder
    more = tmp_path / "more"
    r = runner.invoke(app, ["train", "--recipe", "recipes/t2i/t2i_tiny.yaml", "-o", str(more), *TINY,
                            "--set", f"model.init_from={run / 'model'}",
                            "--set", "train.stages=[{name: t2i, steps: 1, lr: 1e-3, batch_size: 4}]"])
    assert r.exit_code == 0, r.output
    kept = AutoencoderKL.from_pretrained(more / "model" / "vae")
    assert kept.config.scaling_factor == shipped.config.scaling_factor
    for a, b in zip(kept.state_dict().values(), shipped.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_latent_cache_follows_frames_and_autoencoder(tmp_path):
    """`ensure_latents` reuses its file only for the same frames and the same autoencoder weights."""
    from diffusers import AutoencoderKL

    from dancegen.core.tiny import tiny_vae_config
    from dancegen.t2i.data import encode_latents, ensure_latents

    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config(sample_size=16)).eval()
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    f = tmp_path / "latents.pt"
    a = ensure_latents(f, vae, frames)
    assert torch.equal(a, encode_latents(vae, frames)) and torch.equal(ensure_latents(f, vae, frames), a)
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(2.0)
    b = ensure_latents(f, vae, frames)
    assert not torch.equal(a, b) and torch.equal(b, encode_latents(vae, frames))
    c = ensure_latents(f, vae, frames[::-1].copy())
    assert torch.equal(c, b.flip(0))


def test_retrain_script_names_existing_recipes_and_runners():
    """recipes/t2i/retrain_text_models.sh: usage without a step (exit 2), and every recipe, model name and runner it
    names exists (so it does not rot when one is renamed)."""
    import importlib.util
    import re
    import subprocess
    from pathlib import Path

    from dancegen.core.weights import BUNDLED_ROOT

    script = Path("recipes/t2i/retrain_text_models.sh")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    text = script.read_text()
    recipes = re.findall(r"recipes/[\w/]+\.yaml", text.replace("${c}", "openpose"))
    recipes += re.findall(r"recipes/[\w/]+\.yaml", text.replace("${c}", "depth"))
    assert len(recipes) >= 4 and all(Path(p).is_file() for p in recipes), recipes
    modules = re.findall(r"python -m ([\w.]+)", text)
    assert modules and all(importlib.util.find_spec(m) is not None for m in modules), modules
    names = re.findall(r"\s(t2i-tiny|dancing-avatar-tiny|controlnet-\$c-tiny)\b", text)
    bundled = {n.replace("$c", c) for n in names for c in ("openpose", "depth")}
    assert bundled and all((BUNDLED_ROOT / n).is_dir() for n in bundled), bundled
