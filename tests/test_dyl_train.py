"""Dance-Your-Latents training (both stages, frozen sets, resume, export) and the `animate` / `train` verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dancegen.errors import InputError, MissingWeightsError
from dancegen.methods.dance_your_latents.config import load_recipe
from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, build_model

TINY = ["model.base=tiny", "data.resolution=[32,32]", "data.num_frames=4", "model.subspace_size=[2,2,2]",
        "inference.window=4", "inference.steps=2", "train.device=cpu", "train.log_every=1",
        "train.checkpoint_every=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from dancegen.synth import generate

    root = tmp_path_factory.mktemp("dyl") / "tiktok"
    generate(root, num_clips=2, layout="tiktok", size=32, num_frames=5, seed=0, camera_motion="static", flow=False)
    return root


def _cfg(data_root, *sets):
    return load_recipe(None, TINY + [f"data.root={data_root}", "data.split=null"] + list(sets))


def _train(cfg, out, resume="auto"):
    from dancegen.methods.dance_your_latents.train import train

    torch.manual_seed(cfg.seed)
    return train(cfg, out, resume=resume)


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.fixture(scope="module")
def stage1(data_root, tmp_path_factory):
    cfg = _cfg(data_root, "train.run=[stsa_only]", "train.stages=[{name: stsa_only, lr: 1e-2, steps: 2}, "
               "{name: finetune, lr: 1e-3, steps: 2}]")
    out = tmp_path_factory.mktemp("run") / "stage1"
    torch.manual_seed(cfg.seed)
    initial = build_model(cfg).state_dict()
    rep = _train(cfg, out)
    return cfg, out, rep, initial


def test_dataset_items(data_root):
    from dancegen.methods.dance_your_latents.data import dataset_from_config

    cfg = _cfg(data_root)
    ds = dataset_from_config(cfg, latent_hw=(16, 16))
    assert len(ds) == 2 * 2  # 2 videos x (5 - 4 + 1) windows
    it = ds[1]
    assert it["frames"].shape == (3, 4, 32, 32) and -1 <= it["frames"].min() and it["frames"].max() <= 1
    assert it["pose_maps"].shape == (3, 4, 32, 32) and it["pose_maps"].max() > 0.5
    assert it["reference"].shape == it["background"].shape == (3, 32, 32)
    m = it["masks"][0, 0] > 0.5
    assert m.any() and (~m).any()
    assert set(it["flows"]) == {0, 1} and it["flows"][0].shape == (4, 2, 16, 16)
    # DisCo's split of the (first-frame) reference: black outside the person / inside it
    ref_mask = ds[0]["masks"][0, 0] > 0.5
    assert torch.all(ds[0]["reference"][:, ~ref_mask] == -1) and torch.all(ds[0]["background"][:, ref_mask] == -1)
    assert it["keypoints"].shape == (4, 18, 3)


def test_stage1_trains_only_temporal_blocks(stage1):
    cfg, out, rep, initial = stage1
    assert rep["stages"]["stsa_only"]["steps"] == 2 and np.isfinite(rep["stages"]["stsa_only"]["loss"])
    trained = DanceYourLatentsModel.from_pretrained(out)
    changed = _changed(initial, trained.state_dict())
    assert changed and all(k.startswith("unet.temporal_blocks.") for k in changed)
    assert (out / "recipe.yaml").is_file() and (out / "model" / "dance_your_latents.yaml").is_file()
    assert load_recipe(out / "recipe.yaml") == cfg


def test_stage2_freezes_controlnets_and_resumes(stage1, data_root, tmp_path):
    cfg1, out1, _, _ = stage1
    cfg = _cfg(data_root, f"model.init_from={out1}", "train.run=[finetune]",
               "train.stages=[{name: stsa_only, lr: 1e-2, steps: 2}, {name: finetune, lr: 1e-3, steps: 2}]")
    start = DanceYourLatentsModel.from_pretrained(out1).state_dict()
    out = tmp_path / "stage2"
    _train(cfg, out)
    after = DanceYourLatentsModel.from_pretrained(out).state_dict()
    changed = _changed(start, after)
    assert not any(k.startswith(("controlnets.", "vae.", "reference.image_encoder.")) for k in changed)
    assert any(k.startswith("unet.unet.") for k in changed) and any(k.startswith("reference.projection") for k in changed)
    assert any(k.startswith("unet.temporal_blocks.") for k in changed)
    stage_dir = out / "stage-2-finetune"
    lines = (stage_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    # resume: a finished stage is restored, not re-run; a longer one continues from its last checkpoint
    _train(cfg, out)
    assert len((stage_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert not _changed(after, DanceYourLatentsModel.from_pretrained(out).state_dict())
    longer = _cfg(data_root, f"model.init_from={out1}", "train.run=[finetune]",
                  "train.stages=[{name: stsa_only, lr: 1e-2, steps: 2}, {name: finetune, lr: 1e-3, steps: 3}]")
    rep = _train(longer, out)
    assert rep["stages"]["finetune"]["steps"] == 3
    assert [json.loads(x)["step"] for x in (stage_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_animate_with_trained_model_folder(stage1, data_root, tmp_path):
    from dancegen import api

    _, out1, _, _ = stage1
    clip = data_root / "00002"
    out = tmp_path / "anim" / "dance.mp4"
    rep = api.animate(clip / "images" / "0000.png", data_root / "00001" / "openpose_json", out, model=str(out1),
                      ref_mask=clip / "masks" / "0000.png", retarget=False, frames=4, steps=2, seed=0)
    assert rep["kind"] == "dyl" and rep["frames"] == 4 and rep["size"] == [32, 32]
    from dancegen.io.video import read_video

    video = read_video(out)
    assert video.frames.shape == (4, 32, 32, 3)
    assert load_recipe(rep["recipe"]).inference.steps == 2
    prev = read_video(rep["preview"]).frames
    assert prev.shape[0] == 4 and prev.shape[2] > 3 * 32  # reference | pose | output
    rep2 = api.animate(clip / "images" / "0000.png", data_root / "00001" / "openpose_json", tmp_path / "b.mp4",
                       model=str(out1), ref_mask=None, retarget=False, frames=4, steps=2, seed=0, preview=False)
    assert "preview" not in rep2


def test_animate_without_bundled_model_says_how_to_train_it(tmp_path, monkeypatch):
    from dancegen import api
    from dancegen.core import model_folder

    monkeypatch.setattr(model_folder, "BUNDLED_ROOT", tmp_path / "models")  # a trimmed install without it
    _png(tmp_path / "ref.png")  # inputs are read first (a bad one fails before any model), then the model is looked for
    _poses(tmp_path / "poses")
    with pytest.raises(MissingWeightsError) as e:
        api.animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / "out.mp4")
    msg = str(e.value)
    assert "dyl-tiny" in msg and "dancegen train --recipe recipes/dance_your_latents/tiny_synth_disco.yaml" in msg
    assert "recipes/dance_your_latents/tiny_synth.yaml" in msg
    assert "\n" not in msg
    with pytest.raises(InputError, match="not a SD-1.5|missing unet"):
        api.animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / "out.mp4", model=str(tmp_path))


def test_animate_full_size_sd_folder_builds(tmp_path):
    """A full-size sd-image-variations folder (configs only) assembles into the full pipeline on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig

    from dancegen import api
    from dancegen.core.schedulers import ddim_scheduler_sd15
    from dancegen.core.unet3d import SD15_UNET_CONFIG

    root = tmp_path / "sd-image-variations"
    with torch.device("meta"):
        UNet2DConditionModel(**SD15_UNET_CONFIG).save_config(root / "unet")
        AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                      up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2,
                      sample_size=256).save_config(root / "vae")
    ddim_scheduler_sd15().save_pretrained(root / "scheduler")
    CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                     patch_size=14, image_size=224, projection_dim=768).save_pretrained(root / "image_encoder")
    rep = api.animate("ref.png", "poses", tmp_path / "o.mp4", model=str(root), dry_run=True)
    n = rep["parameters"]
    assert rep["kind"] == "sd" and rep["dry_run"] and rep["size"] == [256, 256]
    assert n["unet"] == 859_520_964  # SD-1.5 UNet
    assert n["controlnet_pose"] > 3.6e8 and n["controlnet_background"] > 3.6e8 and n["projection"] == 1024 * 768
    assert 1e8 < n["temporal"] < 1.2e8  # 16 STSA pairs
    sa = api.animate("ref.png", "poses", tmp_path / "o.mp4", model=str(root), dry_run=True,
                     overrides=["model.variant=vd"])
    assert sa["parameters"]["temporal"] == 0
    # with weights required (no dry run) the missing weight files are a clear error (the inputs exist)
    _png(tmp_path / "ref.png")
    _poses(tmp_path / "poses")
    with pytest.raises((MissingWeightsError, OSError)):
        api.animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / "o.mp4", model=str(root))


