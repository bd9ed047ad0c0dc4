"""LoRA (Hu et al. 2021; Dancing Avatar spec §2.1) on the UNet through peft, with diffusers- and kohya-format files.

As Dancing Avatar uses it (specs/dancing-avatar.md §2.1, "Module architecture"): an adapted projection W
(d_out x d_in) computes ``h = W x + weight * (alpha / r) * B (A x)`` with ``A`` (r x d_in), ``B`` (d_out x r) and
``B = 0`` at initialisation, so a new adapter changes nothing until it is trained. Dancing Avatar trains one adapter
for the clothes and one for the face on the cross-attention projections (``LORA_TARGETS["cross_attn"]``, r = 4,
alpha = r) and sums both at inference (``set_lora(unet, ["clothes", "face"], [1.0, 1.0])``).

The layers are peft's (``LoraConfig`` + ``inject_adapter_in_model``, or diffusers' ``add_adapter`` on models that
have it), so a UNet or ControlNet adapted here also works with diffusers' own ``set_adapters`` /
``load_lora_weights``. A wrapper
that holds the image UNet as a submodule (``VideoUNet.unet``) gets its adapters on that UNet: target names are the
image UNet's, the other parts of the wrapper (temporal blocks, which also have ``attn1``/``attn2``) are left alone,
and saved files carry plain SD-UNet keys that diffusers' SD pipelines load.

Files are one ``.safetensors`` each. ``save_lora`` writes the diffusers format: the tensors and header that
``StableDiffusionLoraLoaderMixin.save_lora_weights(..., unet_lora_adapter_metadata=peft_config.to_dict())``
writes in diffusers 0.42, with ``target_modules`` sorted: keys ``unet.<module>.lora_A.weight`` / ``lora_B.weight``
and the header ``{"format": "pt", "lora_adapter_metadata": json}`` holding the adapter's ``LoraConfig`` as
``unet.r``, ``unet.lora_alpha``, ``unet.rank_pattern``, ... (per-layer ranks and alphas survive the round trip).
``load_lora`` reads these key styles (``detect_lora_format`` names them):

- ``diffusers``: ``<component>.<module>.lora_A.weight`` / ``.lora_B.weight`` with or without the component prefix
  (``unet.``; ``text_encoder.`` / ``text_encoder_2.`` for text-encoder layers); alpha from the header, else alpha = r.
- ``peft``: the same under ``base_model.model.`` (``PeftModel.save_pretrained``).
- ``diffusers_legacy``: the attention-processor names of diffusers < 0.21
  (``...attn2.processor.to_k_lora.down.weight``, ``.lora.down`` / ``.lora.up``, ``.lora_linear_layer.``), converted
  with diffusers' ``convert_*_state_dict_to_peft``.
- ``kohya`` (sd-scripts, most community files): ``lora_unet_<module with _>.lora_down.weight`` / ``.lora_up.weight``
  / ``.alpha`` (scale alpha / r; alpha = r when absent), ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` for text
  encoders. Module names are resolved exactly against the model's own layer names (``_`` is ambiguous in general, not
  within one model); the LDM block names (``lora_unet_input_blocks_4_1_...``, ``middle_block``, ``output_blocks``) are
  first mapped to diffusers blocks with diffusers' ``_maybe_map_sgm_blocks_to_diffusers``, and names that still do
  not resolve go through diffusers' ``_convert_unet_lora_key`` (LDM resnet names such as ``in_layers_2``).

Not supported (an ``InputError`` says so): LyCORIS LoHa / LoKr, DoRA, LoRA biases, pickled ``.bin`` / ``.pt`` files.
Text-encoder layers in a file are reported in ``LoadedLora.text_encoder_modules`` and logged; they are loaded only
when ``load_lora`` is given the ``text_encoder`` (``text_encoder_2`` layers of SDXL files are only reported).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from dancegen.errors import InputError
from dancegen.io.atomic import save_safetensors

log = logging.getLogger(__name__)

# Named target sets: module-name suffixes inside the UNet (diffusers names). ``to_out.0`` is the output Linear
# (``to_out.1`` is dropout).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "cross_attn": ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
    "self_attn": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"),
    "attn": ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
             "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"),
}

# add_lora(init=...) -> peft's init_lora_weights. "zeros_B": A Kaiming-uniform, B = 0 (Hu et al.; the module is a
# no-op at init); "gaussian": A ~ N(0, 1/r), B = 0; "random": A and B both random (not a no-op; tests, debugging).
LORA_INITS: dict[str, bool | str] = {"zeros_B": True, "gaussian": "gaussian", "random": False}

LORA_FORMATS = ("diffusers", "peft", "diffusers_legacy", "kohya", "lycoris", "unknown")

# The header key diffusers reads the adapter's LoraConfig from (diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY).
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' file name, used when save_lora gets a folder

_ADAPTABLE = (nn.Linear, nn.Conv2d)
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_KOHYA_SLOTS = {"lora_down.weight": "A", "lora_up.weight": "B", "alpha": "alpha"}
_LDM_BLOCKS = ("input_blocks", "middle_block", "output_blocks")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class LoadedLora:
    """What ``load_lora`` did.

    Attributes:
        adapter_name: the name the adapter got.
        format: the file's key style (one of ``LORA_FORMATS``).
        path: the file.
        modules: adapted layers, as names inside the model passed to ``load_lora``.
        text_encoder_modules: the text-encoder layers the file has LoRA weights for, as named in the file.
        text_encoder_loaded: whether those were loaded into the given ``text_encoder`` (``text_encoder_2`` layers of
            SDXL files never are).
    """

    adapter_name: str
    format: str
    path: str
    modules: list[str]
    text_encoder_modules: list[str] = field(default_factory=list)
    text_encoder_loaded: bool = False


# ------------------------------------------------------------------------------------------------ model structure
def lora_root(model: nn.Module) -> tuple[str, nn.Module]:
    """The module adapters attach to, and its name inside ``model``.

    A ``UNet2DConditionModel`` or ``ControlNetModel`` is its own root. A wrapper holding exactly one of them (or
    several, one of them at ``.unet``) roots at it, e.g. ``("unet", video_unet.unet)``. Any other module is its own
    root (a text encoder, a temporal-block ModuleDict).

    Raises:
        ValueError: the wrapper holds several UNets / ControlNets and none is at ``.unet``.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    kinds = (UNet2DConditionModel, ControlNetModel)
    if isinstance(model, kinds):
        return "", model
    found = [(n, m) for n, m in model.named_modules() if n and isinstance(m, kinds)]
    found = [(n, m) for n, m in found if not any(n.startswith(o + ".") for o, _ in found)]  # outermost only
    if not found:
        return "", model
    if len(found) == 1:
        return found[0]
    for name, module in found:
        if name == "unet":
            return name, module
    raise ValueError(f"{type(model).__name__} holds several UNets/ControlNets ({', '.join(n for n, _ in found)}); "
                     "pass the one to adapt")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tuner_layers(module: nn.Module) -> list[tuple[str, BaseTunerLayer]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]


