"""Tiny random models in the real SD-1.5 and ControlNet folder layouts, for the tests of every method.

The configs are those of the released models (stable-diffusion-v1-5's ``unet/``, ``vae/``, ``text_encoder/``
(CLIP ViT-L/14's text tower), ``tokenizer/``, ``scheduler/``; lllyasviel/sd-controlnet-openpose) with the widths cut
down, and each folder is written by its class's own ``save_pretrained``, so code that loads these folders loads the
real ones too. Nothing here is trained: the weights are seeded random numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dancegen.errors import MissingWeightsError

# A small prompt vocabulary: SD-style prompt words plus the synthetic dance world's appearance and motion words
# (dancegen.synth's descriptions). Each becomes one token of the tiny tokenizer; other words still tokenize (as
# byte-level pieces). Kept as a literal so the tiny tokenizer does not change when the synth vocabulary does.
DEFAULT_WORDS: tuple[str, ...] = tuple(sorted(set("""
    a an the of in on at with and then to his her their both is
    person man woman someone dancer figure knight character photo picture portrait video high quality best detailed
    full body tall short broad slim skin pale light medium tan dark hair shaved head long sleeved shirt t trousers
    shorts dress armour armor silver striped checked mottled solid stage studio room street beach background white
    red blue green yellow orange purple pink black grey gray navy teal brown beige maroon olive blonde
    dance dances dancing jump jumps spin spins around wave waves arm arms hand hands left right raise raises clap
    claps kick kicks squat squats step steps side bounce bounces turn turns walk walks forward run runs
