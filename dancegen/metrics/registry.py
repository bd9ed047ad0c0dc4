"""The metric catalogue behind `dancegen evaluate`: names, what each needs, its protocol and how it is computed.

Every metric of the five papers' tables (specs/*.md "## 4. Metrics"; issue #3) has one entry. Kinds:
- `pair`: one score per video from a pred/gt pair (mean over frames), averaged over videos;
- `single`: one score per video from the prediction alone (plus audio / prompt / poses), averaged over videos;
- `set`: features per video, then one Fréchet distance between the pred and gt feature sets.
A metric whose implementing module is not importable (a module another part of the project has not shipped) is
simply not listed. Nothing here imports torch; the compute functions import what they need when they run.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dancegen.errors import InputError


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    Attributes:
        name: CLI name (kebab-case).
        kind: "pair", "single" or "set" (module docstring).
        module: Module whose presence makes the metric available.
        compute: Per-video function `(ctx, item) -> float` (pair/single) or `(ctx, item) -> {"pred": feats,
            "gt": feats}` (set).
        needs: Extra inputs: any of "gt", "audio", "prompt", "poses".
        higher_is_better: Direction, for the table.
        weights: Registry ids of the weight files it loads (see dancegen.metrics.weights).
        protocol: Fixed protocol facts written next to the score.
        description: One line for `--help` and the report.
    """

    name: str
    kind: str
    module: str
    compute: Callable
    needs: tuple[str, ...] = ()
    higher_is_better: bool = False
    weights: tuple[str, ...] = ()
    protocol: dict = field(default_factory=dict)
    description: str = ""


def _mean(x) -> float:
    arr = np.asarray(x, dtype=np.float64)
    return float(arr.mean()) if arr.size else float("nan")


def _mod(name: str):
    return importlib.import_module(name)


# ---- weight-free metrics (dancegen.metrics.image / noref / consistency / rhythm / pose_metrics) -------------------
def _image(fn: str, **kw):
    def compute(ctx, item):
        return _mean(getattr(_mod("dancegen.metrics.image"), fn)(item.pred, item.gt, **kw))
    return compute


def _noref(fn: str, region: str = "frame"):
    def compute(ctx, item):
        mask = None if region == "frame" else ctx.masks_for(item)
        return _mean(getattr(_mod("dancegen.metrics.noref"), fn)(item.pred, mask=mask, region=region))
    return compute


_REGION_RULE = {
    "body": "bounding box of the person mask, non-body pixels filled (dancegen.metrics.noref.region_image)",
    "background": "full frame with body pixels filled (dancegen.metrics.noref.region_image)",
}


def _consistency(fn: str):
    def compute(ctx, item):
        return _mean(getattr(_mod("dancegen.metrics.consistency"), fn)(item.pred))
    return compute


def _h_mse(ctx, item):
    return _mean(_mod("dancegen.metrics.consistency").h_mse(item.pred, ctx.iuv_for(item)))


def _keypoints_and_music_beats(ctx, item):
    rhythm = _mod("dancegen.metrics.rhythm")
    audio, sr = ctx.audio_for(item)  # first: a silent or missing track is refused before poses are estimated
    poses = ctx.pred_poses(item)
    kps = poses.keypoints if hasattr(poses, "keypoints") else np.asarray(poses)
    return kps, rhythm.music_beats(audio, sr, item.fps)


def _bas(ctx, item):
    rhythm = _mod("dancegen.metrics.rhythm")
    kps, music = _keypoints_and_music_beats(ctx, item)
    motion = rhythm.motion_beats_from_keypoints(kps, item.fps)
    return float(rhythm.beat_alignment_score(motion, music, direction="music"))


def _mm_align(ctx, item):
    kps, music = _keypoints_and_music_beats(ctx, item)
    return float(_mod("dancegen.metrics.rhythm").mm_align_2d(kps, music, item.fps))