def _adaptable_layers(root: nn.Module) -> dict[str, nn.Module]:
    """Layers of ``root`` that can carry LoRA, by name: Linear / Conv2d, or the peft wrapper of an adapted one."""
    layers: dict[str, nn.Module] = {}
    inside = None  # name prefix of the peft wrapper being walked: its base_layer / lora_A / lora_B are not targets
    for name, module in root.named_modules():  # pre-order: a wrapper's submodules follow it directly
        if inside is not None and name.startswith(inside):
            continue
        inside = None
        if isinstance(module, BaseTunerLayer):
            inside = name + "."
            if isinstance(module.get_base_layer(), _ADAPTABLE):
                layers[name] = module
        elif name and isinstance(module, _ADAPTABLE):
            layers[name] = module
    return layers


def _base(layer: nn.Module) -> nn.Module:
    return layer.get_base_layer() if isinstance(layer, BaseTunerLayer) else layer


# ------------------------------------------------------------------------------------------------ target selection
def _pattern_hits(pattern: str, names: Sequence[str], prefix: str) -> list[str]:
    """Names matching ``pattern``: the name itself, a ``.``-suffix of it, or a regex matching all of it.

    Both the root-relative name and the name inside the wrapper (``unet.``-prefixed) are tried."""
    try:
        regex = re.compile(pattern)
    except re.error:
        regex = None  # not a regex (e.g. a literal name with brackets): name matching only
    hits = []
    for name in names:
        for candidate in (name, _join(prefix, name)):
            if (candidate == pattern or candidate.endswith("." + pattern)
                    or (regex is not None and regex.fullmatch(candidate))):
                hits.append(name)
                break
    return hits


def _resolve_targets(root: nn.Module, prefix: str, targets: str | Sequence[str]) -> list[str]:
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        raise InputError("no LoRA targets given")
    layers = list(_adaptable_layers(root))
    chosen: set[str] = set()
    for target in targets:
        patterns = LORA_TARGETS.get(target, (target,))
        hits = [h for p in patterns for h in _pattern_hits(p, layers, prefix)]
        if not hits:
            what = f"preset {target!r} ({', '.join(patterns)})" if target in LORA_TARGETS else repr(target)
            raise InputError(f"LoRA target {what} matches no Linear/Conv2d layer of {type(root).__name__}")
        chosen.update(hits)
    return [n for n in layers if n in chosen]  # module order


def resolve_lora_targets(model: nn.Module, targets: str | Sequence[str] = "cross_attn") -> list[str]:
    """Names (inside ``model``) of the layers ``targets`` selects, in module order.

    Args:
        model: a UNet, a ControlNet, a wrapper holding one (see ``lora_root``) or any module.
        targets: a preset name of ``LORA_TARGETS``, or patterns (presets may be mixed in): a full layer name, a
            ``.``-suffix of names (``"attn2.to_k"``, ``"ff.net.2"``), or a regex matching whole names
            (``r".*up_blocks.*attn2\\.to_(k|v)"``). Names are the image UNet's; in a wrapper the prefixed name
            (``unet.down_blocks...``) matches too. Only Linear / Conv2d layers are candidates.

    Raises:
        InputError: a pattern (or a whole preset) matches no layer; the message names it.
    """
    prefix, root = lora_root(model)
    return [_join(prefix, n) for n in _resolve_targets(root, prefix, targets)]


