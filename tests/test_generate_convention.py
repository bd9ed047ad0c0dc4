"""The generating-verb convention: --method, else the method recorded in --model, else the verb's default; a method
refuses options it does not use; requests are checked before any model loads."""

from __future__ import annotations

import numpy as np
import pytest

from dancegen.errors import InputError
from dancegen.method_spec import MethodSpec
from dancegen.registry import choose_method
from dancegen.requests import AnimateRequest, Music2DanceRequest, Text2CharacterRequest

CALLS = []


def fake_text2character(request, progress=None):
    CALLS.append(request)
    return {"frames": 0}


@pytest.fixture
def fake_methods(monkeypatch):
    """Two stand-ins for the text methods to come (registered like plugins)."""
    import dancegen.methods as methods

    fake = {
        "latentman": MethodSpec("latentman", "fake", "x", "a:b", "a:b",
                                verbs={"text2character": "test_generate_convention:fake_text2character"}),
        "dancing-avatar": MethodSpec("dancing-avatar", "fake", "x", "a:b", "a:b",
                                     verbs={"text2character": "test_generate_convention:fake_text2character"},
                                     accepts={"text2character": ("prompt", "poses", "out")}),
    }
    monkeypatch.setattr(methods, "METHODS", {**methods.METHODS, **fake})
    return fake


def test_defaults_per_verb(fake_methods):
    assert choose_method("animate").id == "dance-your-latents"
    assert choose_method("music2dance").id == "dance-any-beat"
    req = Text2CharacterRequest.build(prompt="a knight", out="o.mp4")
    assert choose_method("text2character", request=req).id == "latentman"
    with_poses = Text2CharacterRequest.build(prompt="a knight", poses=[1, 2], out="o.mp4")
    assert choose_method("text2character", request=with_poses).id == "dancing-avatar"


def test_the_built_in_text2character_defaults(monkeypatch):
    assert choose_method("text2character").id == "latentman"
    with_poses = Text2CharacterRequest.build(prompt="a knight", poses=[1, 2], out="o.mp4")
    assert choose_method("text2character", request=with_poses).id == "dancing-avatar"
    assert choose_method("text2character", model="dancing-avatar-tiny").id == "dancing-avatar"  # a bundled name
    import dancegen.methods as methods  # a default method that is not registered is one line

    monkeypatch.setattr(methods, "METHODS", {k: v for k, v in methods.METHODS.items() if k != "dancing-avatar"})
    with pytest.raises(InputError, match="pass --method"):
        choose_method("text2character", request=with_poses)


def test_method_flag_wins_and_must_implement_the_verb(fake_methods):
    assert choose_method("text2character", method="Dancing_Avatar").id == "dancing-avatar"
    with pytest.raises(InputError, match="dance-any-beat .*--method.* does not implement animate; methods that do: "
                                         "dance-your-latents"):
        choose_method("animate", method="dance-any-beat")


def test_model_folder_names_its_method(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "dance_any_beat.yaml").write_text("method: dance-any-beat\nseed: 0\n")
    assert choose_method("music2dance", model=run).id == "dance-any-beat"
    with pytest.raises(InputError, match="the model folder .* does not implement animate"):
        choose_method("animate", model=run)
    assert choose_method("music2dance", model="dab-tiny").id == "dance-any-beat"  # a bundled name
    assert choose_method("animate", model="dyl-tiny").id == "dance-your-latents"
    base = tmp_path / "sd15"  # base weights record no method: the verb's default
    (base / "unet").mkdir(parents=True)
    assert choose_method("animate", model=base).id == "dance-your-latents"


def test_unused_options_are_refused_not_ignored(fake_methods, tmp_path):
    song, ref = tmp_path / "s.wav", _png(tmp_path / "r.png")
    song.write_bytes(b"")
    req = Music2DanceRequest.build(song=song, ref=ref, out=tmp_path / "o.mp4", vae_tiling=True, lora=[str(ref)])
    with pytest.raises(InputError, match="dance-any-beat does not use --lora, --vae-tiling for music2dance"):
        choose_method("music2dance", request=req)
    ok = Music2DanceRequest.build(song=song, ref=ref, out=tmp_path / "o.mp4", dtype="bf16", seed=3)
    assert choose_method("music2dance", request=ok).id == "dance-any-beat"
    t2c = Text2CharacterRequest.build(prompt="x", poses=[1], clothes="red", out="o.mp4")
    with pytest.raises(InputError, match="dancing-avatar does not use --clothes"):
        choose_method("text2character", request=t2c)