""".split())))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block, restoring the caller's state afterwards (no global reseeding)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only (torch.manual_seed also reseeds CUDA)
        yield


def tiny_unet_config(
    block_out_channels: tuple[int, ...] = (32, 64),
    cross_attention_dim: int = 32,
    sample_size: int = 16,
    in_channels: int = 4,
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    norm_num_groups: int = 32,
    cross_attn_levels: int = 1,
    out_channels: int = 4,
) -> dict:
    """A ``UNet2DConditionModel`` config in SD-1.5's layout, narrowed.

    SD-1.5 has cross-attention down blocks on its first three levels and a plain ``DownBlock2D`` on the last; the up
    path mirrors it (``UpBlock2D`` first). Here the first ``cross_attn_levels`` levels have cross-attention (the mid
    block always has it, as in SD). ``attention_head_dim`` is, as in SD's config, the number of heads.

    Args:
        block_out_channels: channels per level (SD: 320, 640, 1280, 1280).
        cross_attention_dim: width D of the text (or image) context (SD-1.5: 768).
        sample_size: latent side (SD-1.5: 64; here 16 for 32 px images).
        in_channels / out_channels: latent channels in and out (4; 9 in for inpainting models).
        layers_per_block: resnets per down level (SD: 2).
        attention_head_dim: heads per attention layer (SD: 8).
        norm_num_groups: GroupNorm groups; must divide every entry of ``block_out_channels``.
        cross_attn_levels: how many leading levels have cross-attention, 0..len(block_out_channels).

    Returns:
        Keyword arguments for ``UNet2DConditionModel``.

    Raises:
        ValueError: ``cross_attn_levels`` out of range, or groups that do not divide the channels.
    """
    n = len(block_out_channels)
    if not 0 <= cross_attn_levels <= n:
        raise ValueError(f"cross_attn_levels must be in [0, {n}], got {cross_attn_levels}")
    if any(c % norm_num_groups for c in block_out_channels):
        raise ValueError(f"norm_num_groups={norm_num_groups} must divide block_out_channels={block_out_channels}")
    down = ["CrossAttnDownBlock2D" if i < cross_attn_levels else "DownBlock2D" for i in range(n)]
    return {
        "sample_size": int(sample_size), "in_channels": int(in_channels), "out_channels": int(out_channels),
        "down_block_types": down, "up_block_types": ["CrossAttnUpBlock2D" if d.startswith("CrossAttn") else "UpBlock2D"
                                                      for d in reversed(down)],
        "block_out_channels": list(block_out_channels), "layers_per_block": int(layers_per_block),
        "cross_attention_dim": int(cross_attention_dim), "attention_head_dim": int(attention_head_dim),
        "norm_num_groups": int(norm_num_groups),
        # The remaining SD-1.5 values, written out so the saved config reads like the real one.
        "act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True,
        "freq_shift": 0, "mid_block_scale_factor": 1, "norm_eps": 1e-5,
    }


def tiny_vae_config(
    block_out_channels: tuple[int, ...] = (32, 64),
    latent_channels: int = 4,
    sample_size: int = 32,
    norm_num_groups: int = 32,
    layers_per_block: int = 1,
) -> dict:
    """An ``AutoencoderKL`` config in SD-1.5's layout, narrowed.

    Each level after the first halves the image (SD: 4 levels, 512 px -> 64 latent; here 2 levels, 32 px -> 16).

    Args:
        block_out_channels: channels per level (SD: 128, 256, 512, 512).
        latent_channels: 4, as SD.
        sample_size: image side in pixels.
        norm_num_groups: GroupNorm groups (SD: 32).
        layers_per_block: resnets per level (SD: 2).

    Returns:
        Keyword arguments for ``AutoencoderKL`` (scaling factor: the class default, SD's 0.18215).
    """
    n = len(block_out_channels)
    return {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "block_out_channels": list(block_out_channels),
            "latent_channels": int(latent_channels), "layers_per_block": int(layers_per_block),
            "norm_num_groups": int(norm_num_groups), "sample_size": int(sample_size), "act_fn": "silu"}


def tiny_clip_text_config(
    vocab_size: int | Any,
    hidden_size: int = 32,
    intermediate_size: int = 37,
    num_attention_heads: int = 4,
    num_hidden_layers: int = 2,
    projection_dim: int = 32,
    max_position_embeddings: int = 77,
    **overrides,
):
    """A tiny ``CLIPTextConfig`` of CLIP ViT-L/14's text tower (quick-GELU, 77 positions), narrowed.

    Args:
        vocab_size: a ``CLIPTokenizer`` (preferred: vocabulary size, start/end/pad ids and context length are read
            from it), or a vocabulary size of the ``build_clip_tokenizer`` layout, whose last two ids are
            ``<|startoftext|>`` and ``<|endoftext|>`` (the end token pads).
        hidden_size: width D (SD-1.5: 768); the UNet's ``cross_attention_dim`` must equal it.
        intermediate_size / num_attention_heads / num_hidden_layers: the transformer's size (SD-1.5: 3072 / 12 / 12).
        projection_dim: output width of ``CLIPTextModelWithProjection`` (unused by ``CLIPTextModel``).
        max_position_embeddings: context length when ``vocab_size`` is an int (a tokenizer's own length wins).
        **overrides: any other ``CLIPTextConfig`` field.

    Returns:
        ``transformers.CLIPTextConfig``.
    """
    from transformers import CLIPTextConfig

    if isinstance(vocab_size, int):
        size, positions = vocab_size, max_position_embeddings
        bos, eos = size - 2, size - 1
        pad = eos
    else:
        tok = vocab_size
        size, bos, eos, pad = len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        positions = int(tok.model_max_length)
    cfg = dict(vocab_size=size, hidden_size=hidden_size, intermediate_size=intermediate_size,
               num_attention_heads=num_attention_heads, num_hidden_layers=num_hidden_layers,
               projection_dim=projection_dim, max_position_embeddings=positions, hidden_act="quick_gelu",
               bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    cfg.update(overrides)
    return CLIPTextConfig(**cfg)


def write_json(path: Path, obj: dict) -> None:
    """JSON with sorted keys and a final newline (the same object writes the same bytes)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def sd15_model_index(with_text: bool = True, with_image_encoder: bool = False) -> dict[str, Any]:
    """``model_index.json`` of an SD-1.5-layout folder: a ``StableDiffusionPipeline`` (text) or, without text, a
    ``StableDiffusionImageVariationPipeline``; DDIM scheduler, no safety checker."""
    from diffusers import __version__ as diffusers_version

    index: dict[str, Any] = {
        "_diffusers_version": diffusers_version, "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "feature_extractor": [None, None],
    }
    if with_text:
        index.update(_class_name="StableDiffusionPipeline", text_encoder=["transformers", "CLIPTextModel"],
                     tokenizer=["transformers", "CLIPTokenizer"], image_encoder=[None, None])
    else:
        index["_class_name"] = "StableDiffusionImageVariationPipeline"
    if with_image_encoder:
        index.update(image_encoder=["transformers", "CLIPVisionModelWithProjection"],
                     feature_extractor=["transformers", "CLIPImageProcessor"])
    return index


def write_tiny_sd15(
    folder: str | os.PathLike,
    words=DEFAULT_WORDS,
    seed: int = 0,
    image_size: int = 32,
    with_text: bool = True,
    with_image_encoder: bool = False,
) -> Path:
    """Write a complete SD-1.5-layout model folder with seeded random weights.

    Layout (as stable-diffusion-v1-5 and lambdalabs/sd-image-variations-diffusers): ``unet/``, ``vae/``,
    ``scheduler/`` (DDIM with SD-1.5's values), ``text_encoder/`` + ``tokenizer/`` (``with_text``),
    ``image_encoder/`` + ``feature_extractor/`` (``with_image_encoder``), and ``model_index.json`` naming a
    ``StableDiffusionPipeline`` (or, without text, a ``StableDiffusionImageVariationPipeline``). Every context
    width is 32: the UNet's ``cross_attention_dim``, the text encoder's hidden size and the image encoder's
    projection. Each component is built with torch seeded to ``seed`` (the caller's RNG state is left as it was).

    Args:
        folder: where to write (created; existing files are overwritten).
        words: the tokenizer's single-token words (``build_clip_tokenizer``).
        seed: weight seed.
        image_size: image side in pixels (the latent side is half of it); a multiple of 4.
        with_text: write the CLIP text encoder and tokenizer.
        with_image_encoder: write a CLIP vision encoder with projection and its image processor.

    Returns:
        The folder.

    Raises:
        ValueError: neither encoder requested (an SD-1.5 folder has at least one), or a bad ``image_size``.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from dancegen.core.schedulers import ddim_scheduler_sd15

    if not (with_text or with_image_encoder):
        raise ValueError("an SD-1.5-layout folder needs a text encoder or an image encoder; enable one")
    if image_size < 4 or image_size % 4:
        raise ValueError(f"image_size must be a positive multiple of 4 (VAE and UNet each halve it), got {image_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    context_dim = 32
    with _seeded(seed):
        UNet2DConditionModel(**tiny_unet_config(cross_attention_dim=context_dim, sample_size=image_size // 2)
                             ).save_pretrained(folder / "unet")
    with _seeded(seed):
        AutoencoderKL(**tiny_vae_config(sample_size=image_size)).save_pretrained(folder / "vae")
    ddim_scheduler_sd15().save_pretrained(folder / "scheduler")
    index = sd15_model_index(with_text, with_image_encoder)
    if with_text:
        from transformers import CLIPTextModel

        from dancegen.core.text import build_clip_tokenizer

        tokenizer = build_clip_tokenizer(folder / "tokenizer", words)
        with _seeded(seed):
            CLIPTextModel(tiny_clip_text_config(tokenizer, hidden_size=context_dim)).save_pretrained(
                folder / "text_encoder")
    if with_image_encoder:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from dancegen.core.conditioning import tiny_clip_vision_config

        vision = tiny_clip_vision_config(projection_dim=context_dim)
        with _seeded(seed):
            CLIPVisionModelWithProjection(vision).save_pretrained(folder / "image_encoder")
        side = int(vision.image_size)
        CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(
            folder / "feature_extractor")
    write_json(folder / "model_index.json", index)
    return folder


def controlnet_embedding_channels(halvings: int) -> tuple[int, ...]:
    """Widths of a small ControlNet condition embedding that halves the control image `halvings` times (one per
    VAE downsampling), 16 doubling per level: (16, 32) for one halving, (16, 32, 64) for two."""
    return tuple(16 * 2**i for i in range(int(halvings) + 1))


def write_tiny_controlnet(
    folder: str | os.PathLike,
    unet_folder_or_unet: str | os.PathLike | Any,
    conditioning_channels: int = 3,
    seed: int = 0,
    vae_downsamples: int | None = None,
    zero_convs: str = "random",
) -> Path:
    """Write a ``ControlNetModel`` made from a (tiny) UNet with ``ControlNetModel.from_unet``.

    The conditioning embedding halves the control image once per VAE downsampling, so a control image of the
    pixel size meets the latent (SD: ``(16, 32, 96, 256)``, three halvings, 512 px -> 64; here ``(16, 32)``, one
    halving, 32 px -> 16).

    Args:
        folder: where to write (``config.json`` + safetensors).
        unet_folder_or_unet: a ``UNet2DConditionModel``, a UNet folder, or an SD-1.5-layout folder (its ``unet/``;
            its ``vae/`` then gives ``vae_downsamples``).
        conditioning_channels: channels of the control image (3 for an RGB pose map).
        seed: seed of the new (not copied) weights.
        vae_downsamples: halvings from pixels to latents; None reads them from the SD folder's ``vae/``, else 1.
        zero_convs: "random" (default) gives the zero convolutions (the conditioning embedding's last conv and the
            residual outputs) random weights so the control image changes the result, which tests need; "zero"
            keeps ``from_unet``'s zero initialisation (a fresh ControlNet is a no-op until trained).

    Returns:
        The folder.

    Raises:
        MissingWeightsError: ``unet_folder_or_unet`` is a path without a UNet.
        ValueError: unknown ``zero_convs``.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    if zero_convs not in ("random", "zero"):
        raise ValueError(f"zero_convs must be 'random' or 'zero', got {zero_convs!r}")
    unet = unet_folder_or_unet
    if isinstance(unet, (str, os.PathLike)):
        src = Path(unet)
        if (src / "unet" / "config.json").is_file():
            unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet")
            vae_cfg = src / "vae" / "config.json"
            if vae_downsamples is None and vae_cfg.is_file():
                vae_downsamples = len(json.loads(vae_cfg.read_text())["block_out_channels"]) - 1
        elif (src / "config.json").is_file():
            unet = UNet2DConditionModel.from_pretrained(src)
        else:
            raise MissingWeightsError("no UNet here (expected config.json, or unet/config.json of an SD folder)",
                                      path=src)
    halvings = 1 if vae_downsamples is None else int(vae_downsamples)
    embedding = controlnet_embedding_channels(halvings)
    with _seeded(seed):
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding,
                                        conditioning_channels=conditioning_channels)
        if zero_convs == "random":
            for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block,
                         net.controlnet_cond_embedding.conv_out]:
                conv.reset_parameters()
    folder = Path(folder)
    net.save_pretrained(folder)
    return folder