# ------------------------------------------------------------------------------------------------ adapters
def lora_adapters(model: nn.Module) -> list[str]:
    """Names of the LoRA adapters on ``model``, in the order they were added."""
    names: dict[str, None] = {}
    for _, layer in _tuner_layers(model):
        names.update(dict.fromkeys(getattr(layer, "lora_A", {})))
    return list(names)


def active_lora_adapters(model: nn.Module) -> list[str]:
    """Names of the adapters that take part in ``model``'s forward (empty when disabled or none)."""
    names: dict[str, None] = {}
    for _, layer in _tuner_layers(model):
        if layer.disable_adapters:
            return []
        names.update(dict.fromkeys(a for a in layer.active_adapters if a in getattr(layer, "lora_A", {})))
    return list(names)


def _check_adapter_name(adapter_name: str) -> None:
    # peft keeps adapters in nn.ModuleDicts, whose keys cannot contain dots.
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter name must be a non-empty string without dots, got {adapter_name!r}")


def _activate(model: nn.Module, names: list[str], scales: dict[str, float]) -> None:
    """Make ``names`` the active adapters of every LoRA layer and set the weights in ``scales``.

    peft's ``set_adapter`` / ``enable_adapters`` also flip ``requires_grad`` (active = trainable); choosing what the
    forward computes must not change what an optimizer trains, so the flags are put back."""
    layers = _tuner_layers(model)
    grads = [(p, p.requires_grad) for _, layer in layers for p in layer.parameters()]
    for _, layer in layers:
        if names:
            layer.set_adapter(list(names))
            layer.enable_adapters(True)
            if hasattr(layer, "set_scale"):
                for name, scale in scales.items():
                    layer.set_scale(name, scale)  # scaling = scale * alpha / r; layers without `name` ignore it
        else:
            layer.enable_adapters(False)
    for p, flag in grads:
        p.requires_grad_(flag)


def _inject(root: nn.Module, config: LoraConfig, adapter_name: str) -> None:
    from diffusers.loaders.peft import PeftAdapterMixin

    with warnings.catch_warnings():
        # peft warns whenever a model already has a `peft_config`; several named adapters is what we want here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        if isinstance(root, PeftAdapterMixin):
            root.add_adapter(config, adapter_name)  # keeps diffusers' own adapter bookkeeping in step
        else:
            inject_adapter_in_model(config, root, adapter_name)


def add_lora(
    model: nn.Module,
    adapter_name: str = "default",
    rank: int = 4,
    alpha: float | None = None,
    targets: str | Sequence[str] = "cross_attn",
    dropout: float = 0.0,
    init: str = "zeros_B",
) -> list[str]:
    """Add a new LoRA adapter, make it the only active one and the only trainable parameters of ``model``.

    Several named adapters can live on one model (``set_lora`` combines them). Every parameter of ``model`` that is
    not this adapter's gets ``requires_grad=False`` (base weights, other adapters; re-enable what else you train);
    ``lora_parameters(model, adapter_name)`` are what the optimizer gets. With ``init="zeros_B"`` (default) the
    model's output is bit-identical to the base model's until the adapter is trained.

    Args:
        model: a ``UNet2DConditionModel``, ``ControlNetModel``, a wrapper holding one (``VideoUNet``: the adapter
            goes on ``.unet``), or any module (see ``lora_root``).
        adapter_name: the adapter's name (no dots).
        rank: r, the inner dimension of A (r x d_in) and B (d_out x r).
        alpha: the LoRA scale numerator, scale = alpha / r; None means alpha = rank (scale 1, spec §2.1).
        targets: see ``resolve_lora_targets``; default: the cross-attention q/k/v/out projections.
        dropout: dropout on the LoRA branch's input while training.
        init: one of ``LORA_INITS``.

    Returns:
        The adapted layers' names inside ``model`` (``unet.``-prefixed for a VideoUNet), in module order.

    Raises:
        InputError: a target pattern matches no layer.
        ValueError: a bad rank / alpha / dropout / init, or the name is taken.
    """
    _check_adapter_name(adapter_name)
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    alpha = rank if alpha is None else alpha
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if init not in LORA_INITS:
        raise ValueError(f"init must be one of {sorted(LORA_INITS)}, got {init!r}")
    if adapter_name in lora_adapters(model):
        raise ValueError(f"model already has a LoRA adapter named {adapter_name!r}")
    prefix, root = lora_root(model)
    names = _resolve_targets(root, prefix, targets)
    config = LoraConfig(r=int(rank), lora_alpha=alpha, target_modules=names, lora_dropout=float(dropout),
                        init_lora_weights=LORA_INITS[init], bias="none")
    _inject(root, config, adapter_name)
    _activate(model, [adapter_name], {adapter_name: 1.0})
    own = {id(p) for p in lora_parameters(model, adapter_name)}
    for p in model.parameters():
        p.requires_grad_(id(p) in own)
    return [_join(prefix, n) for n in names]


