"""Model references (local folder, Hugging Face id, bundled name), SD-1.5-layout loading, device/dtype/offload plan.

DESIGN.md "Weights": a model reference is a local directory, a Hugging Face id (used only when the machine may go
online -- ``HF_HUB_OFFLINE`` unset -- or when the id is already in the local HF cache), or the name of a model
bundled under ``dancegen/assets/models/``. Nothing downloads silently: ``resolve_model`` never touches the network
itself, and a missing model is a ``MissingWeightsError`` that says what is missing, where it was looked for and how
to get it. GPU runs use half precision (bf16 where supported, else fp16), VAE slicing and optional model CPU offload;
CPU runs use fp32 (house-style §5).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dancegen.core.components import SD15Components  # noqa: F401  (re-exported)
from dancegen.errors import InputError, MissingWeightsError
from dancegen.runtime import (
    BUNDLED_ROOT,  # noqa: F401  (re-exported: the methods import it from here)
    downloads_allowed,
    hub_offline_mode,
)

log = logging.getLogger(__name__)

# kind -> (default Hugging Face id, required entries of the folder layout, what it is)
MODEL_KINDS: dict[str, tuple[str | None, tuple[tuple[str, ...], ...], str]] = {
    "sd-image-variations": ("lambdalabs/sd-image-variations-diffusers",
                            (("unet/config.json",), ("vae/config.json",), ("scheduler/scheduler_config.json",),
                             ("image_encoder/config.json",)),
                            "SD-1.x image-variations pipeline folder (unet/, vae/, scheduler/, image_encoder/)"),
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5",
             (("unet/config.json",), ("vae/config.json",), ("scheduler/scheduler_config.json",),
              ("image_encoder/config.json", "text_encoder/config.json")),
             "SD-1.5-layout folder (unet/, vae/, scheduler/, and image_encoder/ or text_encoder/)"),
    "controlnet-openpose": ("lllyasviel/sd-controlnet-openpose", (("config.json",),), "ControlNet folder"),
    "unet": (None, (("config.json",),), "diffusers model folder (config.json + weights)"),
    "any": (None, (), "model folder"),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points.

    Attributes:
        ref: the reference as given.
        source: "local" (a folder), "bundled" (under the bundled root), "hub-cache" (a snapshot already in the local
            HF cache) or "hub" (an id that ``from_pretrained`` will download).
        location: folder path (local / bundled / hub-cache) or hub id (hub).
        kind: the model kind checked (``MODEL_KINDS``).
    """

    ref: str
    source: str
    location: str
    kind: str

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _layout_problem(folder: Path, kind: str) -> str | None:
    """None if ``folder`` has the layout of ``kind``, else what is missing."""
    required = MODEL_KINDS[kind][1]
    for alternatives in required:
        if not any((folder / a).is_file() for a in alternatives):
            return "missing " + " or ".join(alternatives)
    return None


def _hub_cache_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        return None
    try:
        with hub_offline_mode():  # a cache lookup: not even the request headers' registry fetch
            return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed id
        return None