def test_cli_verbs(data_root, tmp_path):
    from typer.testing import CliRunner

    from dancegen.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["animate", "--help"])
    assert res.exit_code == 0 and "dancegen animate --ref photo.png --poses" in res.output
    res = runner.invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "tiny_synth.yaml" in res.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dance-your-latents\nmodel: {base: tiny, subspace_sise: [2, 2, 2]}\n")
    res = runner.invoke(app, ["train", "--recipe", str(recipe)])
    assert res.exit_code == 2 and "subspace_sise" in res.output
    recipe.write_text("method: no-such-method\n")
    res = runner.invoke(app, ["train", "--recipe", str(recipe)])
    assert res.exit_code == 2 and "unknown method" in res.output
    out = tmp_path / "cli_run"
    recipe.write_text("method: dance_your_latents\n")
    sets = sum((["--set", s] for s in TINY + [f"data.root={data_root}", "data.split=null", "model.variant=vd",
                                               "train.stages=[{name: finetune, lr: 1e-3, steps: 1}]"]), [])
    res = runner.invoke(app, ["train", "--recipe", str(recipe), "-o", str(out), *sets])
    assert res.exit_code == 0, res.output
    assert (out / "model" / "unet").is_dir() and (out / "stage-1-finetune" / "metrics.jsonl").is_file()