def set_lora(model: nn.Module, adapters: list[str] | str | None, weights: list[float] | float = 1.0) -> None:
    """Choose which adapters the forward uses, and their weights; ``None`` (or ``[]``) gives the base model.

    Each active adapter adds ``weight * (alpha / r) * B A x`` to its layers, so ``weights=[1.0, 1.0]`` sums two
    adapters at full strength (Dancing Avatar's clothes + face) and a weight of 0 removes one exactly. Inactive
    adapters keep their weights. Which parameters are trainable is not changed.

    Args:
        model: a model with LoRA adapters (any of those ``add_lora`` takes).
        adapters: adapter name(s), or None / [] to disable all.
        weights: one weight for all, or one per adapter.

    Raises:
        InputError: an adapter name the model does not have.
        ValueError: the numbers of names and weights differ, or a name is repeated.
    """
    names = [] if adapters is None else [adapters] if isinstance(adapters, str) else list(adapters)
    if not names:
        _activate(model, [], {})
        return
    available = lora_adapters(model)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(f"no LoRA adapter named {', '.join(map(repr, unknown))}; the model has "
                         f"{', '.join(map(repr, available)) or 'none'}")
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names repeat: {names}")
    scales = [float(weights)] * len(names) if isinstance(weights, int | float) else [float(w) for w in weights]
    if len(scales) != len(names):
        raise ValueError(f"{len(names)} adapters but {len(scales)} weights")
    _activate(model, names, dict(zip(names, scales, strict=True)))


def lora_parameters(model: nn.Module, adapter_name: str = "default") -> list[nn.Parameter]:
    """The A and B matrices of one adapter, in module order (what its optimizer trains).

    Raises:
        InputError: the model has no adapter of that name.
    """
    params: list[nn.Parameter] = []
    for _, layer in _tuner_layers(model):
        for attr in ("lora_A", "lora_B"):
            holder = getattr(layer, attr, None)
            if holder is not None and adapter_name in holder:
                params.extend(holder[adapter_name].parameters())
    if not params:
        raise InputError(f"no LoRA adapter named {adapter_name!r}; the model has "
                         f"{', '.join(map(repr, lora_adapters(model))) or 'none'}")
    return params


# ------------------------------------------------------------------------------------------------ saving
def _config_from_layers(layers: dict[str, nn.Module], adapter_name: str) -> LoraConfig:
    ranks = {n: layer.r[adapter_name] for n, layer in layers.items()}
    alphas = {n: layer.lora_alpha[adapter_name] for n, layer in layers.items()}
    return _make_config(ranks, alphas)


def _make_config(ranks: dict[str, int], alphas: dict[str, float]) -> LoraConfig:
    """A LoraConfig for exactly these layers; layers off the most common rank / alpha go in the patterns.

    Pattern keys are ``^`` + the escaped full name: peft (and diffusers) match them as ``(.*\\.)?(key)$``, which the
    anchor limits to that one layer."""
    r = collections.Counter(ranks.values()).most_common(1)[0][0]
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    return LoraConfig(
        r=r, lora_alpha=alpha, target_modules=list(ranks), bias="none",
        rank_pattern={f"^{re.escape(n)}": v for n, v in ranks.items() if v != r},
        alpha_pattern={f"^{re.escape(n)}": v for n, v in alphas.items() if v != alpha},
    )


def _adapter_layers(model: nn.Module, adapter_name: str) -> tuple[str, nn.Module, dict[str, nn.Module]]:
    prefix, root = lora_root(model)
    layers = {n: m for n, m in _tuner_layers(root) if adapter_name in getattr(m, "lora_A", {})}
    if not layers:
        lora_parameters(model, adapter_name)  # raises the "no adapter named" error when it is nowhere
        raise InputError(f"LoRA adapter {adapter_name!r} has no layers in the {type(root).__name__}")
    inside = {id(m) for m in layers.values()}
    outside = [n for n, m in _tuner_layers(model) if adapter_name in getattr(m, "lora_A", {}) and id(m) not in inside]
    if outside:
        raise ValueError(f"LoRA adapter {adapter_name!r} also has layers outside {prefix or 'the model root'} "
                         f"(e.g. {outside[0]}); they have no key in the diffusers UNet format")
    return prefix, root, layers


def lora_state_dict(model: nn.Module, adapter_name: str = "default", prefix: str = "unet") -> dict[str, torch.Tensor]:
    """One adapter's weights under diffusers keys, ``<prefix>.<image-UNet module>.lora_A.weight`` / ``lora_B.weight``.

    Args:
        model: the adapted model; for a wrapper the keys are those of the image UNet (no ``unet.unet.``).
        adapter_name: which adapter.
        prefix: the pipeline component the keys belong to (``"unet"``; ``""`` for none).

    Returns:
        ``{key: tensor}`` sharing storage with the model (detach/copy before changing it).
    """
    _, _, layers = _adapter_layers(model, adapter_name)
    out: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        key = _join(prefix, name)
        out[f"{key}.lora_A.weight"] = layer.lora_A[adapter_name].weight.detach()
        out[f"{key}.lora_B.weight"] = layer.lora_B[adapter_name].weight.detach()
        bias = getattr(layer.lora_B[adapter_name], "bias", None)
        if bias is not None:  # peft's lora_bias=True; diffusers writes it under this key too
            out[f"{key}.lora_B.bias"] = bias.detach()
    return out


def _config_dict(root: nn.Module, layers: dict[str, nn.Module], adapter_name: str) -> dict:
    config = getattr(root, "peft_config", {}).get(adapter_name) or _config_from_layers(layers, adapter_name)
    out = config.to_dict()
    for key, value in out.items():
        if isinstance(value, set):  # diffusers turns sets into lists; sorted so the file is reproducible
            out[key] = sorted(value)
    return out