def _av_align(ctx, item):
    audio, sr = ctx.audio_for(item)
    return float(_mod("dancegen.metrics.rhythm").av_align(item.pred, audio, sr, item.fps))


def _pose_mse(fn: str):
    def compute(ctx, item):
        pred_poses = ctx.pred_poses(item)
        driving = ctx.driving_poses(item)
        return _mean(getattr(_mod("dancegen.metrics.pose_metrics"), fn)(pred_poses, driving))
    return compute


# ---- network metrics (dancegen.metrics.backbones) -----------------------------------------------------------------
def _lpips(key: str):
    def compute(ctx, item):
        return _mean(ctx.backbone(key)(item.pred, item.gt))
    return compute


def _lpips_adjacent(ctx, item):
    if len(item.pred) < 2:
        return float("nan")
    return _mean(ctx.backbone("lpips")(item.pred[1:], item.pred[:-1]))


def _features(key: str, with_gt: bool = True):
    def compute(ctx, item):
        net = ctx.backbone(key)
        pred = net(item.pred)
        if not with_gt:
            return {"pred": pred, "gt": None}
        same = item.gt.shape == item.pred.shape and np.array_equal(item.gt, item.pred)
        return {"pred": pred, "gt": pred if same else net(item.gt)}
    return compute


def _clip_text(ctx, item):
    from dancegen.metrics.backbones.clip import clip_text_score

    if not item.prompt:
        raise InputError("clip-text needs a prompt (--prompt TEXT)", item.pred_path)
    return clip_text_score(ctx.backbone("clip"), item.pred, item.prompt)


def _clip_frame(ctx, item):
    from dancegen.metrics.backbones.clip import clip_adjacent_similarity

    return clip_adjacent_similarity(ctx.backbone("clip"), item.pred)


def _clip_frame_region(region: str):
    def compute(ctx, item):
        from dancegen.metrics.backbones.clip import clip_adjacent_similarity

        return clip_adjacent_similarity(ctx.backbone("clip"), item.pred, ctx.masks_for(item), region)
    return compute


def _clip_music(ctx, item):
    from dancegen.metrics.backbones.wav2clip import clip_music_score

    audio, sr = ctx.audio_for(item)
    return clip_music_score(item.pred, audio, sr, ctx.backbone("cs-clip"), ctx.backbone("wav2clip"), fps=item.fps)


_I = "dancegen.metrics.image"
_N = "dancegen.metrics.noref"
_C = "dancegen.metrics.consistency"
_R = "dancegen.metrics.rhythm"
_B = "dancegen.metrics.backbones.features"
_FD = "dancegen.metrics.frechet"

