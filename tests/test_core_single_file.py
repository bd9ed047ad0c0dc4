"""Single-file SD-1.5 checkpoints (LDM layout): export, offline load, resolver dispatch, refusals. Tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dancegen.core import single_file as sf
from dancegen.core.tiny import write_tiny_sd15
from dancegen.core.weights import SD15Components, load_sd15_components, resolve_model
from dancegen.errors import InputError, MissingWeightsError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SD-1.5 folder, its components, and their single-file export."""
    root = tmp_path_factory.mktemp("single-file")
    folder = write_tiny_sd15(root / "sd", seed=0)
    comps = load_sd15_components(folder)
    path = sf.save_single_file_sd15(comps, root / "tiny-sd15.safetensors")
    return folder, comps, path


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _outputs(unet, vae, text_encoder, tokenizer):
    """UNet, VAE and text-encoder outputs on fixed, seeded inputs."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    ids = tokenizer(["a dancer in a red dress spins", ""], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        text = text_encoder(ids)
        out = {"text": text.last_hidden_state, "pooled": text.pooler_output,
               "unet": unet(latents, torch.tensor([10, 500]), text.last_hidden_state).sample,
               "vae_mean": vae.encode(image).latent_dist.mean}
        out["vae_decode"] = vae.decode(out["vae_mean"]).sample
    return out


def test_export_has_the_ldm_layout(tiny):
    folder, comps, path = tiny
    tensors, meta = _read(path)
    assert {"model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
            "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
            "first_stage_model.encoder.conv_in.weight", "first_stage_model.decoder.up.1.upsample.conv.weight",
            "first_stage_model.quant_conv.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight"} <= set(tensors)
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."))
               for k in tensors)
    # every parameter once, plus the position_ids buffer the original release carries
    n_params = sum(len(m.state_dict()) for m in (comps.unet, comps.vae, comps.text_encoder))
    assert len(tensors) == n_params + 1
    assert torch.equal(tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"],
                       torch.arange(77)[None])
    # LDM's VAE attention is 1x1 convolutions; the values are diffusers' linear weights
    q = tensors["first_stage_model.encoder.mid.attn_1.q.weight"]
    assert q.shape == (64, 64, 1, 1)
    assert torch.equal(q[:, :, 0, 0], comps.vae.state_dict()["encoder.mid_block.attentions.0.to_q.weight"])
    # resnet renames: diffusers down_blocks.1.resnets.0 is LDM input_blocks.3 (conv_in, level 0, its downsampler)
    assert torch.equal(tensors["model.diffusion_model.input_blocks.3.0.skip_connection.weight"],
                       comps.unet.state_dict()["down_blocks.1.resnets.0.conv_shortcut.weight"])
    assert json.loads(meta["dancegen.unet_config"])["block_out_channels"] == [32, 64]
    assert json.loads(meta["dancegen.text_encoder_config"])["num_attention_heads"] == 4


def test_round_trip_reproduces_the_folder(tiny):
    folder, comps, path = tiny
    parts = sf.load_single_file_sd15(path, tokenizer=folder / "tokenizer")
    for name in ("unet", "vae", "text_encoder"):
        a, b = comps.models()[name].state_dict(), getattr(parts, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # a copy: bit-exact
        assert not any(p.requires_grad for p in getattr(parts, name).parameters()) and not getattr(parts, name).training
    ref = _outputs(comps.unet, comps.vae, comps.text_encoder, comps.tokenizer)
    got = _outputs(parts.unet, parts.vae, parts.text_encoder, parts.tokenizer)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-6, rtol=0, msg=k)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(parts.scheduler.config) == public(comps.scheduler.config)
    assert parts.unet.config.sample_size == 16 and parts.vae.config.sample_size == 32  # from the header


def test_scheduler_travels_in_the_header(tiny, tmp_path):
    from dancegen.core.schedulers import ddim_scheduler_sd15

    folder, comps, _ = tiny
    vpred = SD15Components(unet=comps.unet, vae=comps.vae, text_encoder=comps.text_encoder,
                           scheduler=ddim_scheduler_sd15(prediction_type="v_prediction", rescale_betas_zero_snr=True))
    path = sf.save_single_file_sd15(vpred, tmp_path / "vpred.safetensors")
    sched = sf.load_single_file_sd15(path, load_text_encoder=False).scheduler
    assert sched.config.prediction_type == "v_prediction" and sched.config.rescale_betas_zero_snr
    assert torch.allclose(sched.alphas_cumprod, vpred.scheduler.alphas_cumprod, atol=0, rtol=0)
    # an explicit scheduler (object or folder) wins over the header
    assert sf.load_single_file_sd15(path, load_text_encoder=False, scheduler=folder / "scheduler").scheduler.config.prediction_type == "epsilon"


def test_resolver_and_loader_dispatch(tiny, tmp_path):
    folder, comps, path = tiny
    for kind in ("sd15", "any"):
        r = resolve_model(path, kind=kind)
        assert (r.source, r.location, r.kind) == ("single-file", str(path.resolve()), kind) and r.is_local
    loaded = load_sd15_components(resolve_model(path, kind="sd15"), tokenizer=folder / "tokenizer")
    assert isinstance(loaded, SD15Components) and loaded.path == str(path.resolve())
    assert loaded.vae_scale_factor == 2 and set(loaded.models()) == {"text_encoder", "unet", "vae"}
    direct = load_sd15_components(path, load_text_encoder=False)  # a plain path dispatches too; no tokenizer needed
    assert direct.text_encoder is None and direct.tokenizer is None
    assert torch.equal(direct.unet.conv_in.weight, comps.unet.conv_in.weight)
    with pytest.raises(InputError, match="no image encoder"):
        resolve_model(path, kind="sd-image-variations")
    # a safetensors file that is not an SD checkpoint: refused for "sd15", a plain file for "any"
    lora = tmp_path / "style-lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(lora))
    with pytest.raises(InputError, match="LoRA"):
        resolve_model(lora, kind="sd15")
    assert resolve_model(lora, kind="any").source == "local"
    with pytest.raises(InputError, match="got a file"):
        resolve_model(path, kind="unet")


def test_shapes_alone_give_the_config_and_fp16_loads_as_fp32(tiny, tmp_path):
    """A community file has no dancegen header: sizes come from the shapes, fp16 storage loads as fp32."""
    folder, comps, path = tiny
    tensors, _ = _read(path)
    bare = tmp_path / "community-fp16.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(bare))
    parts = sf.load_single_file_sd15(bare, load_text_encoder=False)
    for name, keys in (("unet", ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
                                 "cross_attention_dim", "in_channels", "out_channels", "attention_head_dim",
                                 "norm_num_groups", "use_linear_projection", "transformer_layers_per_block")),
                       ("vae", ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                                "scaling_factor", "in_channels", "out_channels"))):
        model, ref = getattr(parts, name), comps.models()[name]
        assert {k: model.config[k] for k in keys} == {k: ref.config[k] for k in keys}, name
        a, b = ref.state_dict(), model.state_dict()
        assert all(b[k].dtype == torch.float32 and torch.equal(b[k], a[k].half().float()) for k in a), name
    assert parts.unet.config.sample_size == 64  # what shapes cannot tell keeps SD-1.5's value
    # the tiny text tower is 32 wide: its head count is not in the shapes, and guessing would change its outputs
    with pytest.raises(InputError, match="head count"):
        sf.load_single_file_sd15(bare, tokenizer=folder / "tokenizer")


def test_full_size_sd15_names_match_the_ldm_release_and_diffusers():
    """At SD-1.5's size (meta tensors): our export names are the release's, and diffusers' converter maps them back
    onto every parameter; configs inferred from those shapes equal the published ones (core.sd_configs)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    from dancegen.core.sd_configs import CLIP_VIT_L14_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        te = CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L14_TEXT_CONFIG))
    ldm_unet = {sf.UNET_PREFIX + sf.unet_key_to_ldm(k, unet.config): v for k, v in unet.state_dict().items()}
    ldm_vae = {}
    for k, v in vae.state_dict().items():
        name, as_conv = sf.vae_key_to_ldm(k, 4)
        ldm_vae[sf.VAE_PREFIX + name] = v[:, :, None, None] if as_conv else v
    assert len(ldm_unet) == len(unet.state_dict()) and len(ldm_vae) == len(vae.state_dict())  # names are unique
    u = "model.diffusion_model."
    assert {u + "output_blocks.11.0.skip_connection.weight",  # diffusers' marker of an SD-1.x checkpoint
            u + "input_blocks.3.0.op.weight", u + "input_blocks.11.0.out_layers.3.weight",
            u + "output_blocks.2.1.conv.weight",  # level without attention: the upsampler is the block's 2nd module
            u + "output_blocks.5.2.conv.weight", u + "output_blocks.8.2.conv.weight",
            u + "middle_block.2.emb_layers.1.weight", u + "input_blocks.1.1.proj_in.weight"} <= set(ldm_unet)
    assert not any(".op." in k for k in ldm_unet if k.startswith(u + "input_blocks.12."))
    assert {"first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.decoder.up.0.block.2.conv2.weight",
            "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
            "first_stage_model.decoder.mid.attn_1.proj_out.weight"} <= set(ldm_vae)
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in ldm_vae
    # diffusers' own LDM reader puts every tensor back where it came from
    back = convert_ldm_unet_checkpoint(ldm_unet, dict(unet.config))
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    back = convert_ldm_vae_checkpoint(ldm_vae, dict(vae.config))
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    # and the configs read from the shapes are SD-1.5's published ones
    shape = lambda d: {k: tuple(v.shape) for k, v in d.items()}  # noqa: E731
    with torch.device("meta"):  # the model fills the class defaults the inferred config leaves out
        ucfg = UNet2DConditionModel.from_config(sf.unet_config_from_shapes(shape(ldm_unet))).config
        vcfg = AutoencoderKL.from_config(sf.vae_config_from_shapes(shape(ldm_vae))).config
    assert {k: ucfg[k] for k in SD15_UNET_CONFIG} == {k: unet.config[k] for k in SD15_UNET_CONFIG}
    assert {k: vcfg[k] for k in SD15_VAE_CONFIG} == {k: vae.config[k] for k in SD15_VAE_CONFIG}
    tcfg = sf.text_config_from_shapes({f"{sf.TEXT_PREFIX}text_model.{k}": tuple(v.shape)
                                       for k, v in te.state_dict().items()})
    token_ids = ("bos_token_id", "eos_token_id", "pad_token_id")  # from the tokenizer at load time
    assert {k: tcfg[k] for k in CLIP_VIT_L14_TEXT_CONFIG if k not in token_ids} == \
        {k: v for k, v in CLIP_VIT_L14_TEXT_CONFIG.items() if k not in token_ids}


