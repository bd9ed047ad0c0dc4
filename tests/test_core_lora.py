"""dancegen.core.lora: peft LoRA on a tiny UNet, diffusers / kohya files, and agreement with diffusers' own loader."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dancegen.core.lora import (
    LORA_TARGETS,
    active_lora_adapters,
    add_lora,
    detect_lora_format,
    load_lora,
    lora_adapters,
    lora_parameters,
    lora_state_dict,
    resolve_lora_targets,
    save_lora,
    set_lora,
)
from dancegen.errors import InputError

UNET_KW = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D",
                                                                                        "CrossAttnUpBlock2D"),
               cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
# The tiny UNet has 4 transformer blocks (down 0, mid, up 1 x2), each with attn1 and attn2.
N_BLOCKS = 4


def _unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_KW)


@pytest.fixture(scope="module")
def base():
    return _unet()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 5, 32, generator=g)


def _run(unet, inputs):
    x, enc = inputs
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=enc).sample


def _text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, vocab_size=64, max_position_embeddings=16,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))


def _sd_pipeline(unet, text_encoder):
    """A tiny diffusers SD pipeline around our components, to run diffusers' own `load_lora_weights`."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=None, unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _header(path):
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


class Wrapper(nn.Module):
    """Like VideoUNet: the image UNet at `.unet`, plus a block whose names also look like cross-attention."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.temporal = nn.ModuleDict({"attn2": nn.ModuleDict({"to_q": nn.Linear(4, 4)})})

    def forward(self, x, t, encoder_hidden_states):
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states)


# ------------------------------------------------------------------------------------------------ adapters
def test_new_adapter_is_exactly_the_base_model(base, inputs):
    unet = copy.deepcopy(base)
    names = add_lora(unet, "clothes")
    assert torch.equal(_run(unet, inputs), _run(base, inputs))
    # a different init (both factors random) does change the output: the comparison above can fail
    torch.manual_seed(1)
    add_lora(unet, "rand", init="random")
    assert not torch.allclose(_run(unet, inputs), _run(base, inputs), atol=1e-4)
    assert lora_adapters(unet) == ["clothes", "rand"] and active_lora_adapters(unet) == ["rand"]
    assert len(names) == 4 * N_BLOCKS


@pytest.mark.parametrize("targets, attn", [("cross_attn", {"attn2"}), ("self_attn", {"attn1"}),
                                           ("attn", {"attn1", "attn2"})], ids=["cross_attn", "self_attn", "attn"])
def test_presets_adapt_only_their_projections(base, targets, attn):
    unet = copy.deepcopy(base)
    names = add_lora(unet, "x", targets=targets)
    adapted = [n for n, m in unet.named_modules() if hasattr(m, "lora_A")]
    assert sorted(adapted) == sorted(names)
    assert len(names) == 4 * N_BLOCKS * len(attn)
    for n in names:
        parts = n.split(".")
        block = parts[-3] if parts[-1] == "0" else parts[-2]
        proj = ".".join(parts[-2:]) if parts[-1] == "0" else parts[-1]
        assert block in attn and proj in {"to_q", "to_k", "to_v", "to_out.0"}, n
    assert LORA_TARGETS["attn"] == LORA_TARGETS["self_attn"] + LORA_TARGETS["cross_attn"]


def test_patterns_regex_and_errors(base):
    unet = copy.deepcopy(base)
    names = resolve_lora_targets(unet, [r"up_blocks\..*attn2\.to_(k|v)", "ff.net.2"])
    assert len(names) == 2 * 2 + N_BLOCKS
    assert all(("up_blocks" in n and n.endswith(("attn2.to_k", "attn2.to_v"))) or n.endswith("ff.net.2")
               for n in names)
    with pytest.raises(InputError, match="attn3.to_q"):
        add_lora(unet, "x", targets=["attn2.to_q", "attn3.to_q"])
    assert lora_adapters(unet) == []  # nothing injected
    with pytest.raises(ValueError, match="dots"):
        add_lora(unet, "a.b")


def test_controlnet_gets_cross_attention_lora(base):
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(base)
    names = add_lora(controlnet, "c")
    assert len(names) == 4 * 2  # down block 0 + mid block
    assert all(".attn2." in n for n in names)


def test_training_changes_only_lora_weights(base, inputs):
    unet = copy.deepcopy(base)
    add_lora(unet, "clothes", rank=4)
    before = base.state_dict()  # the same weights as `unet` before add_lora
    params = lora_parameters(unet, "clothes")
    assert {id(p) for p in unet.parameters() if p.requires_grad} == {id(p) for p in params}
    assert len(params) == 2 * 4 * N_BLOCKS
    opt = torch.optim.AdamW(params, lr=1e-2)
    x, enc = inputs
    target = torch.zeros_like(x)
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(unet(x, torch.tensor([10, 500]), encoder_hidden_states=enc).sample,
                                            target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(_run(unet, inputs), _run(base, inputs), atol=1e-4)
    after = {k: v for k, v in unet.state_dict().items() if "lora_" not in k}
    # peft renames an adapted layer's weight to `<layer>.base_layer.weight`
    assert {k.replace(".base_layer", "") for k in after} == set(before)
    assert all(torch.equal(after[k], before[k.replace(".base_layer", "")]) for k in after)
    assert all(p.grad is None for n, p in unet.named_parameters() if "lora_" not in n)


# ------------------------------------------------------------------------------------------------ combining
def test_two_adapters_weights_and_disable(base, inputs):
    unet = copy.deepcopy(base)
    torch.manual_seed(1)
    add_lora(unet, "clothes", init="random")
    torch.manual_seed(2)
    add_lora(unet, "face", init="random")
    grads = [p.requires_grad for p in unet.parameters()]
    set_lora(unet, "clothes")
    clothes = _run(unet, inputs)
    set_lora(unet, ["clothes", "face"], [1.0, 0.0])
    assert torch.equal(_run(unet, inputs), clothes)
    set_lora(unet, ["clothes", "face"], [1.0, 1.0])
    both = _run(unet, inputs)
    assert not torch.allclose(both, clothes, atol=1e-4)
    set_lora(unet, None)
    assert torch.equal(_run(unet, inputs), _run(base, inputs))
    assert active_lora_adapters(unet) == []
    set_lora(unet, ["face", "clothes"], 1.0)  # re-enabling restores the sum; the order only moves float rounding
    torch.testing.assert_close(_run(unet, inputs), both, rtol=0, atol=1e-5)
    assert [p.requires_grad for p in unet.parameters()] == grads  # set_lora never changes trainability
    with pytest.raises(InputError, match="'hair'"):
        set_lora(unet, ["clothes", "hair"])
    with pytest.raises(ValueError, match="weights"):
        set_lora(unet, ["clothes", "face"], [1.0])


# ------------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def trained(base):
    """A UNet with adapter "a": random A and B (so it changes the output), rank 4, alpha 4."""
    unet = copy.deepcopy(base)
    torch.manual_seed(3)
    add_lora(unet, "a", init="random")
    return unet


def test_save_load_roundtrip_and_diffusers_loader(base, trained, inputs, tmp_path):
    path = save_lora(tmp_path / "clothes.safetensors", trained, "a")
    assert detect_lora_format(path) == "diffusers"
    header, tensors = _header(path)
    assert len(tensors) == 2 * 4 * N_BLOCKS
    assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors)
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight" in tensors
    meta = json.loads(header["lora_adapter_metadata"])
    assert header["format"] == "pt" and meta["unet.r"] == 4 and meta["unet.lora_alpha"] == 4
    assert not list(tmp_path.glob(".*part*"))  # the temporary file was renamed

    want = _run(trained, inputs)
    fresh = copy.deepcopy(base)
    loaded = load_lora(fresh, path, "clothes")
    assert loaded.format == "diffusers" and len(loaded.modules) == 4 * N_BLOCKS and not loaded.text_encoder_modules
    torch.testing.assert_close(_run(fresh, inputs), want, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in lora_parameters(fresh, "clothes"))  # loaded adapters start frozen

    # diffusers' own loader reads the file (keys, rank and alpha from the header) to the same model
    pipe = _sd_pipeline(copy.deepcopy(base), _text_encoder())
    pipe.load_lora_weights(str(path), adapter_name="clothes")
    torch.testing.assert_close(_run(pipe.unet, inputs), want, rtol=0, atol=1e-6)

    # a second load joins the first; weight 0 adds exactly nothing
    load_lora(fresh, path, "zero", weight=0.0)
    assert active_lora_adapters(fresh) == ["clothes", "zero"]
    torch.testing.assert_close(_run(fresh, inputs), want, rtol=0, atol=1e-6)


def test_file_matches_diffusers_save_lora_weights(trained, tmp_path):
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    ours = save_lora(tmp_path / "ours.safetensors", trained, "a", metadata={"dancegen.seed": 3})
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        tmp_path / "theirs", unet_lora_layers=get_peft_model_state_dict(trained, adapter_name="a"),
        unet_lora_adapter_metadata=copy.deepcopy(trained.peft_config["a"].to_dict()))
    h_ours, t_ours = _header(ours)
    h_theirs, t_theirs = _header(tmp_path / "theirs" / "pytorch_lora_weights.safetensors")
    assert t_ours.keys() == t_theirs.keys() and all(torch.equal(t_ours[k], t_theirs[k]) for k in t_ours)
    m_ours, m_theirs = (json.loads(h["lora_adapter_metadata"]) for h in (h_ours, h_theirs))
    # diffusers writes target_modules in set order, we sort it
    assert sorted(m_theirs.pop("unet.target_modules")) == m_ours.pop("unet.target_modules")
    assert m_ours == m_theirs
    assert h_ours.pop("dancegen.seed") == "3" and h_ours.keys() == h_theirs.keys() and h_ours["format"] == "pt"


def _kohya_file(trained, path, alpha=2.0, ldm=False, te_layers=None):
    """The adapter of `trained` as a kohya file: lora_down = A, lora_up = B * r / alpha (same product)."""
    sd = lora_state_dict(trained, "a", prefix="")
    out = {}
    for key, value in sd.items():
        module, ab = key.rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        if ldm:  # LDM block names for the tiny UNet (layers_per_block=1: 2 input/output blocks per level)
            name = (name.replace("down_blocks_0_attentions_0", "input_blocks_1_1")
                    .replace("mid_block_attentions_0", "middle_block_1")
                    .replace("up_blocks_1_attentions_0", "output_blocks_2_1")
                    .replace("up_blocks_1_attentions_1", "output_blocks_3_1"))
        rank = sd[f"{module}.lora_A.weight"].shape[0]
        if ab == "A.weight":
            out[f"{name}.lora_down.weight"] = value.clone()
            out[f"{name}.alpha"] = torch.tensor(alpha)
        else:
            out[f"{name}.lora_up.weight"] = value * (rank / alpha)
    for name, (down, up) in (te_layers or {}).items():
        out[f"lora_te_{name}.lora_down.weight"], out[f"lora_te_{name}.lora_up.weight"] = down, up
        out[f"lora_te_{name}.alpha"] = torch.tensor(alpha)
    save_file(out, str(path))
    return path


def test_kohya_file_with_alpha_and_text_encoder(base, trained, inputs, tmp_path):
    g = torch.Generator().manual_seed(4)
    # (diffusers only recognises a kohya text-encoder LoRA that has out_proj layers too)
    te_layers = {f"text_model_encoder_layers_{i}_self_attn_{p}_proj": (torch.randn(4, 32, generator=g),
                                                                      torch.randn(32, 4, generator=g))
                 for i in range(2) for p in ("q", "k", "v", "out")}
    path = _kohya_file(trained, tmp_path / "civitai.safetensors", alpha=2.0, te_layers=te_layers)
    assert detect_lora_format(path) == "kohya"
    want = _run(trained, inputs)

    fresh = copy.deepcopy(base)
    loaded = load_lora(fresh, path, "k")  # no text encoder: its layers are reported, not dropped silently
    assert loaded.format == "kohya" and not loaded.text_encoder_loaded
    assert loaded.text_encoder_modules == sorted(f"lora_te_{n}" for n in te_layers)
    torch.testing.assert_close(_run(fresh, inputs), want, rtol=0, atol=1e-5)

    # with the text encoder, and against diffusers' kohya conversion of the same file
    fresh, te = copy.deepcopy(base), _text_encoder()
    ids = torch.tensor([[0, 5, 9, 1]])
    with torch.no_grad():
        te_base = te(ids).last_hidden_state
    loaded = load_lora(fresh, path, "k", text_encoder=te)
    assert loaded.text_encoder_loaded and len(lora_state_dict(te, "k", prefix="")) == 2 * len(te_layers)
    pipe = _sd_pipeline(copy.deepcopy(base), _text_encoder())
    pipe.load_lora_weights(str(path), adapter_name="k")
    torch.testing.assert_close(_run(pipe.unet, inputs), want, rtol=0, atol=1e-5)
    with torch.no_grad():
        ours, theirs = te(ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state
    assert not torch.allclose(ours, te_base, atol=1e-3)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)

    # re-saved, the kohya alpha (2, rank 4) travels in the diffusers metadata
    resaved = save_lora(tmp_path / "resaved.safetensors", fresh, "k")
    assert json.loads(_header(resaved)[0]["lora_adapter_metadata"])["unet.lora_alpha"] == 2.0
    again = copy.deepcopy(base)
    load_lora(again, resaved, "k")
    torch.testing.assert_close(_run(again, inputs), want, rtol=0, atol=1e-5)

    # the older LDM block names of the same layers
    ldm = _kohya_file(trained, tmp_path / "ldm.safetensors", alpha=8.0, ldm=True)
    fresh = copy.deepcopy(base)
    load_lora(fresh, ldm, "k")
    torch.testing.assert_close(_run(fresh, inputs), want, rtol=0, atol=1e-5)


def test_kohya_mixed_ranks_and_alphas_equal_merged_weights(base, inputs, tmp_path):
    """Per-layer ranks (4/8) and alphas (2/4/8): the result must equal W + (alpha / r) B A merged into the weights.

    (diffusers 0.42's own kohya loader gets per-layer alphas wrong here; our re-saved file carries them in
    rank_pattern / alpha_pattern, and diffusers loads that one right.)"""
    g = torch.Generator().manual_seed(6)
    merged = copy.deepcopy(base)
    tensors = {}
    for i, name in enumerate(resolve_lora_targets(base, "cross_attn")):
        rank, alpha = (8 if i % 3 == 0 else 4), (2.0, 4.0, 8.0)[i % 3]
        layer = base.get_submodule(name)
        down = 0.1 * torch.randn(rank, layer.in_features, generator=g)
        up = 0.1 * torch.randn(layer.out_features, rank, generator=g)
        key = "lora_unet_" + name.replace(".", "_")
        tensors.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha":
                        torch.tensor(alpha)})
        with torch.no_grad():
            merged.get_submodule(name).weight += (alpha / rank) * up @ down
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    want = _run(merged, inputs)
    unet = copy.deepcopy(base)
    load_lora(unet, tmp_path / "mixed.safetensors", "m")
    torch.testing.assert_close(_run(unet, inputs), want, rtol=0, atol=1e-5)

    resaved = save_lora(tmp_path / "resaved.safetensors", unet, "m")
    pipe = _sd_pipeline(copy.deepcopy(base), _text_encoder())
    pipe.load_lora_weights(str(resaved), adapter_name="m")
    torch.testing.assert_close(_run(pipe.unet, inputs), want, rtol=0, atol=1e-5)


def test_other_key_styles(base, trained, inputs, tmp_path):
    sd = lora_state_dict(trained, "a", prefix="")
    want = _run(trained, inputs)
    legacy = {}
    for key, value in sd.items():
        module, ab = key.rsplit(".lora_", 1)
        updown = "down" if ab == "A.weight" else "up"
        block, proj = module.rsplit(".attn2.", 1)
        proj = "to_out" if proj == "to_out.0" else proj
        legacy[f"unet.{block}.attn2.processor.{proj}_lora.{updown}.weight"] = value.clone()
    styles = {"diffusers_legacy": legacy,  # diffusers < 0.21 attention-processor names, alpha = rank
              "peft": {f"base_model.model.{k}": v.clone() for k, v in sd.items()},  # PeftModel.save_pretrained
              "diffusers": {k: v.clone() for k, v in sd.items()}}  # model.save_lora_adapter: no "unet." prefix
    for fmt, tensors in styles.items():
        path = tmp_path / f"{fmt}.safetensors"
        save_file(tensors, str(path))
        assert detect_lora_format(path) == fmt
        fresh = copy.deepcopy(base)
        assert load_lora(fresh, path, "x").format == fmt
        torch.testing.assert_close(_run(fresh, inputs), want, rtol=0, atol=1e-6)


def test_wrapper_saves_image_unet_keys(base, inputs, tmp_path):
    from dancegen.core.unet3d import VideoUNet

    wrapper = Wrapper(copy.deepcopy(base))
    torch.manual_seed(5)
    names = add_lora(wrapper, "w", init="random")
    assert len(names) == 4 * N_BLOCKS and all(n.startswith("unet.") for n in names)
    assert not hasattr(wrapper.temporal["attn2"]["to_q"], "lora_A")  # the look-alike outside the UNet is untouched
    assert not any(p.requires_grad for p in wrapper.temporal.parameters())
    path = save_lora(tmp_path, wrapper, "w")  # a folder: diffusers' file name
    assert path.name == "pytorch_lora_weights.safetensors"
    _, tensors = _header(path)
    assert all(k.startswith("unet.down_blocks.") or k.startswith(("unet.mid_block.", "unet.up_blocks."))
               for k in tensors)
    plain = copy.deepcopy(base)
    load_lora(plain, path, "w")
    x, enc = inputs
    with torch.no_grad():
        want = wrapper(x, torch.tensor([10, 500]), enc).sample
    torch.testing.assert_close(_run(plain, inputs), want, rtol=0, atol=1e-6)
    # ...and back into a wrapper
    other = Wrapper(copy.deepcopy(base))
    assert load_lora(other, path, "w").modules == names

    # the real VideoUNet: its STSA temporal blocks have attn1/attn2 too, but only the image UNet is adapted
    video = VideoUNet.from_unet2d(copy.deepcopy(base), temporal="stsa")
    video_names = add_lora(video, "v")
    assert video_names == names


# ------------------------------------------------------------------------------------------------ bad files
def test_bad_files_are_one_line_input_errors(base, trained, tmp_path):
    unet = copy.deepcopy(base)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(InputError, match="not a readable .safetensors") as e:
        load_lora(unet, garbage, "x")
    assert str(garbage) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="pickled"):
        (tmp_path / "old.bin").write_bytes(b"x")
        load_lora(unet, tmp_path / "old.bin", "x")

    sd = {k: v.clone() for k, v in lora_state_dict(trained, "a").items()}
    unknown = dict(sd, **{"unet.no_such_block.to_q.lora_A.weight": torch.zeros(4, 32),
                          "unet.no_such_block.to_q.lora_B.weight": torch.zeros(32, 4)})
    save_file(unknown, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(InputError, match="no_such_block"):
        load_lora(unet, tmp_path / "unknown.safetensors", "x")

    key = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight"
    save_file(dict(sd, **{key: torch.zeros(64, 3)}), str(tmp_path / "rank.safetensors"))
    with pytest.raises(InputError, match="rank mismatch in mid_block.*attn2.to_k"):
        load_lora(unet, tmp_path / "rank.safetensors", "x")

    key = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
    save_file(dict(sd, **{key: torch.zeros(4, 31)}), str(tmp_path / "shape.safetensors"))
    with pytest.raises(InputError, match="do not fit"):
        load_lora(unet, tmp_path / "shape.safetensors", "x")

    save_file(sd, str(tmp_path / "meta.safetensors"), metadata={"format": "pt", "lora_adapter_metadata": json.dumps(
        {"unet.r": 8, "unet.lora_alpha": 8})})
    with pytest.raises(InputError, match="metadata says r=8 but lora_A has 4 rows"):
        load_lora(unet, tmp_path / "meta.safetensors", "x")

    save_file({"lora_unet_x.hada_w1_a": torch.zeros(2, 2)}, str(tmp_path / "loha.safetensors"))
    assert detect_lora_format(tmp_path / "loha.safetensors") == "lycoris"
    with pytest.raises(InputError, match="LyCORIS"):
        load_lora(unet, tmp_path / "loha.safetensors", "x")
    save_file({"conv_in.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    assert detect_lora_format(tmp_path / "model.safetensors") == "unknown"
    assert lora_adapters(unet) == []  # every failure left the model untouched