def save_lora(
    path: str | os.PathLike,
    model: nn.Module,
    adapter_name: str = "default",
    prefix: str = "unet",
    metadata: dict[str, object] | None = None,
) -> Path:
    """Write one adapter to a diffusers-format ``.safetensors`` file, atomically.

    The file is what diffusers' ``save_lora_weights`` writes for the same adapter: keys from ``lora_state_dict``
    and the header ``{"format": "pt", "lora_adapter_metadata": <LoraConfig.to_dict() with keys "<prefix>.r",
    "<prefix>.lora_alpha", ...>}``, so ``pipe.load_lora_weights(path)`` of a diffusers SD pipeline reads it, rank and
    alpha included. A wrapper's adapter is saved with the image UNet's keys.

    Args:
        path: the file (``.safetensors``), or an existing folder to write ``pytorch_lora_weights.safetensors`` in.
        model: the adapted model.
        adapter_name: which adapter.
        prefix: component prefix of keys and metadata (``"unet"``, ``"controlnet"``; ``""`` for none, the style of
            diffusers' ``model.save_lora_adapter``).
        metadata: extra header entries (e.g. the recipe); non-string values are stored as JSON.

    Returns:
        The path written.

    Raises:
        InputError: the path does not end in ``.safetensors``, or no such adapter.
        ValueError: a metadata key is one of the reserved ``format`` / ``lora_adapter_metadata``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    elif path.suffix != ".safetensors":
        raise InputError("a LoRA file is written as .safetensors; give a name ending in .safetensors", path)
    _, root, layers = _adapter_layers(model, adapter_name)
    tensors = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model, adapter_name, prefix).items()}
    config = {_join(prefix, k): v for k, v in _config_dict(root, layers, adapter_name).items()}
    header = {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)}
    for key, value in (metadata or {}).items():
        if key in header:
            raise ValueError(f"metadata key {key!r} is reserved")
        header[str(key)] = value if isinstance(value, str) else json.dumps(value)
    save_safetensors(tensors, path, metadata=header)
    return path


# ------------------------------------------------------------------------------------------------ reading files
def _read_header(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor] | list[str], dict[str, str]]:
    if not path.is_file():
        raise InputError("LoRA file not found", path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise InputError("only .safetensors LoRA files are read (a pickled checkpoint can run code when loaded); "
                         "convert it to .safetensors first", path)
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            content = {k: f.get_tensor(k) for k in f.keys()} if tensors else list(f.keys())
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = " ".join(str(e).split())
        raise InputError(f"not a readable .safetensors file ({type(e).__name__}: {reason})", path) from e
    return content, header


def _format_of(keys: Sequence[str]) -> str:
    if not keys:
        return "unknown"
    if any(k.startswith(_KOHYA_PREFIXES) for k in keys):
        if any(s in k for k in keys for s in (".hada_", ".lokr_")):
            return "lycoris"
        return "kohya" if any(k.endswith((".lora_down.weight", ".lora_up.weight")) for k in keys) else "unknown"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft" if all(k.startswith("base_model.model.") for k in keys) else "diffusers"
    legacy = (".lora.down.", ".lora.up.", "_lora.down.", "_lora.up.", ".lora_linear_layer.")
    if any(s in k for k in keys for s in legacy):
        return "diffusers_legacy"
    return "unknown"


def detect_lora_format(path: str | os.PathLike) -> str:
    """The key style of a LoRA ``.safetensors`` file: one of ``LORA_FORMATS`` (see the module docstring).

    Reads the header only. A file that holds no LoRA keys is ``"unknown"``.

    Raises:
        InputError: the file is missing, pickled or not safetensors.
    """
    keys, _ = _read_header(Path(path), tensors=False)
    return _format_of(keys)


def _one_line_keys(keys: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _peft_pairs(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {"A": ..., "B": ...}}`` from ``<module>.lora_A.weight`` / ``.lora_B.weight`` keys."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in tensors.items():
        m = re.fullmatch(r"(.+)\.lora_(A|B)\.weight", key)
        if m is None:
            unknown.append(key)
            continue
        pairs.setdefault(m.group(1), {})[m.group(2)] = value
    if unknown:
        raise InputError(f"{len(unknown)} keys are not LoRA A/B weights (LoRA bias, DoRA and the like are not "
                         f"supported): {_one_line_keys(unknown)}", path)
    return pairs


def _legacy_to_peft(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    from diffusers.utils.state_dict_utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    te = {k: v for k, v in tensors.items() if k.startswith("text_encoder")}
    rest = {k: v for k, v in tensors.items() if not k.startswith("text_encoder")}
    try:
        out = convert_unet_state_dict_to_peft(rest)
        if te:
            out.update(convert_state_dict_to_peft(te))
    except ValueError as e:
        raise InputError(f"cannot convert the legacy diffusers LoRA keys ({' '.join(str(e).split())})", path) from e
    return out


def _split_components(pairs: dict[str, dict], prefix: str) -> dict[str, dict[str, dict]]:
    """Sort modules into "model" / "text_encoder" / "text_encoder_2" by their key prefix; unprefixed ones are the
    model's (files from ``model.save_lora_adapter`` have no prefix)."""
    parts: dict[str, dict[str, dict]] = {"model": {}, "text_encoder": {}, "text_encoder_2": {}}
    for name, pair in pairs.items():
        name = name.removeprefix("base_model.model.")
        for component in ("text_encoder_2", "text_encoder"):
            if name.startswith(component + "."):
                parts[component][name[len(component) + 1:]] = pair
                break
        else:
            if prefix and name.startswith(prefix + "."):
                name = name[len(prefix) + 1:]
            parts["model"][name] = pair
    return parts


