"""LatentMan (spec latentman.md §6 CPU tests): SLA copies exactly the matched latents, PWG's loss and gradient,
step windows, the recipe of the bundled models, and the whole verb on tiny SD-1.5-layout folders written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dancegen.errors import DanceGenError
from dancegen.methods.latentman.config import BUNDLED_OVERRIDES, load_recipe, window_steps
from dancegen.methods.latentman.pipeline import align_latents, attention_mode, pixel_loss

ROOT = Path(__file__).resolve().parents[1]


def _pairs():
    # frame 0 -> 1: (0,0)->(1,1), (0,1)->(2,2); frame 1 -> 2: (1,1)->(3,3)
    return [(np.array([0, 0]), np.array([0, 1]), np.array([1, 2]), np.array([1, 2])),
            (np.array([1]), np.array([1]), np.array([3]), np.array([3]))]


def test_sla_copies_exactly_the_matched_latents_in_frame_order():
    z = torch.randn(2, 4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    out = align_latents(z, _pairs())
    assert torch.equal(out[:, :, 0], z[:, :, 0])  # the anchor frame never changes
    assert torch.equal(out[:, :, 1, 1, 1], z[:, :, 0, 0, 0]) and torch.equal(out[:, :, 1, 2, 2], z[:, :, 0, 0, 1])
    # cascade: frame 2 copies frame 1's *aligned* latent, which came from frame 0
    assert torch.equal(out[:, :, 2, 3, 3], z[:, :, 0, 0, 0])
    changed = (out != z).any(dim=(0, 1))
    expect = torch.zeros(3, 5, 5, dtype=torch.bool)
    expect[1, 1, 1] = expect[1, 2, 2] = expect[2, 3, 3] = True
    assert torch.equal(changed, expect)  # nothing else is touched
    with pytest.raises(ValueError, match="correspondence sets"):
        align_latents(z, _pairs()[:1])


def test_pwg_loss_is_zero_for_aligned_frames_and_its_gradient_spares_the_anchor():
    img = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    aligned = img.clone()
    aligned[1, :, 1, 1], aligned[1, :, 2, 2], aligned[2, :, 3, 3] = img[0, :, 0, 0], img[0, :, 0, 1], img[0, :, 0, 0]
    aligned[2, :, 3, 3] = aligned[1, :, 1, 1]
    assert float(pixel_loss(aligned, _pairs())) == 0.0
    x = img.clone().requires_grad_(True)
    loss = pixel_loss(x, _pairs())
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(g).all() and float(g[0].abs().sum()) == 0.0  # the reference is detached
    assert float(g[1].abs().sum()) > 0
    step = pixel_loss(x.detach() - 0.1 * g, _pairs())
    assert float(step) < float(loss.detach())
    d = img[1, :, 1, 1] - img[0, :, 0, 0]
    assert float(pixel_loss(img, _pairs()[:1] + [tuple(np.zeros(0, int) for _ in range(4))], "sum")) == \
        pytest.approx(float((d ** 2).sum() + ((img[1, :, 2, 2] - img[0, :, 0, 1]) ** 2).sum()), rel=1e-5)


def test_windows_are_the_official_iteration_ranges():
    assert list(window_steps([0.0, 0.4], 100)) == list(range(40))
    assert list(window_steps([0.2, 0.7], 100)) == list(range(20, 70))
    assert list(window_steps([0.0, 0.4], 50)) == list(range(20))  # MasaCtrl base
    assert list(window_steps([0.4, 0.8], 50)) == list(range(20, 40))
    cfg = load_recipe(None, [])
    assert (cfg.sampler.steps, cfg.sampler.guidance_scale, cfg.sla.window, cfg.pwg.window, cfg.pwg.delta) == \
        (100, 9.0, [0.0, 0.4], [0.2, 0.7], 0.01)


def test_the_tiny_recipe_spells_out_the_bundled_overrides():
    tiny = load_recipe(ROOT / "recipes" / "latentman" / "tiny_synth.yaml", [])
    bundled = load_recipe(None, list(BUNDLED_OVERRIDES))
    for field in ("render", "sampler", "attention", "sla", "pwg", "eval", "correspondence"):
        assert getattr(tiny, field) == getattr(bundled, field), field


def test_bad_recipe_values_are_one_line_errors():
    with pytest.raises(DanceGenError, match="window"):
        load_recipe(None, ["sla.window=[0.5,0.2]"])
    with pytest.raises(DanceGenError, match="base.kind"):
        load_recipe(None, ["attention.kind=magic"])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from dancegen.core.tiny import write_tiny_controlnet, write_tiny_sd15

    root = tmp_path_factory.mktemp("lm")
    sd = write_tiny_sd15(root / "sd15", seed=0, image_size=32)
    cn = write_tiny_controlnet(root / "depth", sd / "unet", seed=1)
    return sd, cn


def test_attention_mode_installs_cross_frame_attention_and_restores_it(tiny_models):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from dancegen.core.controlnet import ControlNetSet

    sd, cn = tiny_models
    unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    nets = ControlNetSet({"depth": ControlNetModel.from_pretrained(cn)})
    before = {k: type(v).__name__ for k, v in unet.attn_processors.items()}
    with attention_mode(unet, nets, "t2v-zero") as holder:
        assert holder is not None
        procs = [p for k, p in unet.attn_processors.items() if k.endswith("attn1.processor")]
        assert procs and all(p.mode == "first" and p.detach_kv for p in procs)
        assert all(p.mode == "first" for k, p in nets["depth"].attn_processors.items()
                   if k.endswith("attn1.processor"))
    assert {k: type(v).__name__ for k, v in unet.attn_processors.items()} == before
    with attention_mode(unet, nets, "per-frame") as holder:
        assert holder is None


def test_text2character_runs_on_tiny_sd15_folders_and_sla_pwg_change_the_result(tiny_models, tmp_path):
    from dancegen import api
    from dancegen.io.video import read_video, read_video_metadata

    sd, cn = tiny_models
    common = dict(motion="a person jumps", model=str(sd), controlnet=[str(cn)], frames=3, steps=3, size=(32, 32),
                  preview=False, seed=0)
    sets = ["motion.source=procedural", "render.size=32", "pwg.res=32", "eval.h_mse_res=32", "sla.window=[0,0.67]",
            "pwg.window=[0.34,1.0]", "pwg.delta=5.0", "pwg.grad_mode=full"]
    rep = api.text2character("a dancer", tmp_path / "a.mp4", overrides=sets, **common)
    assert rep["method"] == "latentman" and rep["frames"] == 3 and np.isfinite(rep["h_mse"])
    video = read_video(tmp_path / "a.mp4").frames
    assert video.shape == (3, 32, 32, 3)
    assert read_video_metadata(tmp_path / "a.mp4")["method"] == "latentman"
    assert (tmp_path / "a.recipe.yaml").is_file() and (tmp_path / "a.depth.mp4").is_file()
    # the part-UV maps written beside the video let `evaluate -m h-mse` score the written file
    from dancegen.metrics.consistency import h_mse
    from dancegen.metrics.evaluate import evaluate

    scored = evaluate(["h-mse"], tmp_path / "a.mp4", iuv=tmp_path / "a.iuv.npz")
    iuv = np.load(tmp_path / "a.iuv.npz")["iuv"]
    assert rep["iuv"] == str(tmp_path / "a.iuv.npz") and iuv.shape == (3, 32, 32, 3) and (iuv[..., 0] > 0).any()
    assert scored["metrics"]["h-mse"]["value"] == pytest.approx(h_mse(video, iuv))  # evaluate reads that file
    again = api.text2character("a dancer", tmp_path / "b.mp4", overrides=sets, **common)
    assert again["h_mse"] == rep["h_mse"]  # same seed, same result
    off = api.text2character("a dancer", tmp_path / "c.mp4",
                             overrides=sets + ["sla.enabled=false", "pwg.enabled=false"], **common)
    assert off["h_mse"] != rep["h_mse"]


def test_missing_weights_and_bad_inputs_are_one_line_errors(tmp_path):
    from dancegen import api

    with pytest.raises(DanceGenError, match="nowhere"):
        api.text2character("a dancer", tmp_path / "a.mp4", model=str(tmp_path / "nowhere"))
    with pytest.raises(DanceGenError, match="motion file not found"):
        api.text2character("a dancer", tmp_path / "a.mp4", motion=str(tmp_path / "m.npy"))
    with pytest.raises(DanceGenError, match="video"):
        api.text2character("a dancer", tmp_path / "a.txt")
    with pytest.raises(DanceGenError, match="fps"):
        api.text2character("a dancer", tmp_path / "a.mp4", fps=0.0)
    assert not list(tmp_path.iterdir())  # nothing written