_ALL: tuple[MetricSpec, ...] = (
    MetricSpec("psnr", "pair", _I, _image("psnr", mode="correct"), ("gt",), True,
               protocol={"mode": "correct", "scale": "0-255 float64, per frame then mean"},
               description="PSNR in dB, float64 MSE per frame"),
    MetricSpec("psnr-disco", "pair", _I, _image("psnr", mode="disco"), ("gt",), True,
               protocol={"mode": "disco", "note": "uint8 wrap-around MSE of DisCo's code (TikTok tables)"},
               description="PSNR as the TikTok tables computed it (DisCo legacy uint8 MSE)"),
    MetricSpec("ssim", "pair", _I, _image("ssim", mode="tiktok"), ("gt",), True,
               protocol={"mode": "tiktok", "note": "cv2 grayscale, skimage default 7x7 window"},
               description="SSIM, DisCo/TikTok protocol"),
    MetricSpec("ssim-gaussian", "pair", _I, _image("ssim", mode="gaussian"), ("gt",), True,
               protocol={"mode": "gaussian", "note": "RGB, 11x11 Gaussian sigma 1.5 (Wang et al.)"},
               description="SSIM, Gaussian-window RGB protocol (Dance Any Beat)"),
    MetricSpec("l1", "pair", _I, _image("l1", mode="mean"), ("gt",), False,
               protocol={"mode": "mean", "scale": "[0,1]"}, description="mean absolute error on [0,1]"),
    MetricSpec("l1-tiktok", "pair", _I, _image("l1", mode="tiktok"), ("gt",), False,
               protocol={"mode": "tiktok", "scale": "mean|d| on 0-255 divided by H*W"},
               description="L1 as the TikTok tables computed it"),
    MetricSpec("mse", "pair", _I, _image("mse"), ("gt",), False, protocol={"scale": "0-255"},
               description="mean squared error on 0-255"),
    MetricSpec("lpips", "pair", _B, _lpips("lpips"), ("gt",), False, ("alexnet", "lpips-alex"),
               {"net": "alex", "version": "0.1", "input_range": "[-1,1]"}, "LPIPS v0.1, AlexNet"),
    MetricSpec("lpips-vgg", "pair", _B, _lpips("lpips-vgg"), ("gt",), False, ("vgg16", "lpips-vgg"),
               {"net": "vgg", "version": "0.1", "input_range": "[-1,1]"}, "LPIPS v0.1, VGG16"),
    MetricSpec("lpips-disco", "pair", _B, _lpips("lpips-disco"), ("gt",), False, ("vgg16", "lpips-vgg"),
               {"net": "vgg", "version": "0.1", "input_range": "[0,1] (DisCo quirk: not rescaled)"},
               "LPIPS VGG as DisCo computed it (TikTok tables)"),
    MetricSpec("lpips-adjacent", "single", _B, _lpips_adjacent, (), False, ("alexnet", "lpips-alex"),
               {"net": "alex", "pairs": "adjacent generated frames"}, "LPIPS-N: LPIPS between adjacent frames"),
    MetricSpec("fid", "set", _FD, _features("inception"), ("gt",), False, ("inception-fid",),
               {"features": "InceptionV3 pool3 2048-d per frame", "set": "all frames of all videos"},
               "FID over all frames (pytorch-fid Inception)"),
    MetricSpec("fvd", "set", _FD, _features("i3d-styleganv"), ("gt",), False, ("i3d-styleganv",),
               {"backbone": "TF-Hub I3D torchscript", "features": "400-d logits", "clip_frames": 16,
                "values": "[-1,1]", "reference": "StyleGAN-V / TF FVD"}, "FVD, StyleGAN-V protocol"),
    MetricSpec("fvd-videogpt", "set", _FD, _features("i3d-videogpt"), ("gt",), False, ("i3d-400",),
               {"backbone": "i3d_pretrained_400 (BN eps 1e-5)", "features": "400-d logits", "clip_frames": 16,
                "resize": "short side 224 + centre crop"}, "FVD, VideoGPT/TATS protocol"),
    MetricSpec("fvd-disco", "set", _FD, _features("i3d-disco"), ("gt",), False, ("i3d-400",),
               {"backbone": "i3d_pretrained_400 (BN eps 1e-3)", "features": "400-d logits, mean over segments",
                "preprocess": "disco-gif3fps: 16-frame segments through GIF, PIL bicubic 224, /127.5-1"},
               "FVD as DisCo computed it (FVD-3DInception)"),
    MetricSpec("fid-vid", "set", _FD, _features("resnet3d"), ("gt",), False, ("resnet3d-50",),
               {"backbone": "3D ResNet-50 Kinetics", "features": "2048-d, mean over 16-frame segments",
                "preprocess": "GIF, PIL bicubic 112, minus ActivityNet pixel mean"},
               "FID-VID as DisCo computed it (FVD-3DRN50)"),
    MetricSpec("niqe", "single", _N, _noref("niqe"), (), False, protocol={"region": "frame"},
               description="NIQE per frame (lower is better)"),
    MetricSpec("brisque", "single", _N, _noref("brisque"), (), False, protocol={"region": "frame"},
               description="BRISQUE per frame (lower is better)"),
    *(MetricSpec(f"{fn}-{region}", "single", _N, _noref(fn, region), ("masks",), False,
                 protocol={"region": region, "rule": _REGION_RULE[region]},
                 description=f"{fn.upper()} per frame on the {region} region (lower is better)")
      for fn in ("niqe", "brisque") for region in ("body", "background")),
    MetricSpec("frame-mse", "single", _C, _consistency("adjacent_frame_mse"), (), False,
               protocol={"pairs": "adjacent", "scale": "0-255"}, description="MSE between adjacent frames"),
    MetricSpec("frame-l1", "single", _C, _consistency("adjacent_frame_l1"), (), False,
               protocol={"pairs": "adjacent", "scale": "0-255"}, description="L1 between adjacent frames"),
    MetricSpec("warping-error", "single", _C, _consistency("warping_error"), (), False,
               description="flow warping error between adjacent frames"),
    MetricSpec("h-mse", "single", _C, _h_mse, (), False, description="LatentMan H_MSE over dense correspondences"),
    MetricSpec("clip-text", "single", "transformers", _clip_text, ("prompt",), True, ("clip",),
               {"scale": "100*cos", "frames": "all"}, "CLIP text-frame alignment (x100)"),
    MetricSpec("clip-frame", "single", "transformers", _clip_frame, (), True, ("clip",),
               {"scale": "100*cos", "pairs": "adjacent"}, "CLIP adjacent-frame similarity (x100; TC = /100)"),
    *(MetricSpec(f"clip-frame-{region}", "single", "transformers", _clip_frame_region(region), ("masks",), True,
                 ("clip",), {"scale": "100*cos", "pairs": "adjacent", "region": region,
                             "rule": _REGION_RULE[region] + ", padded to a square with the fill"},
                 f"CLIP adjacent-frame similarity on the {region} region (Dancing Avatar {region.title()} CLIP)")
      for region in ("body", "background")),
    MetricSpec("clip-music", "single", "transformers", _clip_music, ("audio",), True, ("wav2clip", "clip-cs"),
               {"scale": "cos", "clip": "ViT-B/32 (openai/clip-vit-base-patch32)", "frames": "all",
                "video_embedding": "renormalised mean of L2-normalised frame embeddings",
                "audio": "mono, first F/fps seconds, librosa.resample to 16 kHz, Wav2CLIP clip-level"},
               "Dance Any Beat CS: cos(CLIP video, Wav2CLIP music)"),
    MetricSpec("pose-mse", "single", "dancegen.metrics.pose_metrics", _pose_mse("pose_mse"), ("poses",), False,
               description="MSE between driving poses and poses extracted from the output"),
    MetricSpec("pose-map-mse", "single", "dancegen.metrics.pose_metrics", _pose_mse("pose_map_mse"), ("poses",),
               False, protocol={"maps": "OpenPose drawing at the driving poses' size", "scale": "[0,1]"},
               description="MSE between the OpenPose maps of the driving and the extracted poses"),
    MetricSpec("bas", "single", _R, _bas, ("audio", "poses"), True,
               description="Beat Alignment Score (over music beats)"),
    MetricSpec("mm-align", "single", _R, _mm_align, ("audio", "poses"), True,
               description="Dance Any Beat 2D-MM Align (over kinematic beats)"),
    MetricSpec("av-align", "single", _R, _av_align, ("audio",), True, description="AV-Align (flow peaks vs onsets)"),
)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_metrics() -> dict[str, MetricSpec]:
    """Metrics whose implementing module is present, by name."""
    return {m.name: m for m in _ALL if _importable(m.module)}


def get_metrics(names: list[str] | str) -> list[MetricSpec]:
    """Resolve `["fvd", "psnr"]` or `"fvd,psnr"`; an unknown name is an InputError listing the known ones."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise InputError("no metric given (--metric NAME[,NAME...])")
    known = available_metrics()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [known[n] for n in dict.fromkeys(names)]