def test_tokenizer_comes_from_the_cache_or_a_one_line_error(tiny, tmp_path, monkeypatch):
    folder, comps, path = tiny
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError) as e:
        sf.load_single_file_sd15(path)
    msg = str(e.value)
    assert "\n" not in msg and "no tokenizer" in msg and str(tmp_path / "empty-cache") in msg
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'tokenizer/*'" in msg
    # the same snapshot layout hf download writes: refs/main -> snapshots/<commit>/tokenizer/
    repo = tmp_path / "cache" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(folder / "tokenizer", repo / "snapshots" / ("0" * 40) / "tokenizer")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    parts = sf.load_single_file_sd15(path)
    prompt = "a knight in silver armour dances"
    assert parts.tokenizer(prompt).input_ids == comps.tokenizer(prompt).input_ids
    # a tokenizer whose ids run past the text encoder's embedding table is refused up front
    class Huge:
        bos_token_id, eos_token_id, pad_token_id, model_max_length = 0, 1, 1, 77

        def __len__(self):
            return comps.text_encoder.config.vocab_size + 1

    with pytest.raises(InputError, match="tokens but the text encoder embeds"):
        sf.load_single_file_sd15(path, tokenizer=Huge())


class _NotATensor:
    """Any class: unpickling it in full would import and run code named by the file."""


