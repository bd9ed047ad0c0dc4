"""Single-file SD-1.5 checkpoints in the original LDM key layout: offline loading, and export for A1111 / ComfyUI.

Community SD-1.5 models (e.g. MajicMIX-Realistic, Dancing Avatar's base) ship as one file holding CompVis
``LatentDiffusion``'s state dict: the UNet under ``model.diffusion_model.``, the VAE under ``first_stage_model.`` and
the CLIP ViT-L/14 text tower under ``cond_stage_model.transformer.``. Loading maps the UNet and VAE with diffusers'
``from_single_file`` (given a local config folder, so nothing is fetched) and the text tower by stripping its prefix.
The file has no configs: the sizes (channels per level, resnets per level, which levels attend, context width, ...)
are read from the tensor shapes, the rest takes SD-1.5's published values (``core.sd_configs``). What shapes cannot
tell (attention heads, GroupNorm groups, sample size, token ids, scheduler) is written by ``save_single_file_sd15``
into the safetensors header as ``dancegen.*`` metadata, which other tools ignore, so an export loads back exactly.
The key correspondence used for export (diffusers -> LDM) is written here from the public conversion scripts' facts.
The file has no vocabulary either: the tokenizer is an explicit folder or SD-1.5's from the local Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dancegen.core.components import SD15Components
from dancegen.core.sd_configs import CLIP_VIT_L14_TEXT_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
from dancegen.errors import InputError, MissingWeightsError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
SINGLE_FILE_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
METADATA_PREFIX = "dancegen."  # header keys written by save_single_file_sd15: dancegen.<component>_config (JSON)

# Where a tokenizer for a file without one is looked for in the local HF cache: (repo id, subfolder), in order.
TOKENIZER_SOURCES: tuple[tuple[str, str], ...] = (
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
    ("openai/clip-vit-large-patch14", ""),
)
TOKENIZER_DOWNLOAD = "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'tokenizer/*'"

# SD-1.5's values for what tensor shapes cannot tell, over the classes' defaults (core.sd_configs, the published ones).
_SD15_UNET_EXTRA = {k: SD15_UNET_CONFIG[k] for k in ("sample_size", "attention_head_dim", "norm_num_groups",
                                                     "norm_eps", "act_fn", "flip_sin_to_cos", "freq_shift")}
_SD15_VAE_EXTRA = {k: SD15_VAE_CONFIG[k] for k in ("sample_size", "norm_num_groups", "scaling_factor", "act_fn")}
_CLIP_L14_TEXT_EXTRA = {k: CLIP_VIT_L14_TEXT_CONFIG[k] for k in ("hidden_act", "layer_norm_eps", "projection_dim")}

# The CLIPTextConfig fields a config needs (the rest are transformers' bookkeeping).
_TEXT_CONFIG_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                       "max_position_embeddings", "hidden_act", "layer_norm_eps", "projection_dim", "bos_token_id",
                       "eos_token_id", "pad_token_id", "attention_dropout")
_CLIP_HEAD_DIM = 64  # CLIP ViT-L/14's text tower: 12 heads of 64 (768 wide)

# UNet resnet parameter names: diffusers ResnetBlock2D -> LDM ResBlock.
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
# VAE mid-block attention: diffusers Attention -> LDM AttnBlock (whose q/k/v/proj_out are 1x1 convolutions).
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


# ------------------------------------------------------------------------------------------------ reading files
class _TensorFile:
    """Tensor names, shapes and header metadata of a checkpoint file; tensors are read per component, on demand.

    A ``.safetensors`` file is read lazily (its header first). A pickle (``.ckpt``/``.pt``) is unpickled with
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, never arbitrary objects.
    """

    def __init__(self, path: Path):
        self.path = path
        self._tensors: dict[str, Any] | None = None
        suffix = path.suffix.lower()
        if not path.is_file():
            raise MissingWeightsError("single-file checkpoint not found", path=path)
        if suffix in SAFE_SUFFIXES:
            from safetensors import safe_open

            try:
                with safe_open(os.fspath(path), framework="pt") as f:
                    self.metadata: dict[str, str] = dict(f.metadata() or {})
                    self.shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            except Exception as e:  # SafetensorError / OSError: a truncated or foreign file
                raise InputError(f"not a readable .safetensors file ({_first_line(e)})", path=path) from None
        elif suffix in PICKLE_SUFFIXES:
            self._tensors = _load_pickle(path)
            self.metadata = {}
            self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}
        else:
            raise InputError(f"not a single-file checkpoint: expected one of {', '.join(SINGLE_FILE_SUFFIXES)}",
                             path=path)

    def tensors(self, prefix: str) -> dict[str, Any]:
        """The tensors whose names start with ``prefix`` (names kept whole)."""
        names = [k for k in self.shapes if k.startswith(prefix)]
        if self._tensors is not None:
            return {k: self._tensors[k] for k in names}
        from safetensors import safe_open

        with safe_open(os.fspath(self.path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in names}


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _load_pickle(path: Path) -> dict[str, Any]:
    """Unpickle a ``.ckpt``/``.pt`` with the weights-only unpickler; refuse anything that needs more.

    Raises:
        InputError: the pickle holds objects other than tensors and plain containers (it could run code when
            unpickled in full), or is not a state dict.
    """
    import pickle

    import torch

    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met a class it will not import (or bytes no pickle)
        raise InputError("this pickle does not unpickle as plain tensors (it holds other objects, or is no torch "
                         "checkpoint), and pickled checkpoints can run code, so dancegen will not unpickle it in full: "
                         "convert it to .safetensors", path=path) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:  # truncated or not a torch pickle at all
        raise InputError(f"not a readable torch checkpoint ({_first_line(e)})", path=path) from None
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning: {"state_dict": {...}, ...}
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(f"not a state dict (a pickled {type(obj).__name__})", path=path)
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _check_layout(f: _TensorFile) -> None:
    """Refuse files that are not SD-1.x checkpoints, naming what they look like.

    Raises:
        InputError: no LDM UNet, an SD-2.x (OpenCLIP) or SDXL text encoder, or no VAE.
    """
    keys = f.shapes
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("conditioner.embedders."):
        raise InputError("this is an SDXL checkpoint; dancegen loads SD-1.x single files", path=f.path)
    if not has(UNET_PREFIX):
        what = ("a diffusers-format state dict (use the diffusers folder)" if has("down_blocks.")
                else "a LoRA or other partial file" if any("lora" in k for k in keys) else "not an SD checkpoint")
        raise InputError(f"no UNet (model.diffusion_model.*) in this file: {what}", path=f.path)
    if has("cond_stage_model.model."):
        raise InputError("this is an SD-2.x checkpoint (OpenCLIP text encoder); dancegen loads SD-1.x single files",
                         path=f.path)
    if not has(VAE_PREFIX):
        raise InputError("no VAE (first_stage_model.*) in this file; use a checkpoint with its VAE baked in",
                         path=f.path)


def check_sd15_single_file(path: str | os.PathLike) -> None:
    """Check that a ``.safetensors`` file looks like an SD-1.x LDM checkpoint (reads the header only).

    Pickles are not opened here (that reads the whole file); ``load_single_file_sd15`` checks them.

    Raises:
        InputError: see ``_check_layout``, or an unreadable file.
    """
    p = Path(path)
    if p.suffix.lower() in SAFE_SUFFIXES:
        _check_layout(_TensorFile(p))


# --------------------------------------------------------------------------------------- configs from the shapes
def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def unet_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """A ``UNet2DConditionModel`` config read from LDM UNet tensor shapes, SD-1.5's values elsewhere.

    LDM numbers the encoder ``input_blocks.0`` (conv_in), then per level ``layers_per_block`` blocks of
    ``[ResBlock, SpatialTransformer?]`` and, except on the last level, one ``[Downsample]`` block; the decoder
    ``output_blocks`` has ``layers_per_block + 1`` blocks per level. Heads (8), GroupNorm groups (32) and sample size
    (64) are not in the shapes and keep SD-1.5's values.

    Args:
        shapes: tensor name (with or without the ``model.diffusion_model.`` prefix) -> shape.

    Returns:
        Keyword arguments for ``UNet2DConditionModel``.

    Raises:
        InputError: the blocks do not form an SD-style UNet.
    """
    s = {k.removeprefix(UNET_PREFIX): v for k, v in shapes.items()}
    try:
        n_in = len(_indices(s, r"input_blocks\.(\d+)\."))
        n_levels = len(_indices(s, r"input_blocks\.(\d+)\.0\.op\.weight")) + 1
        lpb, rem = divmod(n_in - n_levels, n_levels)
        n_out = len(_indices(s, r"output_blocks\.(\d+)\."))
        if rem or lpb < 1 or n_out != n_levels * (lpb + 1):
            raise InputError(f"UNet blocks do not form an SD UNet ({n_in} input blocks, {n_out} output blocks, "
                             f"{n_levels} levels)")
        first = [1 + b * (lpb + 1) for b in range(n_levels)]  # first ResBlock of each encoder level
        block_out = [s[f"input_blocks.{i}.0.out_layers.3.weight"][0] for i in first]
        down_attn = [any(k.startswith(f"input_blocks.{i}.1.") for k in s) for i in first]
        up_attn = [any(k.startswith(f"output_blocks.{b * (lpb + 1)}.1.") and ".1.conv." not in k for k in s)
                   for b in range(n_levels)]
        attn_prefixes = sorted({m.group(1) for k in s
                                if (m := re.match(r"(.+?\.1)\.transformer_blocks\.\d+\.attn2\.to_k\.weight", k))})
        if not attn_prefixes:
            raise InputError("UNet has no cross-attention (transformer_blocks.*.attn2): not a text-conditioned SD UNet")
        ctx_dim = s[f"{attn_prefixes[0]}.transformer_blocks.0.attn2.to_k.weight"][1]
        depth = [len(_indices(s, re.escape(f"input_blocks.{i}.1.transformer_blocks.") + r"(\d+)\."))
                 for i, a in zip(first, down_attn, strict=True) if a]
        conv_in = s["input_blocks.0.0.weight"]
        conv_out = s["out.2.weight"]
        proj_in = s[f"{attn_prefixes[0]}.proj_in.weight"]
        time_dim = s["time_embed.0.weight"][0]
    except KeyError as e:
        raise InputError(f"UNet tensor {UNET_PREFIX}{e.args[0]} missing: not an SD-style UNet") from None
    if any(k.startswith("label_emb.") for k in s):
        raise InputError("UNet has a class/label embedding (label_emb.*): not an SD-1.x text-to-image UNet")
    cfg = dict(_SD15_UNET_EXTRA)
    cfg.update(
        in_channels=conv_in[1], out_channels=conv_out[0], block_out_channels=block_out, layers_per_block=lpb,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
        cross_attention_dim=ctx_dim, use_linear_projection=len(proj_in) == 2,
        conv_in_kernel=conv_in[-1], conv_out_kernel=conv_out[-1],
    )
    if depth and any(d != 1 for d in depth):
        cfg["transformer_layers_per_block"] = depth[0] if len(set(depth)) == 1 else depth
    if time_dim != 4 * block_out[0]:
        cfg["time_embedding_dim"] = time_dim
    return cfg


def vae_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """An ``AutoencoderKL`` config read from LDM VAE tensor shapes (``encoder.down.{i}.block.{j}``...), SD-1.5's
    values elsewhere (GroupNorm groups 32, sample size 512, scaling factor 0.18215).

    Args:
        shapes: tensor name (with or without the ``first_stage_model.`` prefix) -> shape.

    Returns:
        Keyword arguments for ``AutoencoderKL``.

    Raises:
        InputError: a tensor the VAE needs is missing.
    """
    s = {k.removeprefix(VAE_PREFIX): v for k, v in shapes.items()}
    levels = _indices(s, r"encoder\.down\.(\d+)\.")
    try:
        block_out = [s[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels]
        cfg = dict(_SD15_VAE_EXTRA)
        cfg.update(
            in_channels=s["encoder.conv_in.weight"][1], out_channels=s["decoder.conv_out.weight"][0],
            block_out_channels=block_out, layers_per_block=len(_indices(s, r"encoder\.down\.0\.block\.(\d+)\.")),
            down_block_types=["DownEncoderBlock2D"] * len(levels), up_block_types=["UpDecoderBlock2D"] * len(levels),
            latent_channels=s["decoder.conv_in.weight"][1], use_quant_conv="quant_conv.weight" in s,
            use_post_quant_conv="post_quant_conv.weight" in s,
            mid_block_add_attention=any(k.startswith("encoder.mid.attn_1.") for k in s),
        )
    except KeyError as e:
        raise InputError(f"VAE tensor {VAE_PREFIX}{e.args[0]} missing: not an SD-style VAE") from None
    return cfg


def text_config_from_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    """``CLIPTextConfig`` fields read from the LDM text tower's shapes, CLIP ViT-L/14's values elsewhere.

    The head count is not in the shapes: CLIP's text towers use 64-wide heads, so it is ``hidden_size // 64``, or
    None when the width is not a multiple of 64 (then only the file's dancegen metadata can tell it).

    Args:
        shapes: tensor name (with or without ``cond_stage_model.transformer.`` and ``text_model.``) -> shape.

    Returns:
        A dict of ``CLIPTextConfig`` fields (``num_attention_heads`` may be None).

    Raises:
        InputError: a tensor the text tower needs is missing.
    """
    s = {k.removeprefix(TEXT_PREFIX).removeprefix("text_model."): v for k, v in shapes.items()}
    try:
        vocab, hidden = s["embeddings.token_embedding.weight"]
        cfg = dict(_CLIP_L14_TEXT_EXTRA)
        cfg.update(vocab_size=vocab, hidden_size=hidden,
                   max_position_embeddings=s["embeddings.position_embedding.weight"][0],
                   num_hidden_layers=len(_indices(s, r"encoder\.layers\.(\d+)\.")),
                   intermediate_size=s["encoder.layers.0.mlp.fc1.weight"][0],
                   num_attention_heads=hidden // _CLIP_HEAD_DIM if hidden % _CLIP_HEAD_DIM == 0 else None)
    except KeyError as e:
        raise InputError(f"text encoder tensor {TEXT_PREFIX}{e.args[0]} missing: not a CLIP text tower") from None
    return cfg


def _metadata_config(metadata: Mapping[str, str], name: str) -> dict:
    raw = metadata.get(f"{METADATA_PREFIX}{name}_config")
    if not raw:
        return {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return {}  # a damaged header entry: fall back to the shapes
    return cfg if isinstance(cfg, dict) else {}


# ------------------------------------------------------------------------------------------------------ tokenizer
def _hf_cache_dir() -> str:
    """The HF hub cache folder as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def resolve_tokenizer(tokenizer: Any = None):
    """The CLIP tokenizer for a single-file checkpoint (the file has no vocabulary).

    Args:
        tokenizer: a loaded tokenizer (returned as is), a tokenizer folder (``vocab.json`` + ``merges.txt``), or
            None: SD-1.5's ``tokenizer/`` or ``openai/clip-vit-large-patch14`` from the local Hugging Face cache
            (``$HF_HUB_CACHE``), never from the network.

    Returns:
        ``transformers.CLIPTokenizer``.

    Raises:
        MissingWeightsError: the folder does not exist, or nothing is cached; one line naming the download command.
    """
    from transformers import CLIPTokenizer

    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    if tokenizer is not None:
        folder = Path(tokenizer)
        if not (folder / "vocab.json").is_file():
            raise MissingWeightsError("tokenizer folder not found (expected vocab.json and merges.txt)", path=folder)
        return CLIPTokenizer.from_pretrained(folder)
    from huggingface_hub import try_to_load_from_cache

    cache = _hf_cache_dir()
    for repo, sub in TOKENIZER_SOURCES:
        found = [try_to_load_from_cache(repo, f"{sub}/{name}" if sub else name, cache_dir=cache)
                 for name in ("vocab.json", "merges.txt")]
        if all(isinstance(f, str) for f in found):  # a path (None: not cached; a sentinel: known missing)
            return CLIPTokenizer.from_pretrained(Path(found[0]).parent, local_files_only=True)
    looked = " and ".join(f"{r}{' (' + s + '/)' if s else ''}" for r, s in TOKENIZER_SOURCES)
    raise MissingWeightsError(
        f"a single-file checkpoint has no tokenizer and none is cached (looked for {looked} in the Hugging Face cache "
        f"{cache}); get SD-1.5's with `{TOKENIZER_DOWNLOAD}` (huggingface_hub's command line), or pass a tokenizer "
        "folder")


# ------------------------------------------------------------------------------------------------------- loading
def load_single_file_sd15(
    path: str | os.PathLike,
    dtype: Any = None,
    tokenizer: Any = None,
    scheduler: Any = None,
    device: Any = None,
    load_text_encoder: bool = True,
) -> SD15Components:
    """Load an SD-1.5 single-file checkpoint (LDM keys) offline (``core.weights.load_sd15_components(path)`` calls
    this for a file).

    Sizes come from the tensor shapes, SD-1.5's config fills the rest, and a file written by
    ``save_single_file_sd15`` brings its exact configs in its header.

    Args:
        path: a ``.safetensors`` file, or a ``.ckpt``/``.pt`` pickle that holds only tensors (loaded with
            ``torch.load(weights_only=True)``; one holding other objects is refused).
        dtype: torch dtype of the models (None: float32, whatever the file stores; community files are often fp16).
        tokenizer: see ``resolve_tokenizer`` (looked up before any weight is read, so a missing one fails fast).
        scheduler: a scheduler object, a folder with ``scheduler_config.json``, or None: the file's dancegen
            metadata, else SD-1.5's DDIM (``core.schedulers.ddim_scheduler_sd15``).
        device: where to move the models (None: CPU).
        load_text_encoder: also load the CLIP text encoder and the tokenizer.

    Returns:
        ``SD15Components``: ``UNet2DConditionModel``, ``AutoencoderKL``, ``DDIMScheduler``, ``CLIPTextModel`` /
        ``CLIPTokenizer`` (None without text) and the file; the models in eval mode with gradients off.

    Raises:
        MissingWeightsError: the file does not exist, or no tokenizer is available.
        InputError: not an SD-1.x LDM checkpoint, a pickle with more than tensors, or tensors that do not fit.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    path = Path(path)
    f = _TensorFile(path)
    _check_layout(f)
    has_text = any(k.startswith(TEXT_PREFIX) for k in f.shapes)
    if load_text_encoder and not has_text:
        raise InputError("no CLIP text encoder (cond_stage_model.transformer.*) in this file", path=path)
    tok = resolve_tokenizer(tokenizer) if load_text_encoder else None
    # dtype only when asked: diffusers then casts with .to() and logs a warning; without it the loader
    # already casts each tensor to the freshly built model's float32.
    td = {"dtype": dtype} if dtype is not None else {}

    unet_cfg = {**unet_config_from_shapes(_within(f.shapes, UNET_PREFIX)), **_metadata_config(f.metadata, "unet")}
    vae_cfg = {**vae_config_from_shapes(_within(f.shapes, VAE_PREFIX)), **_metadata_config(f.metadata, "vae")}
    with tempfile.TemporaryDirectory(prefix="dancegen-single-file-") as tmp:
        # from_single_file reads the model config from a local diffusers-layout folder: no network, no guessing.
        for name, cfg, cls in (("unet", unet_cfg, UNet2DConditionModel), ("vae", vae_cfg, AutoencoderKL)):
            (Path(tmp) / name).mkdir()
            (Path(tmp) / name / "config.json").write_text(json.dumps(dict(cfg, _class_name=cls.__name__)))
        models: dict[str, Any] = {}
        for name, cls, prefix in (("unet", UNet2DConditionModel, UNET_PREFIX), ("vae", AutoencoderKL, VAE_PREFIX)):
            try:
                models[name] = cls.from_single_file(f.tensors(prefix), config=tmp, subfolder=name,
                                                    local_files_only=True, **td)
            except (ValueError, KeyError, RuntimeError) as e:
                raise InputError(f"the {name} tensors do not fit an SD-1.5 {cls.__name__} ({_first_line(e)})",
                                 path=path) from None
    if load_text_encoder:
        text_cfg = {**text_config_from_shapes(_within(f.shapes, TEXT_PREFIX))}
        text_cfg.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        text_cfg.update(_metadata_config(f.metadata, "text_encoder"))
        if len(tok) > text_cfg["vocab_size"]:  # ids past the embedding table would fail at the first prompt
            raise InputError(f"the tokenizer has {len(tok)} tokens but the text encoder embeds {text_cfg['vocab_size']}"
                             "; pass the tokenizer this model was trained with", path=path)
        models["text_encoder"] = _load_text_encoder(f.tensors(TEXT_PREFIX), text_cfg, dtype or torch.float32, path)
        if tok.model_max_length > text_cfg["max_position_embeddings"]:  # a bare vocab.json/merges.txt folder
            tok.model_max_length = int(text_cfg["max_position_embeddings"])
    for name, m in models.items():
        meta = [n for n, p in m.named_parameters() if p.is_meta]
        if meta:
            raise InputError(f"the {name} tensors are incomplete: {len(meta)} missing, e.g. {meta[0]}", path=path)
        m.eval().requires_grad_(False)
        if device is not None:
            m.to(device)
    return SD15Components(unet=models["unet"], vae=models["vae"], scheduler=_scheduler(scheduler, f.metadata),
                          text_encoder=models.get("text_encoder"), tokenizer=tok, path=str(path))


def _within(shapes: Mapping[str, tuple], prefix: str) -> dict[str, tuple]:
    return {k: v for k, v in shapes.items() if k.startswith(prefix)}


def _load_text_encoder(tensors: dict[str, Any], cfg: dict, dtype: Any, path: Path):
    """Build ``CLIPTextModel`` from ``cfg`` without initialising weights, then take the file's tensors."""
    import contextlib

    from transformers import CLIPTextConfig, CLIPTextModel

    if cfg.get("num_attention_heads") is None:
        raise InputError(f"the text encoder is {cfg['hidden_size']} wide, not a multiple of CLIP's 64-wide heads, so "
                         "its head count cannot be read from the tensors (a dancegen export records it)", path=path)
    try:
        from accelerate import init_empty_weights
    except ImportError:  # pragma: no cover - accelerate ships with the install
        init_empty_weights = contextlib.nullcontext
    with init_empty_weights():  # parameters on the meta device, buffers (position_ids) real
        model = CLIPTextModel(CLIPTextConfig(**{k: cfg[k] for k in _TEXT_CONFIG_FIELDS if k in cfg}))
    # LDM files name the tower cond_stage_model.transformer.text_model.* (older ones without text_model.); the
    # position_ids buffer they carry is rebuilt by the model. transformers >= 5.6 flattened CLIPTextModel.
    wants_prefix = any(k.startswith("text_model.") for k in model.state_dict())
    sd = {}
    for k, v in tensors.items():
        k = k.removeprefix(TEXT_PREFIX).removeprefix("text_model.")
        if k != "embeddings.position_ids":
            sd[("text_model." if wants_prefix else "") + k] = v
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        what = f"{len(missing)} missing (e.g. {missing[0]})" if missing else f"{len(unexpected)} unexpected " \
               f"(e.g. {unexpected[0]})"
        raise InputError(f"the text encoder tensors do not fit a CLIP text tower: {what}", path=path)
    return model.to(dtype)


def _scheduler(scheduler: Any, metadata: Mapping[str, str]):
    from diffusers import DDIMScheduler

    from dancegen.core.schedulers import ddim_scheduler_sd15

    if scheduler is not None and not isinstance(scheduler, (str, os.PathLike)):
        return scheduler
    if scheduler is not None:
        folder = Path(scheduler)
        if not (folder / "scheduler_config.json").is_file() and (folder / "scheduler").is_dir():
            folder = folder / "scheduler"
        if not (folder / "scheduler_config.json").is_file():
            raise MissingWeightsError("no scheduler_config.json here", path=folder)
        return DDIMScheduler.from_pretrained(folder)
    cfg = _metadata_config(metadata, "scheduler")
    return DDIMScheduler.from_config(cfg) if cfg else ddim_scheduler_sd15()


# -------------------------------------------------------------------------------------------------------- export
def unet_key_to_ldm(key: str, config: Mapping[str, Any]) -> str:
    """The LDM name (without ``model.diffusion_model.``) of a diffusers ``UNet2DConditionModel`` parameter.

    Encoder level ``b``'s ``l``-th resnet/attention is ``input_blocks.{1 + b*(L+1) + l}.{0|1}`` and its downsampler
    ``input_blocks.{(b+1)*(L+1)}.0.op`` (``L`` = layers_per_block); decoder level ``b``'s ``l``-th (of ``L+1``) is
    ``output_blocks.{b*(L+1) + l}.{0|1}``, its upsampler the last one's next slot (``.1`` or, after an attention,
    ``.2``); the mid block is ``middle_block.{0,1,2}`` (resnet, attention, resnet).

    Args:
        key: diffusers parameter name, e.g. ``down_blocks.0.resnets.1.conv1.weight``.
        config: the UNet's config (``layers_per_block``, ``up_block_types``).

    Returns:
        e.g. ``input_blocks.2.0.in_layers.2.weight``.

    Raises:
        InputError: a parameter with no LDM counterpart (not an SD-1.x UNet, e.g. an inflated video UNet).
    """
    step = int(config["layers_per_block"]) + 1
    for head, ldm in _UNET_FIXED.items():
        if key.startswith(head + "."):
            return ldm + key[len(head):]
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        side, b, part, i, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if part == "resnets":
            rest = _rename_resnet(rest, key)
        if side == "down":
            if part == "downsamplers":
                return f"input_blocks.{b * step + step}.0.op.{rest.removeprefix('conv.')}"
            return f"input_blocks.{1 + b * step + i}.{0 if part == 'resnets' else 1}.{rest}"
        if part == "upsamplers":
            slot = 2 if "CrossAttn" in config["up_block_types"][b] else 1
            return f"output_blocks.{b * step + step - 1}.{slot}.{rest}"
        return f"output_blocks.{b * step + i}.{0 if part == 'resnets' else 1}.{rest}"
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        i = int(m.group(2))
        if m.group(1) == "resnets":
            return f"middle_block.{2 * i}.{_rename_resnet(m.group(3), key)}"
        return f"middle_block.{1 + 2 * i}.{m.group(3)}"
    raise InputError(f"UNet parameter {key} has no SD-1.x LDM counterpart (only a plain SD-1.x UNet exports)")


def _rename_resnet(rest: str, key: str) -> str:
    name, _, tail = rest.partition(".")
    if name not in _UNET_RESNET:
        raise InputError(f"UNet parameter {key} has no SD-1.x LDM counterpart")
    return f"{_UNET_RESNET[name]}.{tail}"


def vae_key_to_ldm(key: str, num_levels: int) -> tuple[str, bool]:
    """The LDM name (without ``first_stage_model.``) of a diffusers ``AutoencoderKL`` parameter.

    LDM numbers the decoder's levels from the bottom (``decoder.up.{n-1-i}`` is diffusers' ``up_blocks.{i}``) and
    its mid-block attention uses 1x1 convolutions where diffusers uses linear layers.

    Args:
        key: diffusers parameter name, e.g. ``decoder.up_blocks.0.resnets.2.conv1.weight``.
        num_levels: ``len(vae.config.block_out_channels)``.

    Returns:
        ``(ldm_name, as_conv)``: ``as_conv`` asks for a linear weight ``(O, I)`` to be stored as ``(O, I, 1, 1)``.

    Raises:
        InputError: a parameter with no LDM counterpart.
    """
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key, False
    coder, _, rest = key.partition(".")
    if coder in ("encoder", "decoder"):
        if rest.startswith(("conv_in.", "conv_out.")):
            return key, False
        if rest.startswith("conv_norm_out."):
            return f"{coder}.norm_out.{rest.removeprefix('conv_norm_out.')}", False
        m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets\.\d+|downsamplers\.0|upsamplers\.0)\.(.+)", rest)
        if m:
            side, i, part, tail = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            level = i if side == "down" else num_levels - 1 - i
            if part.startswith("resnets."):
                tail = tail.replace("conv_shortcut.", "nin_shortcut.")
                return f"{coder}.{side}.{level}.block.{part.split('.')[1]}.{tail}", False
            return f"{coder}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.{tail}", False
        m = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
        if m:
            return f"{coder}.mid.block_{int(m.group(1)) + 1}.{m.group(2).replace('conv_shortcut.', 'nin_shortcut.')}", \
                False
        m = re.fullmatch(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", rest)
        if m:
            return f"{coder}.mid.attn_1.{_VAE_ATTN[m.group(1)]}.{m.group(2)}", \
                m.group(1) != "group_norm" and m.group(2) == "weight"
    raise InputError(f"VAE parameter {key} has no SD-1.x LDM counterpart")


def to_ldm_state_dict(components: Any, dtype: Any = None) -> dict[str, Any]:
    """The LDM-layout state dict of SD-1.5 components (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.transformer.text_model.*``), as the original SD-1.5 release names its tensors.

    Args:
        components: an ``SD15Components`` (or anything with ``unet``, ``vae`` and ``text_encoder``).
        dtype: cast floating tensors to it (None: as they are).

    Returns:
        name -> tensor (contiguous, detached, on CPU).

    Raises:
        InputError: no text encoder (an LDM SD-1.5 file holds one), or a parameter with no LDM counterpart.
    """
    import torch

    te = getattr(components, "text_encoder", None)
    if te is None:
        raise InputError("an SD-1.5 single file holds a CLIP text encoder and these components have none (an "
                         "image-variations model cannot be exported as one)")
    unet, vae = components.unet, components.vae

    def prep(t):
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.contiguous()

    out: dict[str, Any] = {}
    for k, v in unet.state_dict().items():
        out[UNET_PREFIX + unet_key_to_ldm(k, unet.config)] = prep(v)
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        name, as_conv = vae_key_to_ldm(k, levels)
        out[VAE_PREFIX + name] = prep(v[:, :, None, None] if as_conv and v.ndim == 2 else v)
    for k, v in te.state_dict().items():
        out[f"{TEXT_PREFIX}text_model.{k.removeprefix('text_model.')}"] = prep(v)
    # The original release carries CLIP's position_ids buffer; loaders that expect it find it.
    positions = int(te.config.max_position_embeddings)
    out[f"{TEXT_PREFIX}text_model.embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=str)


def save_single_file_sd15(components: Any, path: str | os.PathLike, dtype: Any = None) -> Path:
    """Write SD-1.5 components as one ``.safetensors`` file in the LDM layout (for A1111 / ComfyUI), atomically.

    The header also records each component's config (``dancegen.unet_config``, ``dancegen.vae_config``,
    ``dancegen.text_encoder_config``, ``dancegen.scheduler_config``, JSON), which ``load_single_file_sd15`` reads
    back for what tensor shapes cannot tell and other tools ignore.

    Args:
        components: an ``SD15Components`` with a text encoder (any object with ``unet``, ``vae``, ``text_encoder``
            and optionally ``scheduler``).
        path: the ``.safetensors`` file to write (parents created; an existing file is replaced only on success).
        dtype: store floating tensors in this dtype (e.g. ``torch.float16`` halves the file; None: as they are).

    Returns:
        The path.

    Raises:
        InputError: ``path`` does not end in ``.safetensors``, no text encoder, or a parameter with no LDM name.
    """
    from dancegen.io.atomic import save_safetensors

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise InputError("single-file export writes .safetensors (pickles can run code when loaded)", path=path)
    tensors = to_ldm_state_dict(components, dtype=dtype)
    te_cfg = components.text_encoder.config.to_dict()
    metadata = {
        "format": "pt",
        f"{METADATA_PREFIX}unet_config": _config_json(components.unet.config),
        f"{METADATA_PREFIX}vae_config": _config_json(components.vae.config),
        f"{METADATA_PREFIX}text_encoder_config": json.dumps({k: te_cfg[k] for k in _TEXT_CONFIG_FIELDS if k in te_cfg},
                                                            sort_keys=True),
    }
    scheduler = getattr(components, "scheduler", None)
    if scheduler is not None:
        metadata[f"{METADATA_PREFIX}scheduler_config"] = _config_json(scheduler.config)
    save_safetensors(tensors, path, metadata=metadata)
    return path