def test_generate_dispatches_the_request(fake_methods):
    from dancegen import api

    CALLS.clear()
    req = Text2CharacterRequest.build(prompt="a knight", motion="jumps", out="o.mp4", seed=1)
    rep = api.generate("text2character", req)
    assert rep == {"method": "latentman", "frames": 0} and CALLS == [req]


def _png(path):
    """A tiny valid image: reference images are checked from their header before anything loads."""
    from dancegen.io.video import write_image

    write_image(path, np.zeros((8, 8, 3), np.uint8))
    return path


def test_requests_are_checked_before_any_model_loads(tmp_path):
    with pytest.raises(InputError, match="reference image not found"):
        AnimateRequest.build(ref=tmp_path / "nope.png", poses=tmp_path, out=tmp_path / "o.mp4")
    with pytest.raises(InputError, match="--steps must be >= 1"):
        AnimateRequest.build(ref=None, poses=None, out="o.mp4", steps=0)
    with pytest.raises(InputError, match="LoRA file not found"):
        AnimateRequest.build(out="o.mp4", lora=[str(tmp_path / "x.safetensors:0.5")])
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    req = AnimateRequest.build(out="o.mp4", lora=[f"{lora}:0.5", str(lora)])
    assert req.lora_files() == [(lora, 0.5), (lora, 1.0)]
    assert req.given == frozenset({"out", "lora"})
    with pytest.raises(InputError, match="writes an mp4"):
        Music2DanceRequest.build(song=lora, ref=_png(tmp_path / "r.png"), out=tmp_path / "o.gif")
    with pytest.raises(InputError, match="has no option"):
        AnimateRequest.build(out="o.mp4", sampler="ddim")


def test_cli_refuses_an_option_the_method_does_not_use(tmp_path):
    from typer.testing import CliRunner

    from dancegen.cli import app

    song, ref = tmp_path / "s.wav", _png(tmp_path / "r.png")
    song.write_bytes(b"")
    res = CliRunner().invoke(app, ["music2dance", str(song), "--ref", str(ref), "-o", str(tmp_path / "o.mp4"),
                                   "--vae-tiling"])
    assert res.exit_code == 2 and "does not use --vae-tiling" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.mp4").exists()


def test_animate_loads_a_lora_file_onto_the_bundled_model(tmp_path):
    """--lora reaches the model: a LoRA saved from the bundled UNet changes the video; weight 0 gives it back."""
    import numpy as np
    from tests_helpers import dance_sequence

    from dancegen import api
    from dancegen.core.lora import add_lora, save_lora
    from dancegen.io.video import read_video, write_image
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, bundled_model_path
    from dancegen.pose.openpose_json import write_openpose_folder

    model = DanceYourLatentsModel.from_pretrained(bundled_model_path())
    add_lora(model.unet, "style", rank=4, targets="cross_attn", init="random")  # non-zero: it must change things
    lora = save_lora(tmp_path / "style.safetensors", model.unet, "style")
    ref = np.full((64, 64, 3), 100, np.uint8)
    ref[12:56, 26:38] = (200, 50, 50)
    write_image(tmp_path / "ref.png", ref)
    write_openpose_folder(dance_sequence(2).resized(64, 64), tmp_path / "poses")
    common = dict(retarget=False, ref_mask=None, frames=2, steps=2, preview=False, seed=0)
    videos = {}
    for name, loras in (("base", None), ("lora", [str(lora)]), ("zero", [f"{lora}:0"])):
        rep = api.animate(tmp_path / "ref.png", tmp_path / "poses", tmp_path / f"{name}.mp4", lora=loras, **common)
        videos[name] = read_video(tmp_path / f"{name}.mp4").frames.astype(int)
    assert rep["lora"] == [f"{lora}:0"]
    assert np.abs(videos["lora"] - videos["base"]).mean() > 0.5
    assert np.array_equal(videos["zero"], videos["base"])