def test_pickles_load_only_when_they_hold_plain_tensors(tiny, tmp_path):
    folder, comps, path = tiny
    tensors, _ = _read(path)
    ckpt = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tensors, "global_step": 3, "epoch": 1}, ckpt)
    assert resolve_model(ckpt, kind="sd15").source == "single-file"
    parts = sf.load_single_file_sd15(ckpt, load_text_encoder=False)  # (a pickle has no header: shapes only)
    assert all(torch.equal(v, comps.unet.state_dict()[k]) for k, v in parts.unet.state_dict().items())
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tensors, "callback": _NotATensor()}, evil)
    with pytest.raises(InputError, match="convert it to .safetensors") as e:
        sf.load_single_file_sd15(evil, tokenizer=folder / "tokenizer")
    assert "\n" not in str(e.value) and "run code" in str(e.value)


@pytest.mark.parametrize(("tensors", "match"), [
    ({"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.ones(2),
      "model.diffusion_model.out.2.weight": torch.ones(2)}, "SDXL"),
    ({"model.diffusion_model.out.2.weight": torch.ones(2), "cond_stage_model.model.ln_final.weight": torch.ones(2),
      "first_stage_model.quant_conv.weight": torch.ones(2)}, "SD-2"),
    ({"model.diffusion_model.out.2.weight": torch.ones(2)}, "no VAE"),
    ({"down_blocks.0.resnets.0.conv1.weight": torch.ones(2)}, "diffusers-format"),
    ({"model.diffusion_model.out.2.weight": torch.ones(2), "first_stage_model.quant_conv.weight": torch.ones(2),
      "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(2)}, "do not form an SD UNet"),
])
def test_foreign_files_are_refused_by_name(tmp_path, tensors, match):
    p = tmp_path / "x.safetensors"
    save_file(tensors, str(p))
    with pytest.raises(InputError, match=match):
        sf.load_single_file_sd15(p, load_text_encoder=False)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors header")
    with pytest.raises(InputError, match="not a readable .safetensors"):
        resolve_model(junk, kind="sd15")
    with pytest.raises(MissingWeightsError, match="not found"):
        sf.load_single_file_sd15(tmp_path / "absent.safetensors")


def test_export_refusals_and_atomic_write(tiny, tmp_path, monkeypatch):
    folder, comps, path = tiny
    with pytest.raises(InputError, match=r"\.safetensors"):
        sf.save_single_file_sd15(comps, tmp_path / "model.ckpt")
    no_text = SD15Components(unet=comps.unet, vae=comps.vae, scheduler=comps.scheduler)
    with pytest.raises(InputError, match="text encoder"):
        sf.save_single_file_sd15(no_text, tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="no SD-1.x LDM counterpart"):
        sf.unet_key_to_ldm("down_blocks.0.motion_modules.0.proj_in.weight", comps.unet.config)
    # a failed write leaves an existing file as it was and no partial file behind
    target = tmp_path / "keep.safetensors"
    target.write_bytes(b"previous export")

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        sf.save_single_file_sd15(comps, target)
    assert target.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]
