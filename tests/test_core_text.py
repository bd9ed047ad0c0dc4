"""Tests of core/text.py (CLIP BPE tokenizer builder, PromptEncoder) and core/tiny.py (tiny SD-1.5 / ControlNet
folders), including loading the tiny folders with diffusers' own pipelines to prove the layout is the real one."""

from __future__ import annotations

import json

import pytest
import torch

from dancegen.core.text import (
    EOT,
    SOT,
    PromptEncoder,
    _clip_pretokenize,
    _word_symbols,
    bpe,
    build_clip_tokenizer,
    bytes_to_unicode,
    clip_bpe_from_words,
)
from dancegen.core.tiny import DEFAULT_WORDS, tiny_unet_config, write_tiny_controlnet, write_tiny_sd15
from dancegen.errors import MissingWeightsError

WORDS = ["Dancer", "dances", "dance", "a", "knight", "jumps", "naïve", "!!", "7", "abc", "abcd", "bcd", "abcx"]
UNKNOWN = ["zxqv", "naive", "🕺", "日本", "Ünïcödé", "hello,", "dancers", "42"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_clip_tokenizer(d, WORDS)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("sd15") / "model")


@pytest.fixture(scope="module")
def comps(sd_dir):
    from dancegen.core.weights import load_sd15_components

    return load_sd15_components(sd_dir)


@pytest.fixture()
def encoder(comps):
    return PromptEncoder(comps.text_encoder, comps.tokenizer)  # a fresh, empty cache per test


def _read_merges(folder):
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    return lines[0], [tuple(line.split(" ")) for line in lines[1:]]


# ----------------------------------------------------------------------------------------------------- tokenizer
def test_bytes_to_unicode_is_the_byte_level_alphabet():
    from tokenizers import pre_tokenizers

    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"  # GPT-2/CLIP's values