def _header_config(header: dict[str, str], component: str, path: Path) -> dict:
    """The LoraConfig fields diffusers stored for one component (``unet.r`` -> ``r``), or for the whole file when
    they are unprefixed (``model.save_lora_adapter``)."""
    raw = header.get(LORA_ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(f"unreadable {LORA_ADAPTER_METADATA_KEY} in the header ({e})", path) from e
    if not isinstance(meta, dict):
        raise InputError(f"{LORA_ADAPTER_METADATA_KEY} in the header is not a JSON object", path)
    if component and any(k.startswith(component + ".") for k in meta):
        return {k[len(component) + 1:]: v for k, v in meta.items() if k.startswith(component + ".")}
    return {} if any("." in k for k in meta) else meta


def _pattern_value(patterns: dict, name: str, path: Path) -> object | None:
    for key, value in (patterns or {}).items():
        try:  # peft's rule for rank_pattern / alpha_pattern keys
            if re.match(rf"(.*\.)?({key})$", name):
                return value
        except re.error as e:
            raise InputError(f"bad pattern {key!r} in the LoRA metadata ({e})", path) from e
    return None


def _alphas_from_config(pairs: dict[str, dict], config: dict, path: Path) -> None:
    """Fill ``pair["alpha"]`` from diffusers' metadata (alpha = r without it) and check the ranks it states."""
    if config.get("use_dora"):
        raise InputError("DoRA adapters are not supported", path)
    for name, pair in pairs.items():
        if "A" not in pair:
            continue  # an incomplete pair; _checked_pairs reports it
        rank = pair["A"].shape[0]
        expected = _pattern_value(config.get("rank_pattern"), name, path) or config.get("r")
        if expected is not None and int(expected) != rank:
            raise InputError(f"rank mismatch in {name}: the metadata says r={expected} but lora_A has {rank} rows",
                             path)
        alpha = _pattern_value(config.get("alpha_pattern"), name, path) or config.get("lora_alpha") or rank
        if config.get("use_rslora"):
            alpha = alpha * math.sqrt(rank)  # rsLoRA scales by alpha / sqrt(r); as a plain LoRA alpha that is this
        pair["alpha"] = float(alpha)


def _kohya_pairs(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{lora name: {"A", "B", "alpha"?}}`` from the keys ``<lora name>.lora_down.weight`` / ``.lora_up.weight`` /
    ``.alpha``."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in tensors.items():
        lora_name, _, tail = key.partition(".")
        slot = _KOHYA_SLOTS.get(tail)
        if slot is None or not lora_name.startswith(_KOHYA_PREFIXES):
            unknown.append(key)
            continue
        groups.setdefault(lora_name, {})[slot] = value
    if unknown:
        raise InputError(f"{len(unknown)} keys are not kohya LoRA down/up/alpha weights (DoRA, LoHa, LoKr and the "
                         f"like are not supported): {_one_line_keys(unknown)}", path)
    return groups


def _underscore_index(layers: dict[str, nn.Module]) -> dict[str, str | None]:
    """kohya name (module name with ``_`` for ``.``) -> module name; None where two names collide."""
    index: dict[str, str | None] = {}
    for name in layers:
        key = name.replace(".", "_")
        index[key] = None if key in index and index[key] != name else name
    return index


def _ldm_to_diffusers_names(names: list[str], root: nn.Module, path: Path) -> dict[str, str]:
    """kohya names with LDM blocks (``lora_unet_input_blocks_4_1_...``) -> diffusers blocks (``..._down_blocks_1_
    attentions_0_...``), through diffusers' mapping, which needs the UNet's ``layers_per_block``."""
    if not any(b in n for n in names for b in _LDM_BLOCKS):
        return {n: n for n in names}
    config = getattr(root, "config", None)
    if config is None or not hasattr(config, "layers_per_block"):
        raise InputError(f"LDM-style kohya names (input_blocks/middle_block/output_blocks) need a UNet, not a "
                         f"{type(root).__name__}", path)
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    try:  # the mapping moves dict values to renamed keys, so map each name to itself and read the new keys back
        mapped = _maybe_map_sgm_blocks_to_diffusers({n: n for n in names}, config, delimiter="_", block_slice_pos=5)
    except (ValueError, IndexError) as e:
        raise InputError(f"cannot map the LDM-style kohya names to this UNet ({' '.join(str(e).split())})",
                         path) from e
    return {old: new for new, old in mapped.items()}


def _diffusers_kohya_guess(lora_name: str) -> str | None:
    """diffusers' own kohya-name conversion (handles LDM resnet names: in_layers_2 -> conv1, ...)."""
    try:
        from diffusers.loaders.lora_conversion_utils import _convert_unet_lora_key
        from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

        key = _convert_unet_lora_key(f"{lora_name}.lora_down.weight")
        (peft_key,) = convert_unet_state_dict_to_peft({key: None})
    except Exception:  # private diffusers helpers: if they change, only this fallback is lost
        return None
    return peft_key.removesuffix(".lora_A.weight") if peft_key.endswith(".lora_A.weight") else None


def _resolve_kohya(groups: dict[str, dict], strip: str, root: nn.Module, path: Path) -> dict[str, dict]:
    """Map kohya names (with ``strip``, e.g. ``lora_unet_``) to ``root``'s layer names; InputError for the rest."""
    layers = _adaptable_layers(root)
    index = _underscore_index(layers)
    renamed = _ldm_to_diffusers_names(list(groups), root, path) if strip == "lora_unet_" else {n: n for n in groups}
    resolved: dict[str, dict] = {}
    unknown = []
    for lora_name, pair in groups.items():
        new = renamed.get(lora_name, lora_name)
        name = index.get(new[len(strip):])
        if name is None and strip != "lora_unet_":
            name = index.get(new[len(strip):].removeprefix("text_model_"))  # see _drop_text_model
        if name is None and strip == "lora_unet_":
            guess = _diffusers_kohya_guess(new)
            name = guess if guess in layers else None
        if name is None:
            unknown.append(lora_name)
        else:
            resolved[name] = pair
    if unknown:
        raise InputError(f"{len(unknown)} LoRA layers of the file are not in the {type(root).__name__}: "
                         f"{_one_line_keys(unknown)}", path)
    return resolved


def _drop_text_model(pairs: dict[str, dict], text_encoder: nn.Module) -> dict[str, dict]:
    """Files name CLIP layers ``text_model.encoder.layers...``; transformers >= 5's ``CLIPTextModel`` has no
    ``text_model`` level (``encoder.layers...``), so the prefix goes where the model lacks it (as diffusers does)."""
    if hasattr(text_encoder, "text_model"):
        return pairs
    return {n.removeprefix("text_model."): p for n, p in pairs.items()}


def _checked_pairs(pairs: dict[str, dict], layers: dict[str, nn.Module], root: nn.Module,
                   path: Path) -> dict[str, dict]:
    """Check each pair against its layer and give A / B the shapes of peft's lora_A / lora_B for it."""
    unknown = [n for n in pairs if n not in layers]
    if unknown:
        raise InputError(f"{len(unknown)} LoRA layers of the file are not in the {type(root).__name__}: "
                         f"{_one_line_keys(unknown)}", path)
    out = {}
    for name, pair in pairs.items():
        if "A" not in pair or "B" not in pair:
            have = "up/B" if "B" in pair else "down/A"
            raise InputError(f"{name} has only its LoRA {have} weight", path)
        a, b = pair["A"], pair["B"]
        base = _base(layers[name])
        if isinstance(base, nn.Linear):
            # kohya stores SD-1.x proj_in/proj_out (1x1 convs in LDM) as 4-D; as a Linear they are the same matrix.
            a = a.flatten(1) if a.ndim == 4 and a.shape[2:] == (1, 1) else a
            b = b.flatten(1) if b.ndim == 4 and b.shape[2:] == (1, 1) else b
            want_a, want_b = (a.shape[0], base.in_features), (base.out_features, a.shape[0])
        else:
            kh, kw = base.kernel_size
            a = a[:, :, None, None] if a.ndim == 2 and (kh, kw) == (1, 1) else a
            b = b[:, :, None, None] if b.ndim == 2 else b
            want_a, want_b = (a.shape[0], base.in_channels, kh, kw), (base.out_channels, a.shape[0], 1, 1)
        if a.ndim < 2 or b.ndim < 2 or b.shape[1] != a.shape[0]:
            raise InputError(f"rank mismatch in {name}: A (down) is {tuple(a.shape)} but B (up) is {tuple(b.shape)}",
                             path)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise InputError(f"{name}: LoRA weights A {tuple(a.shape)}, B {tuple(b.shape)} do not fit the model's "
                             f"layer (expected A {want_a}, B {want_b}; a LoRA for another base model?)", path)
        alpha = pair.get("alpha")
        alpha = float(alpha.item()) if isinstance(alpha, torch.Tensor) else alpha
        out[name] = {"A": a, "B": b, "alpha": float(a.shape[0]) if alpha is None else float(alpha)}
    return out


def _install(target: nn.Module, pairs: dict[str, dict], adapter_name: str, weight: float) -> list[str]:
    """Inject ``adapter_name`` into ``target``'s root for exactly ``pairs``, copy the weights, join the active set.

    Trainability of existing parameters is kept; the loaded adapter is frozen (``lora_parameters`` to train it)."""
    prefix, root = lora_root(target)
    grads = [(p, p.requires_grad) for p in target.parameters()]
    active = active_lora_adapters(target)
    config = _make_config({n: p["A"].shape[0] for n, p in pairs.items()}, {n: p["alpha"] for n, p in pairs.items()})
    _inject(root, config, adapter_name)
    with torch.no_grad():
        for name, pair in pairs.items():
            layer = root.get_submodule(name)
            layer.lora_A[adapter_name].weight.copy_(pair["A"])
            layer.lora_B[adapter_name].weight.copy_(pair["B"])
    for p, flag in grads:
        p.requires_grad_(flag)
    for p in lora_parameters(target, adapter_name):
        p.requires_grad_(False)
    _activate(target, active + [adapter_name], {adapter_name: weight})
    order = {n: i for i, n in enumerate(_adaptable_layers(root))}
    return [_join(prefix, n) for n in sorted(pairs, key=order.__getitem__)]


def load_lora(
    model: nn.Module,
    path: str | os.PathLike,
    adapter_name: str = "default",
    weight: float = 1.0,
    text_encoder: nn.Module | None = None,
    prefix: str = "unet",
) -> LoadedLora:
    """Load a LoRA file (diffusers, peft, legacy diffusers or kohya keys) as a new adapter of ``model``.

    The adapter joins the active ones with ``weight`` (two loads give the sum of both; ``set_lora`` changes that),
    and is frozen (``requires_grad=False``); nothing else changes trainability. Everything is checked before the
    model is touched, so a bad file leaves the model as it was.

    Args:
        model: a UNet, a ControlNet or a wrapper (layers named as in the image UNet; see ``lora_root``).
        path: the ``.safetensors`` file.
        adapter_name: the new adapter's name (no dots).
        weight: its weight (multiplies alpha / r).
        text_encoder: optional text encoder (e.g. ``CLIPTextModel``) to load the file's ``text_encoder`` /
            ``lora_te_`` layers into, under the same adapter name; without it they are only reported.
        prefix: the component prefix of the model's keys in diffusers files (``"unet"``).

    Returns:
        A ``LoadedLora``: the format, the adapted layers, the text-encoder layers of the file.

    Raises:
        InputError (naming the file): missing, pickled or malformed file; an unknown key style or keys that are no
            layer of the model; a rank mismatch (A vs B, or vs the metadata) or weights that do not fit a layer;
            the adapter name is taken.
    """
    _check_adapter_name(adapter_name)
    path = Path(path)
    tensors, header = _read_header(path, tensors=True)
    fmt = _format_of(list(tensors))
    if fmt == "lycoris":
        raise InputError("LyCORIS LoHa/LoKr files are not supported (plain LoRA only)", path)
    if fmt == "unknown":
        raise InputError(f"no LoRA weights in a known key style (diffusers lora_A/lora_B, kohya lora_down/lora_up); "
                         f"first keys: {_one_line_keys(list(tensors))}", path)
    taken = lora_adapters(model) + (lora_adapters(text_encoder) if text_encoder is not None else [])
    if adapter_name in taken:
        raise InputError(f"the LoRA adapter name {adapter_name!r} is already in use", path)
    _, root = lora_root(model)
    te_root = lora_root(text_encoder)[1] if text_encoder is not None else None

    te_pairs: dict[str, dict] = {}
    te_reported: list[str] = []
    if fmt == "kohya":
        groups = _kohya_pairs(tensors, path)
        unet_groups = {n: g for n, g in groups.items() if n.startswith("lora_unet_")}
        te1 = {n: g for n, g in groups.items() if n.startswith(("lora_te_", "lora_te1_"))}
        te_reported = sorted(n for n in groups if n.startswith(("lora_te_", "lora_te1_", "lora_te2_")))
        pairs = _resolve_kohya(unet_groups, "lora_unet_", root, path)
        if te_root is not None and te1:
            strip = {n: "lora_te1_" if n.startswith("lora_te1_") else "lora_te_" for n in te1}
            for s in set(strip.values()):
                te_pairs.update(_resolve_kohya({n: g for n, g in te1.items() if strip[n] == s}, s, te_root, path))
    else:
        if fmt == "diffusers_legacy":
            tensors = _legacy_to_peft(tensors, path)
        parts = _split_components(_peft_pairs(tensors, path), prefix)
        pairs = parts["model"]
        _alphas_from_config(pairs, _header_config(header, prefix, path), path)
        te_reported = sorted([f"text_encoder.{n}" for n in parts["text_encoder"]]
                             + [f"text_encoder_2.{n}" for n in parts["text_encoder_2"]])
        if te_root is not None and parts["text_encoder"]:
            te_pairs = parts["text_encoder"]
            _alphas_from_config(te_pairs, _header_config(header, "text_encoder", path), path)
            te_pairs = _drop_text_model(te_pairs, te_root)

    if not pairs and not te_pairs:
        raise InputError(f"no LoRA layers for the {type(root).__name__} in the file"
                         + (" (only text-encoder layers: pass text_encoder= to load them)" if te_reported else ""),
                         path)
    pairs = _checked_pairs(pairs, _adaptable_layers(root), root, path)
    if te_root is not None and te_pairs:
        te_pairs = _checked_pairs(te_pairs, _adaptable_layers(te_root), te_root, path)

    modules = _install(model, pairs, adapter_name, float(weight)) if pairs else []
    te_loaded = bool(te_pairs)
    if te_loaded:
        _install(text_encoder, te_pairs, adapter_name, float(weight))
    if te_reported and not te_loaded:
        log.warning("%s: %d text-encoder LoRA layers not loaded (pass text_encoder= to load them)", path,
                    len(te_reported))
    elif te_reported and len(te_pairs) < len(te_reported):
        log.warning("%s: %d text_encoder_2 LoRA layers not loaded (SDXL second text encoder)", path,
                    len(te_reported) - len(te_pairs))
    return LoadedLora(adapter_name=adapter_name, format=fmt, path=str(path), modules=modules,
                      text_encoder_modules=te_reported, text_encoder_loaded=te_loaded)