def resolve_model(
    ref: str | os.PathLike | None,
    kind: str = "any",
    bundled_root: str | os.PathLike | None = None,
    allow_download: bool | None = None,
) -> ResolvedModel:
    """Resolve a model reference: local folder, then bundled name, then HF cache, then (online only) hub id.

    Args:
        ref: a folder path, a single-file SD-1.5 checkpoint (``.safetensors``, or a tensors-only ``.ckpt``/``.pt``,
            in the original LDM layout; kinds "sd15" and "any"), a bundled model name, or a Hugging Face id
            ("org/name"). None uses the kind's default hub id (when it has one).
        kind: one of ``MODEL_KINDS``; the folder layout is checked against it.
        bundled_root: folder of bundled models (default ``dancegen/assets/models``).
        allow_download: permit returning a bare hub id for ``from_pretrained`` to download (only when
            ``HF_HUB_OFFLINE`` is not set). None: only when $DANCEGEN_ALLOW_DOWNLOAD is set to a true value (the
            CLI's ``--allow-download`` passes True). Nothing downloads silently.

    Returns:
        A ``ResolvedModel``; ``source`` "single-file" (``location`` the file) for a single-file checkpoint.

    Raises:
        MissingWeightsError: nothing usable found; the message names the model, every place looked in, and the
            command that fetches it.
        InputError: ``ref`` is a folder that exists but does not have the expected layout, a file where the kind
            needs a folder (a single file has no image encoder for "sd-image-variations"), a ``.safetensors`` file
            that is not an SD-1.x checkpoint, or ``kind`` is unknown.
    """
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
    if allow_download is None:
        allow_download = downloads_allowed()
    default_hub, _, what = MODEL_KINDS[kind]
    ref_s = os.fspath(ref) if ref is not None else default_hub
    if ref_s is None:
        raise MissingWeightsError(f"no {what} given and kind {kind!r} has no default; pass --model PATH")
    looked: list[str] = []

    path = Path(ref_s).expanduser()
    looked.append(f"local path {path}")
    if path.exists():
        if path.is_file() and kind in ("sd15", "sd-image-variations", "any"):
            from dancegen.core.single_file import SINGLE_FILE_SUFFIXES, check_sd15_single_file

            if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                if kind == "sd-image-variations":
                    raise InputError("a single-file checkpoint has no image encoder (CLIP vision tower); "
                                     f"sd-image-variations needs a {what}", path=path)
                try:
                    check_sd15_single_file(path)  # the header only: a LoRA or SDXL file fails here, not later
                except InputError:
                    if kind == "sd15":
                        raise
                else:
                    return ResolvedModel(ref_s, "single-file", str(path.resolve()), kind)
        if not path.is_dir() and kind != "any":
            raise InputError(f"expected a {what}, got a file", path=path)
        problem = _layout_problem(path, kind)
        if problem:
            raise InputError(f"not a {what}: {problem}", path=path)
        return ResolvedModel(ref_s, "local", str(path.resolve()), kind)

    root = Path(bundled_root) if bundled_root is not None else BUNDLED_ROOT
    if not path.is_absolute() and "/" not in ref_s and os.sep not in ref_s:  # a bundled model name
        cand = root / ref_s
        looked.append(f"bundled models {root}")
        if cand.is_dir():
            problem = _layout_problem(cand, kind)
            if problem:
                raise InputError(f"bundled model is not a {what}: {problem}", path=cand)
            return ResolvedModel(ref_s, "bundled", str(cand.resolve()), kind)

    if _HUB_ID.match(ref_s):
        looked.append("the local Hugging Face cache")
        snap = _hub_cache_snapshot(ref_s)
        if snap is not None and _layout_problem(snap, kind) is None:
            return ResolvedModel(ref_s, "hub-cache", str(snap), kind)
        if allow_download and not hub_offline():
            log.info("model %s is not local; diffusers will download it from the Hugging Face Hub", ref_s)
            return ResolvedModel(ref_s, "hub", ref_s, kind)
        looked.append("the Hugging Face Hub (skipped: HF_HUB_OFFLINE is set)" if hub_offline()
                      else "the Hugging Face Hub (skipped: downloads not allowed)")

    hub = ref_s if _HUB_ID.match(ref_s) else default_hub
    how = (f"download it with `hf download {hub} --local-dir PATH` and pass --model PATH, or let "
           "dancegen fetch it with --allow-download (or DANCEGEN_ALLOW_DOWNLOAD=1)" if hub
           else "pass --model PATH pointing at a local copy")
    raise MissingWeightsError(f"{what} {ref_s!r} not found; looked in: {'; '.join(looked)}; {how}")