def test_v_prediction_with_zero_terminal_snr(data_root):
    """The recipe's prediction type reaches the scheduler (so DDIM sampling follows it) and the training target.

    Zero terminal SNR: alpha_bar(T) = 0 and DDIM starts at t = T. A model that returns the exact v target
    ``sqrt(a) eps - sqrt(1 - a) z0`` (eps recovered from the noisy latent it is given) has zero loss; one that returns
    the exact eps does not.
    """
    from dancegen.methods.dance_your_latents.data import dataset_from_config
    from dancegen.methods.dance_your_latents.train import _encode, make_loss_fn

    cfg = _cfg(data_root, "model.prediction_type=v_prediction", "model.zero_terminal_snr=true",
               "model.variant=disco", "model.shared_noise={train: false, infer: false}")
    model = build_model(cfg)
    sched = model.scheduler
    assert sched.config.prediction_type == "v_prediction"
    assert float(sched.alphas_cumprod[-1]) == 0.0 and float(sched.alphas_cumprod[0]) > 0.99
    sched.set_timesteps(10)
    assert int(sched.timesteps[0]) == 999
    plain = build_model(_cfg(data_root)).scheduler  # the default keeps SD-1.5's eps schedule
    assert plain.config.prediction_type == "epsilon" and float(plain.alphas_cumprod[-1]) > 0.004

    batch = dataset_from_config(cfg, latent_hw=(8, 8))[0]
    batch = {k: v[None] if torch.is_tensor(v) else v for k, v in batch.items()}
    frames = batch["frames"]
    b, _, f = frames.shape[:3]
    z0 = _encode(model.vae, frames.permute(0, 2, 1, 3, 4).reshape(b * f, 3, *frames.shape[3:]))
    z0 = z0.reshape(b, f, *z0.shape[1:]).permute(0, 2, 1, 3, 4)
    alphas = sched.alphas_cumprod

    def exact(return_v):
        def predict_noise(zt, t, *args):
            a = alphas[t].float().view(b, 1, f, 1, 1)
            eps = (zt - a.sqrt() * z0) / (1 - a).sqrt()
            return a.sqrt() * eps - (1 - a).sqrt() * z0 if return_v else eps
        return predict_noise

    loss_fn = make_loss_fn(model, cfg)
    model.reference.forward = lambda ref, drop_prob=0.0: torch.zeros(b, 1, 8)
    model.predict_noise = exact(True)
    assert float(loss_fn(model, batch)) < 1e-8
    model.predict_noise = exact(False)
    assert float(loss_fn(model, batch)) > 0.05


def _png(path):
    """A tiny valid image: a reference is checked from its header before any model is looked for."""
    import numpy as np

    from dancegen.io.video import write_image

    write_image(path, np.zeros((8, 8, 3), np.uint8))
    return path


def _poses(folder):
    """A valid two-frame OpenPose folder."""
    import numpy as np

    from dancegen.pose.openpose_json import write_openpose_folder
    from dancegen.pose.sequence import PoseSequence

    kp = np.zeros((2, 18, 3), np.float32)
    kp[..., 0], kp[..., 1], kp[..., 2] = 4.0, 4.0, 0.9
    write_openpose_folder(PoseSequence(kp, "coco18", width=8, height=8, fps=8.0), folder)
    return folder


def test_vae_stage_trains_only_the_autoencoder_and_calibrates_its_scale(data_root, tmp_path):
    """The disco recipe's first stage (`vae`, core.latents' loss): only `vae.*` changes, and the saved scaling factor
    gives the training clips' latents unit std."""
    from dancegen.core.latents import encode_images
    from dancegen.methods.dance_your_latents.data import dataset_from_config

    cfg = _cfg(data_root, "model.variant=disco", "train.stages=[{name: vae, lr: 1e-3, steps: 2}]")
    torch.manual_seed(cfg.seed)
    before = build_model(cfg).state_dict()
    rep = _train(cfg, tmp_path / "run")
    model = DanceYourLatentsModel.from_pretrained(rep["stages"]["vae"]["model"])
    changed = _changed(before, model.state_dict())
    assert changed and all(k.startswith("vae.") for k in changed)
    ds = dataset_from_config(cfg, latent_hw=(16, 16))
    frames = torch.cat([ds[i]["frames"].permute(1, 0, 2, 3) for i in range(len(ds))])
    with torch.no_grad():
        z = encode_images(model.vae, frames)
    assert abs(float(z.std()) - 1.0) < 1e-3