def test_tokenizer_files_and_vocab_layout(tok_dir, tok):
    assert sorted(p.name for p in tok_dir.iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    header, merges = _read_merges(tok_dir)
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    assert header == "#version: 0.2"
    assert len(vocab) == 512 + 2 + len(merges) == len(tok)
    alphabet = list(bytes_to_unicode().values())
    assert [vocab[c] for c in alphabet] == list(range(256))
    assert [vocab[c + "</w>"] for c in alphabet] == list(range(256, 512))
    assert vocab[SOT] == len(vocab) - 2 == tok.bos_token_id
    assert vocab[EOT] == len(vocab) - 1 == tok.eos_token_id == tok.pad_token_id == tok.unk_token_id
    assert tok.model_max_length == 77


def test_listed_words_are_one_token(tok_dir, tok):
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    for w in WORDS:
        ids = tok(w, add_special_tokens=False).input_ids
        assert ids == [vocab[_clip_pretokenize(w)[0] + "</w>"]], w
        assert tok(w.upper(), add_special_tokens=False).input_ids == ids  # lower-cased first
    ids = tok("a Dancer  dances").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 5


def test_unknown_text_splits_into_pieces_never_unk(tok):
    for w in UNKNOWN:
        ids = tok(w, add_special_tokens=False).input_ids
        assert len(ids) >= 2, w
        assert all(i < tok.bos_token_id for i in ids), w  # no <|endoftext|> (the unknown token) nor start token
    text = "A Dancer jumps ZXQV naïve 🕺 日本 dances"
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == text.lower()


def test_reference_bpe_reproduces_the_loaded_tokenizer(tok_dir, tok):
    """bpe() with the written merges gives the real tokenizer's tokens, so the construction's argument (listed words
    end as one token) holds for the tokenizer transformers runs."""
    _, merges = _read_merges(tok_dir)
    ranks = {m: i for i, m in enumerate(merges)}
    for text in WORDS + UNKNOWN + ["abcdx", "xabc", "bcdabc"]:
        ours = [t for w in _clip_pretokenize(text) for t in bpe(_word_symbols(w), ranks)]
        assert ours == tok.tokenize(text), text


def test_tokenizer_is_deterministic(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    build_clip_tokenizer(a, WORDS)
    build_clip_tokenizer(b, list(reversed(WORDS)) + [w.upper() for w in WORDS])  # same set of words
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert clip_bpe_from_words(WORDS + ["knights"]) != clip_bpe_from_words(WORDS)


def test_tokenizer_loads_as_fast_alias(tok_dir, tok):
    from transformers import CLIPTokenizerFast

    fast = CLIPTokenizerFast.from_pretrained(tok_dir)  # transformers 5: an alias of the tokenizers-backed class
    text = "a dancer jumps zxqv 🕺"
    assert fast(text).input_ids == tok(text).input_ids


@pytest.mark.parametrize("bad", ["t-shirt", "42", "two words", " ", "<|endoftext|>"])
def test_tokenizer_rejects_multi_piece_words(tmp_path, bad):
    with pytest.raises(ValueError, match="not one CLIP word"):
        build_clip_tokenizer(tmp_path, ["dancer", bad])


def test_default_words_are_single_tokens():
    vocab, merges = clip_bpe_from_words(DEFAULT_WORDS)
    ranks = {m: i for i, m in enumerate(merges)}
    assert len(vocab) == 514 + len(merges)
    for w in DEFAULT_WORDS:
        assert len(bpe(_word_symbols(_clip_pretokenize(w)[0]), ranks)) == 1, w


# ------------------------------------------------------------------------------------------------ prompt encoder
def test_encode_shapes_repetition_and_empty_uncond(encoder, comps):
    emb = encoder.encode(["a dancer jumps", "a knight"], num_per_prompt=3)
    assert emb.cond.shape == emb.uncond.shape == (6, 77, 32)
    assert emb.cond.dtype == torch.float32 and not emb.cond.requires_grad and emb.truncated == []
    single = PromptEncoder(comps.text_encoder, comps.tokenizer).encode("a knight", guidance=False)
    assert single.uncond is None and single.cond.shape == (1, 77, 32)
    torch.testing.assert_close(emb.cond[3:], single.cond.expand(3, -1, -1), atol=1e-5, rtol=0)
    assert torch.equal(emb.cond[0], emb.cond[2]) and not torch.allclose(emb.cond[0], emb.cond[3])
    # No negative prompt: the unconditional embedding is the encoding of "" (SD's convention).
    empty = PromptEncoder(comps.text_encoder, comps.tokenizer).encode("", guidance=False).cond
    torch.testing.assert_close(emb.uncond, empty.expand(6, -1, -1), atol=1e-5, rtol=0)
    assert emb.guidance_batch().shape == (12, 77, 32) and torch.equal(emb.guidance_batch()[6:], emb.cond)
    neg = encoder.encode(["a dancer jumps", "a knight"], negative_prompt=["a knight", "dances"])
    torch.testing.assert_close(neg.uncond[0:1], single.cond, atol=1e-5, rtol=0)


def test_encode_follows_the_text_encoder_dtype(encoder):
    import copy

    fp32 = encoder.encode("a dancer", guidance=False).cond
    encoder.text_encoder = copy.deepcopy(encoder.text_encoder).to(torch.bfloat16)  # the cache key has the dtype
    bf16 = encoder.encode("a dancer", guidance=False).cond
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32, atol=0.1, rtol=0.05)  # recomputed in bf16, not a cast copy
    assert not torch.equal(bf16.float(), fp32.to(torch.bfloat16).float())


def test_encode_matches_diffusers_encode_prompt(encoder, sd_dir):
    """The SD-1.5 convention, checked against diffusers' own StableDiffusionPipeline.encode_prompt (without
    clip_skip: diffusers 0.42's clip_skip path fails on transformers 5's CLIPTextModel, diffusers#14124)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    prompts = ["a dancer jumps", "a knight in silver armour waves"]
    ref_c, ref_u = pipe.encode_prompt(prompts, "cpu", 2, True, negative_prompt=["", "dark"])
    emb = encoder.encode(prompts, negative_prompt=["", "dark"], num_per_prompt=2)
    torch.testing.assert_close(emb.cond, ref_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.uncond, ref_u, atol=1e-5, rtol=0)


def test_cache_runs_the_text_encoder_once_per_string(encoder):
    calls: list[int] = []
    hook = encoder.text_encoder.register_forward_hook(lambda m, args, kw, out: calls.append(kw["input_ids"].shape[0]
                                                      if "input_ids" in kw else args[0].shape[0]), with_kwargs=True)
    try:
        first = encoder.encode(["a dancer", "a dancer", "a knight"], num_per_prompt=2)
        assert calls == [3]  # one forward over the distinct strings: "a dancer", "a knight", ""
        again = encoder.encode(["a knight", "a dancer"] * 4)  # every frame of a video: no new forward
        assert calls == [3]
        assert torch.equal(again.cond[1], first.cond[0]) and torch.equal(again.uncond, first.uncond[:1].expand(8, -1, -1))
        encoder.encode("a dancer", clip_skip=1)  # the key includes clip_skip
        assert calls == [3, 2]
        encoder.clear_cache()
        encoder.encode("a dancer", guidance=False)
        assert calls == [3, 2, 1]
    finally:
        hook.remove()


def test_truncation_is_reported_and_keeps_the_first_tokens(encoder):
    words = list(DEFAULT_WORDS)[:40] * 2  # 80 single-token words: 2 more than the 77-token context holds
    long, kept = " ".join(words), " ".join(words[:75])
    emb = encoder.encode([long, "a dancer"], negative_prompt=kept)
    assert emb.truncated == [long]
    torch.testing.assert_close(emb.cond[0], emb.uncond[0], atol=1e-5, rtol=0)  # the tail was cut, nothing else
    assert encoder.encode(long, guidance=False).truncated == [long]  # still reported from the cache


def test_clip_skip(encoder, comps):
    """clip_skip=k is the output of the encoder without its last k layers (then the final layer norm)."""
    import copy

    base = encoder.encode("a dancer jumps", guidance=False).cond
    torch.testing.assert_close(encoder.encode("a dancer jumps", guidance=False, clip_skip=0).cond, base,
                               atol=1e-5, rtol=0)
    skipped = encoder.encode("a dancer jumps", guidance=False, clip_skip=1).cond
    assert (skipped - base).abs().max() > 1e-2
    shallow = copy.deepcopy(comps.text_encoder)
    body = getattr(shallow, "text_model", shallow)
    body.encoder.layers = body.encoder.layers[:-1]
    ref = PromptEncoder(shallow, comps.tokenizer).encode("a dancer jumps", guidance=False).cond
    torch.testing.assert_close(skipped, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="clip_skip"):
        encoder.encode("a dancer", clip_skip=2)  # a 2-layer encoder
    with pytest.raises(ValueError, match="negative_prompt"):
        encoder.encode(["a", "b"], negative_prompt=["c"])


# --------------------------------------------------------------------------------------------- tiny SD-1.5 layout
def test_write_tiny_sd15_loads_with_load_sd15_components(sd_dir, comps):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    assert isinstance(comps.unet, UNet2DConditionModel) and isinstance(comps.vae, AutoencoderKL)
    assert isinstance(comps.scheduler, DDIMScheduler) and isinstance(comps.text_encoder, CLIPTextModel)
    assert isinstance(comps.tokenizer, CLIPTokenizer) and comps.image_encoder is None
    sc = comps.scheduler.config
    assert (sc.beta_schedule, sc.beta_start, sc.beta_end, sc.steps_offset, sc.set_alpha_to_one, sc.clip_sample) == (
        "scaled_linear", 0.00085, 0.012, 1, False, False)
    assert list(comps.unet.config.down_block_types) == ["CrossAttnDownBlock2D", "DownBlock2D"]
    assert list(comps.unet.config.up_block_types) == ["UpBlock2D", "CrossAttnUpBlock2D"]
    assert comps.unet.config.sample_size == 16 and comps.vae_scale_factor == 2
    assert comps.unet.config.cross_attention_dim == comps.text_encoder.config.hidden_size
    tcfg, tk = comps.text_encoder.config, comps.tokenizer
    assert (tcfg.vocab_size, tcfg.bos_token_id, tcfg.eos_token_id, tcfg.pad_token_id) == (
        len(tk), tk.bos_token_id, tk.eos_token_id, tk.pad_token_id)
    assert tk("a dancer jumps", add_special_tokens=False).input_ids.__len__() == 3
    index = json.loads((sd_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    size = sum(f.stat().st_size for f in sd_dir.rglob("*") if f.is_file())
    assert size < 8_000_000  # tiny: about 6 MB, nearly all of it the fp32 UNet and VAE

    from_folder = PromptEncoder.from_folder(sd_dir).encode("a dancer jumps")
    direct = PromptEncoder(comps.text_encoder, comps.tokenizer).encode("a dancer jumps")
    assert from_folder.cond.shape == (1, 77, 32)
    torch.testing.assert_close(from_folder.cond, direct.cond, atol=1e-6, rtol=0)


def test_write_tiny_sd15_is_deterministic_and_leaves_the_rng_alone(sd_dir, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = write_tiny_sd15(tmp_path / "again")
    assert torch.equal(torch.rand(3), expected)
    files = sorted(p.relative_to(sd_dir) for p in sd_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:
        assert (sd_dir / f).read_bytes() == (again / f).read_bytes(), f


def test_image_only_folder_and_missing_text_parts(tmp_path):
    from transformers import CLIPVisionModelWithProjection

    from dancegen.core.weights import load_sd15_components

    folder = write_tiny_sd15(tmp_path / "img", with_text=False, with_image_encoder=True)
    comps = load_sd15_components(folder)
    assert isinstance(comps.image_encoder, CLIPVisionModelWithProjection) and comps.text_encoder is None
    assert comps.image_encoder.config.projection_dim == comps.unet.config.cross_attention_dim
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionImageVariationPipeline")
    with pytest.raises(MissingWeightsError, match=r"text_encoder/.*tokenizer/") as e:
        PromptEncoder.from_folder(folder)
    assert str(folder) in str(e.value)
    (folder / "text_encoder").mkdir()
    (folder / "text_encoder" / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="tokenizer/") as e:
        PromptEncoder.from_folder(folder)
    assert "text_encoder/" not in e.value.message
    with pytest.raises(MissingWeightsError, match="does not exist"):
        PromptEncoder.from_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="text encoder or an image encoder"):
        write_tiny_sd15(tmp_path / "none", with_text=False)


def test_stable_diffusion_pipeline_runs_on_the_tiny_folder(sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def run(seed):
        return pipe("a dancer jumps", num_inference_steps=2, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(seed)).images

    a, b = run(0), run(0)
    assert a.shape == (1, 32, 32, 3) and a.dtype.name == "float32" and 0 <= a.min() and a.max() <= 1
    assert (a == b).all() and a.std() > 0


def test_tiny_controlnet_layout_and_pipeline(sd_dir, comps, tmp_path):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, UNet2DConditionModel

    cn_dir = write_tiny_controlnet(tmp_path / "cn", sd_dir)
    cn = ControlNetModel.from_pretrained(cn_dir)
    assert tuple(cn.config.conditioning_embedding_out_channels) == (16, 32)  # one halving: 32 px -> 16 latent
    assert cn.config.cross_attention_dim == 32 and cn.config.conditioning_channels == 3
    torch.testing.assert_close(cn.conv_in.weight, comps.unet.conv_in.weight, atol=0, rtol=0)  # from_unet copies

    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd_dir, controlnet=cn, safety_checker=None,
                                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    poses = torch.rand(2, 1, 3, 32, 32, generator=g)
    out = [pipe("a dancer", image=p, num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator().manual_seed(0)).images for p in poses]
    assert out[0].shape == (1, 32, 32, 3)
    assert abs(out[0] - out[1]).max() > 1e-4  # the (randomised) zero convolutions let the pose steer the result

    # zero_convs="zero" keeps from_unet's initialisation: every residual is exactly zero. Also built from a UNet.
    unet = UNet2DConditionModel(**tiny_unet_config())
    zero = ControlNetModel.from_pretrained(write_tiny_controlnet(tmp_path / "cn0", unet, zero_convs="zero"))
    down, mid = zero(torch.randn(1, 4, 16, 16, generator=g), 10, torch.randn(1, 77, 32, generator=g),
                     poses[0], return_dict=False)
    assert all(torch.equal(r, torch.zeros_like(r)) for r in [*down, mid])