def load_sd15_components(
    path: str | os.PathLike | ResolvedModel,
    dtype: Any = None,
    device: Any = None,
    load_text_encoder: bool = True,
    tokenizer: Any = None,
) -> SD15Components:
    """Build the pipeline parts from an SD-1.5-layout folder, a single-file checkpoint, or a resolved hub id.

    Args:
        path: folder with ``unet/``, ``vae/``, ``scheduler/`` and ``image_encoder/`` and/or ``text_encoder/`` (+
            ``tokenizer/``), a single-file SD-1.5 checkpoint (``core.single_file.load_single_file_sd15``), or a
            ``ResolvedModel`` (a "hub" one is downloaded here, explicitly, by diffusers).
        dtype: torch dtype for the models (None: as stored, i.e. fp32 for the usual checkpoints; a single file:
            fp32).
        device: device to move the models to (None: stay on CPU).
        load_text_encoder: also load ``text_encoder/`` + ``tokenizer/`` when present (a single file: its text
            encoder, with a tokenizer from ``tokenizer`` or the local Hugging Face cache).
        tokenizer: single files only (they carry no vocabulary): a tokenizer folder or ``CLIPTokenizer``; None looks
            in the local Hugging Face cache. A folder always uses its own ``tokenizer/``.

    Returns:
        ``SD15Components`` (all models in eval mode, gradients off).

    Raises:
        MissingWeightsError: a required subfolder is missing, or a single file's tokenizer is not available.
        InputError: a single file that is not an SD-1.x checkpoint.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    if isinstance(path, ResolvedModel):
        single = path.location if path.source == "single-file" else None
    else:
        single = path if Path(path).is_file() else None
    if single is not None:
        from dancegen.core.single_file import load_single_file_sd15

        return load_single_file_sd15(single, dtype=dtype, tokenizer=tokenizer, device=device,
                                     load_text_encoder=load_text_encoder)
    if isinstance(path, ResolvedModel):
        if path.source == "hub":
            from huggingface_hub import snapshot_download

            log.info("downloading %s from the Hugging Face Hub", path.location)
            folder = Path(snapshot_download(path.location))
        else:
            folder = Path(path.location)
    else:
        folder = Path(path)
    problem = _layout_problem(folder, "sd15") if folder.is_dir() else "folder does not exist"
    if problem:
        raise MissingWeightsError(
            f"SD-1.5-layout model incomplete: {problem} (needs unet/, vae/, scheduler/ and image_encoder/ or "
            f"text_encoder/); get one with `hf download {MODEL_KINDS['sd-image-variations'][0]} "
            f"--local-dir PATH`", path=folder)
    kw = {"dtype": dtype} if dtype is not None else {}
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    comps = SD15Components(unet=unet, vae=vae, scheduler=scheduler, path=str(folder))
    if (folder / "image_encoder" / "config.json").is_file():
        from transformers import CLIPVisionModelWithProjection

        comps.image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", **kw)
    if load_text_encoder and (folder / "text_encoder" / "config.json").is_file():
        from transformers import CLIPTextModel, CLIPTokenizer

        comps.text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kw)
        if (folder / "tokenizer").is_dir():
            comps.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    for m in comps.models().values():
        m.eval().requires_grad_(False)
        if device is not None:
            m.to(device)
    return comps


@dataclass
class RuntimePlan:
    """Device, precision and memory switches for a pipeline, recorded next to its outputs.

    Attributes:
        device: "cpu", "cuda", "cuda:N" or "mps".
        dtype: torch dtype for the denoiser / VAE.
        cpu_offload: model CPU offload (each model moves to the GPU only while it runs; CUDA only).
        vae_slicing: decode the VAE one frame at a time.
        notes: why a requested switch was changed.
    """

    device: str
    dtype: Any
    cpu_offload: bool = False
    vae_slicing: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"device": self.device, "dtype": str(self.dtype).replace("torch.", ""), "cpu_offload": self.cpu_offload,
                "vae_slicing": self.vae_slicing, "notes": list(self.notes)}


DTYPES = ("auto", "fp32", "fp16", "bf16")


def plan_runtime(device: str = "auto", dtype: str = "auto", cpu_offload: bool = False,
                 vae_slicing: bool | None = None) -> RuntimePlan:
    """Pick device and dtype: fp32 on CPU; on CUDA bf16 where supported, else fp16; record offload/slicing.

    Args:
        device: "auto" | "cpu" | "cuda" | "cuda:N" | "mps" (``dancegen.runtime.resolve_device``).
        dtype: "auto" | "fp32" | "fp16" | "bf16".
        cpu_offload: request model CPU offload (ignored, with a note, off CUDA).
        vae_slicing: None = on for CUDA/MPS, off on CPU.

    Raises:
        InputError: unknown dtype, or half precision requested on CPU.
    """
    import torch

    from dancegen.runtime import resolve_device

    if dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dev = resolve_device(device)
    notes: list[str] = []
    cuda = dev.startswith("cuda")
    if dtype == "auto":
        if cuda:
            td = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif dev == "mps":
            td = torch.float16
        else:
            td = torch.float32
    else:
        td = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        if dev == "cpu" and td is torch.float16:
            raise InputError("--dtype fp16 is not supported on CPU (use fp32 or bf16)")
    if cpu_offload and not cuda:
        notes.append(f"cpu_offload ignored on {dev}")
        cpu_offload = False
    if vae_slicing is None:
        vae_slicing = dev != "cpu"
    return RuntimePlan(device=dev, dtype=td, cpu_offload=cpu_offload, vae_slicing=vae_slicing, notes=notes)


def apply_runtime(plan: RuntimePlan, models: dict[str, Any], vae: Any = None,
                  offload_order: tuple[str, ...] = ("image_encoder", "text_encoder", "controlnet", "unet", "vae")
                  ) -> list:
    """Move ``models`` to the plan's device/dtype, or chain model CPU offload hooks; enable VAE slicing.

    Args:
        plan: from ``plan_runtime``.
        models: name -> torch module (e.g. ``SD15Components.models()`` plus the video UNet / ControlNets).
        vae: the VAE to slice (default ``models.get("vae")``).
        offload_order: the order models run in a denoising call; each offload hook hands the GPU to the next one.

    Returns:
        The accelerate offload hooks (empty without offload).
    """
    hooks: list = []
    for m in models.values():
        m.to(dtype=plan.dtype)
    if plan.cpu_offload:
        from accelerate import cpu_offload_with_hook

        prev = None
        names = [n for n in offload_order if n in models] + [n for n in models if n not in offload_order]
        for n in names:
            _, prev = cpu_offload_with_hook(models[n], plan.device, prev_module_hook=prev)
            hooks.append(prev)
    else:
        for m in models.values():
            m.to(plan.device)
    vae = vae if vae is not None else models.get("vae")
    if vae is not None and plan.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    return hooks
