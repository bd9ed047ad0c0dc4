"""`evaluate`: run named metrics over pred/gt videos, write a report that carries the protocol next to every score.

Issue #3 and prior-art.md §4/§5.4: evaluation in this field is hard to reproduce, so each score in the JSON/CSV
report states how it was made: frame count, resize, the backbone file and its SHA-256, the metric's mode, the number
of videos and the dancegen version. Inputs are videos or frame folders; folders of them are paired by name. Work is
cached per (metric, video) under `<report>.cache/`, written atomically, so an interrupted batch resumes where it
stopped and a rerun with the same protocol recomputes nothing (the dancegen.io.batch convention).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.metrics.registry import MetricSpec, get_metrics

SCHEMA = "dancegen.evaluate/1"


@dataclass
class EvalItem:
    """One video (and its ground truth) as the metric functions see it."""

    id: str
    pred_path: Path
    gt_path: Path | None
    pred: np.ndarray | None = None
    gt: np.ndarray | None = None
    fps: float = 30.0
    prompt: str | None = None
    mask: np.ndarray | None = None
    iuv: np.ndarray | None = None
    info: dict = field(default_factory=dict)


# ---- inputs -------------------------------------------------------------------------------------------------------
def _video_entries(path: str | os.PathLike, role: str) -> dict[str, Path]:
    """`{id: path}` of the videos under `path`: a video file, a frame folder, or a folder of either."""
    from dancegen.io.video import is_image_path, is_video_path, list_images

    p = Path(path)
    if p.is_file():
        return {p.stem: p}
    if not p.is_dir():
        raise InputError(f"--{role}: no such file or folder", p)
    subs = {c.stem if c.is_file() else c.name: c for c in sorted(p.iterdir()) if not c.name.startswith(".")
            and ((c.is_file() and is_video_path(c)) or (c.is_dir() and list_images(c)))}
    if subs:
        return subs
    if list_images(p):
        return {p.name: p}
    if any(is_image_path(c) for c in p.iterdir()):
        return {p.name: p}
    raise InputError(f"--{role}: folder holds no videos or frame folders", p)


def pair_inputs(pred: str | os.PathLike, gt: str | os.PathLike | None = None,
                require_gt: bool = False) -> list[tuple[str, Path, Path | None]]:
    """Pair prediction and ground-truth videos by name (a single file on each side pairs regardless of name).

    Raises:
        InputError: gt is required but missing for some predictions (names them), or no names match.
    """
    preds = _video_entries(pred, "pred")
    if gt is None:
        if require_gt:
            raise InputError("these metrics compare with ground truth: pass --gt DIR|VIDEO")
        return [(k, v, None) for k, v in preds.items()]
    gts = _video_entries(gt, "gt")
    if len(preds) == 1 and len(gts) == 1:
        (k, v), (_, g) = next(iter(preds.items())), next(iter(gts.items()))
        return [(k, v, g)]
    missing = [k for k in preds if k not in gts]
    if missing and require_gt:
        raise InputError(f"no ground truth named like {len(missing)} prediction(s) ({', '.join(missing[:5])}) in {gt}")
    return [(k, v, gts.get(k)) for k, v in preds.items()]


def _parse_resize(resize) -> tuple[int, int] | None:
    if resize is None or resize == "":
        return None
    if isinstance(resize, int):
        return (resize, resize)
    if isinstance(resize, str):
        parts = resize.lower().replace(",", "x").split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"--resize must be N or WxH, got {resize!r}") from None
        return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])
    w, h = resize
    return (int(w), int(h))


def _resize_video(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (frames.shape[2], frames.shape[1]) == size:
        return frames
    interp = cv2.INTER_AREA if size[0] < frames.shape[2] else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


def _load_item(item: EvalItem, resize, frames_policy: str, max_frames: int | None) -> None:
    from dancegen.io.video import read_video

    pv = read_video(item.pred_path, max_frames=max_frames)
    item.pred, item.fps = pv.frames, pv.fps
    if item.gt_path is not None:
        gv = read_video(item.gt_path, max_frames=max_frames)
        item.gt = gv.frames
        if len(item.gt) != len(item.pred):
            if frames_policy != "min":
                raise InputError(f"frame counts differ: {item.pred_path} has {len(item.pred)}, {item.gt_path} has "
                                 f"{len(item.gt)} (use --frames min to compare the first min(F) frames)")
            n = min(len(item.gt), len(item.pred))
            item.pred, item.gt = item.pred[:n], item.gt[:n]
        if resize is None and item.gt.shape[1:3] != item.pred.shape[1:3]:
            raise InputError(f"frame sizes differ: {item.pred_path} is {item.pred.shape[2]}x{item.pred.shape[1]}, "
                             f"{item.gt_path} is {item.gt.shape[2]}x{item.gt.shape[1]} (pass --resize WxH)")
    if resize is not None:
        item.pred = _resize_video(item.pred, resize)
        item.gt = None if item.gt is None else _resize_video(item.gt, resize)
    item.info = {"num_frames": int(len(item.pred)), "size": [int(item.pred.shape[2]), int(item.pred.shape[1])],
                 "fps": float(item.fps)}


# ---- context: backbones, weights, side inputs ---------------------------------------------------------------------
class EvalContext:
    """Builds each backbone once, resolves and hashes its weights, and finds per-video side inputs."""

    def __init__(self, weights_dir=None, device="cpu", allow_download=False, random_weights=False, options=None,
                 audio=None, poses=None, pred_poses=None, cache_dir: Path | None = None, masks=None, iuv=None):
        self.weights_dir, self.device, self.allow_download = weights_dir, device, allow_download
        self.masks_source, self.iuv_source = masks, iuv
        self.random_weights = random_weights
        self.options = dict(options or {})
        self.audio, self.poses, self.pred_poses_path = audio, poses, pred_poses
        self.cache_dir = cache_dir
        self._nets: dict[str, object] = {}
        self.weight_info: dict[str, dict] = {}

    # weights -------------------------------------------------------------------------------------------------------
    def weight(self, name: str):
        """Resolved path of a registered weight file, or None with random weights (recorded either way)."""
        if self.random_weights:
            self.weight_info[name] = {"name": name, "file": None, "sha256": None, "note": "random init (testing)"}
            return None
        from dancegen.metrics.weights import resolve_weight

        rw = resolve_weight(name, weights_dir=self.weights_dir, allow_download=self.allow_download)
        self.weight_info[name] = rw.protocol()
        return rw.path

    def weights_protocol(self, names) -> list[dict]:
        return [self.weight_info.get(n) or self._peek_weight(n) for n in names]

    def _peek_weight(self, name: str) -> dict:
        if name == "clip":
            return self.weight_info.get("clip", {"name": "clip", "model": self.options.get("clip_model")})
        if name == "clip-cs":
            from dancegen.metrics.backbones.wav2clip import CS_CLIP_MODEL

            model = self.options.get("cs_clip_model") or CS_CLIP_MODEL
            return self.weight_info.get("clip-cs", {"name": "clip-cs", "model": str(model)})
        self.weight(name)
        return self.weight_info[name]

    # backbones -----------------------------------------------------------------------------------------------------
    def backbone(self, key: str):
        """The network `key` of this context, built once (random-init ones seeded, see `_cpu_seed`)."""
        if key not in self._nets:
            with _cpu_seed(0):  # only matters for random_weights: makes random-init runs reproducible
                self._nets[key] = self._build(key)
        return self._nets[key]

    def _build(self, key: str):
        from dancegen.metrics.backbones import features as ft

        o, dev = self.options, self.device
        if key in ("lpips", "lpips-vgg", "lpips-disco"):
            net, trunk, lin = ("alex", "alexnet", "lpips-alex") if key == "lpips" else ("vgg", "vgg16", "lpips-vgg")
            return ft.LPIPSScorer(net, self.weight(trunk), self.weight(lin), dev,
                                  "[0,1]" if key == "lpips-disco" else "[-1,1]")
        if key == "inception":
            return ft.InceptionExtractor(self.weight("inception-fid"), dev, o.get("fid_resize", "pytorch-fid"))
        if key == "i3d-styleganv":
            return ft.I3DExtractor("styleganv", self.weight("i3d-styleganv"), dev, o.get("fvd_resize"),
                                   o.get("fvd_clips", "first"), o.get("clip_frames", 16), o.get("fvd_stride"))
        if key in ("i3d-videogpt", "i3d-disco"):
            return ft.I3DExtractor(key.split("-")[1], self.weight("i3d-400"), dev, o.get("fvd_resize"),
                                   o.get("fvd_clips", "first"), o.get("clip_frames", 16), o.get("fvd_stride"))
        if key == "resnet3d":
            return ft.ResNet3DExtractor(self.weight("resnet3d-50"), dev, o.get("clip_frames", 16))
        if key == "clip":
            from dancegen.metrics.backbones.clip import DEFAULT_CLIP, ClipEmbedder

            model = o.get("clip_model") or DEFAULT_CLIP
            emb = ClipEmbedder(model, dev, allow_download=self.allow_download)
            self.weight_info["clip"] = {"name": "clip", "model": str(model), "sha256": _dir_weights_hash(model)}
            return emb
        if key == "cs-clip":
            # CS (clip-music) needs ViT-B/32, the space Wav2CLIP lives in: its own option, not `clip_model` (whose
            # default ViT-L/14 is a different space).
            from dancegen.metrics.backbones.clip import ClipEmbedder
            from dancegen.metrics.backbones.wav2clip import CS_CLIP_MODEL

            model = o.get("cs_clip_model") or CS_CLIP_MODEL
            emb = ClipEmbedder(model, dev, allow_download=self.allow_download)
            self.weight_info["clip-cs"] = {"name": "clip-cs", "model": str(model), "sha256": _dir_weights_hash(model)}
            return emb
        if key == "wav2clip":
            from dancegen.metrics.backbones.wav2clip import load_wav2clip

            return load_wav2clip(self.weight("wav2clip"), dev)  # random init when weight() gives None
        raise KeyError(key)

    # side inputs ---------------------------------------------------------------------------------------------------
    def audio_for(self, item: EvalItem) -> tuple[np.ndarray, int]:
        """The music of an item (``--audio`` file or folder, else the video's own track), refused when silent: a
        rhythm score of silence would be a meaningless 0."""
        from dancegen.io.audio import is_silent

        audio, sr, where = self._read_audio(item)
        if is_silent(audio):
            raise InputError("the music is silent (below -60 dBFS): a rhythm metric needs audible music", where)
        return audio, sr

    def _read_audio(self, item: EvalItem) -> tuple[np.ndarray, int, Path]:
        """``(samples, sample rate, the file they came from)``."""
        from dancegen.io.audio import read_audio

        src = self.audio
        if src is not None and Path(src).is_dir():
            cands = [p for p in Path(src).iterdir() if p.stem == item.id]
            if not cands:
                raise InputError(f"no audio named {item.id}.* in the --audio folder", src)
            src = cands[0]
        if src is None:
            from dancegen.io.video import read_video

            v = read_video(item.pred_path, max_frames=1, with_audio=True)
            if v.audio is None:
                raise InputError("this metric needs music: pass --audio WAV (the video has no audio track)",
                                 item.pred_path)
            return v.audio.mean(axis=1).astype(np.float32), int(v.sample_rate), Path(item.pred_path)
        return (*read_audio(src, sr=None, mono=True), Path(src))

    def _pose_source(self, root, item: EvalItem, what: str) -> Path:
        root = Path(root)
        if (root / "poses.npz").is_file():
            return root / "poses.npz"
        for cand in (root / item.id, root / f"{item.id}.npz", root / item.id / "poses.npz"):
            if cand.exists():
                return cand / "poses.npz" if (cand / "poses.npz").is_file() else cand
        if any(root.glob("*.json")):
            return root
        raise InputError(f"no {what} poses for {item.id} (looked for {item.id}/ or {item.id}.npz)", root)

    def _side_path(self, root, item: EvalItem, what: str, suffixes: tuple[str, ...]) -> Path:
        """A per-video side input under `root`: root itself when it is one (frame folder / file), else
        root/<id>/ or root/<id><suffix>."""
        from dancegen.io.video import list_images

        root = Path(root)
        if root.is_file() or (root.is_dir() and list_images(root)):
            return root
        for cand in (root / item.id, *(root / f"{item.id}{s}" for s in suffixes)):
            if cand.exists():
                return cand
        raise InputError(f"no {what} for {item.id} (looked for {item.id}/ or {item.id}{suffixes[0]})", root)

    def masks_for(self, item: EvalItem) -> np.ndarray:
        """`(F, H, W)` bool person masks of the prediction: given as an array, a mask frame folder (or one per
        video id), or "auto" (BlazePose segmentation of the prediction, cached in the report folder)."""
        if item.mask is not None:
            return np.asarray(item.mask) > 0
        src = self.masks_source
        if src is None:
            raise InputError("body/background metrics need person masks: pass --masks DIR or --masks auto")
        if isinstance(src, np.ndarray):
            masks = src
        else:
            from dancegen.io.video import read_video

            if str(src) == "auto":
                if self.cache_dir is None:
                    raise InputError("--masks auto needs an output report (-o) to cache the extracted masks")
                from dancegen.pose.extract import extract_poses

                out = self.cache_dir / "masks" / item.id
                extract_poses(item.pred_path, out, write_maps=False, write_video=False, write_masks=True,
                              weights_dir=self.weights_dir)
                path = out / "masks"
            else:
                path = self._side_path(src, item, "masks", (".mp4",))
            masks = read_video(path).frames[..., 0] > 127
        if masks.shape[0] < item.pred.shape[0] or masks.shape[1:3] != item.pred.shape[1:3]:
            raise InputError(f"masks are {masks.shape[0]} x {masks.shape[2]}x{masks.shape[1]}, the video "
                             f"{item.pred.shape[0]} x {item.pred.shape[2]}x{item.pred.shape[1]}", item.pred_path)
        item.mask = masks[: item.pred.shape[0]]
        return item.mask

    def iuv_for(self, item: EvalItem) -> np.ndarray:
        """`(F, H, W, 3)` IUV (part index, u, v in [0, 1]) of the prediction: an array, or an `.npz` holding `iuv`
        or `parts` + `uv` (the `dancegen synth` layout), per video id under a folder."""
        if item.iuv is not None:
            return item.iuv
        src = self.iuv_source
        if src is None:
            raise InputError("h-mse needs DensePose IUV maps of the prediction: pass --iuv FILE|DIR", item.pred_path)
        if isinstance(src, np.ndarray):
            iuv = src
        else:
            path = self._side_path(src, item, "IUV maps", (".npz",))
            if path.is_dir():
                path = path / "iuv.npz"
            try:
                with np.load(path) as z:
                    if "iuv" in z:
                        iuv = z["iuv"].astype(np.float32)
                    else:
                        parts, uv = z["parts"], z["uv"].astype(np.float32)
                        iuv = np.concatenate([parts[..., None].astype(np.float32), uv], axis=-1)
            except (OSError, KeyError, ValueError) as e:
                raise InputError(f"not an IUV .npz with 'iuv' or 'parts'+'uv' ({e.__class__.__name__})",
                                 path) from None
        item.iuv = iuv[: item.pred.shape[0]]
        return item.iuv

    def driving_poses(self, item: EvalItem):
        from dancegen.pose.openpose_json import read_pose_input

        if self.poses is None:
            raise InputError("pose-mse and pose-map-mse need the driving poses: pass --poses DIR")
        h, w = item.pred.shape[1:3]
        return read_pose_input(self._pose_source(self.poses, item, "driving"), width=w, height=h, fps=item.fps)

    def pred_poses(self, item: EvalItem):
        """Poses of the generated video: `pred_poses` when given, else extracted (and cached) by dancegen.pose."""
        from dancegen.pose.openpose_json import read_pose_input

        h, w = item.pred.shape[1:3]
        if self.pred_poses_path is not None:
            return read_pose_input(self._pose_source(self.pred_poses_path, item, "predicted"), width=w, height=h,
                                   fps=item.fps)
        if self.cache_dir is None:
            raise InputError("pose extraction from the prediction needs an output folder (-o) or pred_poses")
        from dancegen.pose.extract import extract_poses

        out = self.cache_dir / "poses" / item.id
        extract_poses(item.pred_path, out, write_maps=False, write_video=False, write_masks=False,
                      weights_dir=self.weights_dir)
        return read_pose_input(out / "poses.npz", width=w, height=h, fps=item.fps)


@contextlib.contextmanager
def _cpu_seed(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for a block and give the caller's RNG state back afterwards (house-style §6).

    Backbones are built on the CPU and then moved, so the CPU generator is the only one their random init draws
    from. Only it is seeded: `torch.manual_seed` would also reseed every CUDA device, and `fork_rng(devices=[])`
    would not undo that.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _dir_weights_hash(model) -> str | None:
    p = Path(model)
    files = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) if p.is_dir() else []
    if not files:
        return None
    from dancegen.metrics.weights import sha256_file

    return sha256_file(files[0])


# ---- cache --------------------------------------------------------------------------------------------------------
def _cache_key(spec: MetricSpec, common: dict, item: EvalItem) -> str:
    blob = json.dumps({"metric": spec.name, "protocol": spec.protocol, "common": common, "pred": str(item.pred_path),
                       "gt": str(item.gt_path)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cache_path(cache_dir: Path | None, spec: MetricSpec, item: EvalItem) -> Path | None:
    return None if cache_dir is None else cache_dir / spec.name / f"{item.id}.npz"


def _cache_load(path: Path | None, key: str):
    from dancegen.io.atomic import load_keyed_npz

    z = None if path is None else load_keyed_npz(path, key)
    if z is None or ("value" not in z and "pred" not in z):
        return None
    if "value" in z:
        return float(z["value"])
    return {"pred": z["pred"], "gt": z.get("gt")}


def _cache_save(path: Path | None, key: str, result) -> None:
    if path is None:
        return
    from dancegen.io.atomic import save_keyed_npz

    arrays = {}
    if isinstance(result, dict):
        arrays["pred"] = result["pred"]
        if result.get("gt") is not None:
            arrays["gt"] = result["gt"]
    else:
        arrays["value"] = np.array(result, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_keyed_npz(path, key, arrays)


# ---- aggregation and report ---------------------------------------------------------------------------------------
def _set_score(feats_pred: list[np.ndarray], feats_gt: list[np.ndarray],
               method: str = "sqrtm") -> tuple[float, int, int, str | None]:
    from dancegen.metrics.frechet import feature_stats, frechet_distance

    fp = np.concatenate([f for f in feats_pred if len(f)]) if any(len(f) for f in feats_pred) else np.zeros((0, 1))
    fg = np.concatenate([f for f in feats_gt if len(f)]) if any(len(f) for f in feats_gt) else np.zeros((0, 1))
    if len(fp) < 2 or len(fg) < 2:
        return float("nan"), len(fp), len(fg), "needs at least 2 feature rows per side (more videos or clips)"
    if method == "lowrank":
        return frechet_distance_lowrank(fp, fg), len(fp), len(fg), None
    mu1, s1 = feature_stats(fp)
    mu2, s2 = feature_stats(fg)
    return float(frechet_distance(mu1, s1, mu2, s2, method=method)), len(fp), len(fg), None


def frechet_distance_lowrank(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Exact Fréchet distance between the Gaussians of two feature sets, computed in sample space.

    With centred, scaled features A = (X1 - mu1) / sqrt(n1 - 1) and B likewise, sigma1 = A^T A and
    sigma2 = B^T B, the non-zero eigenvalues of sigma1 @ sigma2 are the squared singular values of A @ B^T, so
    Tr((sigma1 sigma2)^(1/2)) is the nuclear norm of the (n1, n2) matrix A @ B^T. Same value as the D x D sqrtm
    route (up to round-off), in O(n^2 D) instead of O(D^3): the usual case for evaluation sets of a few hundred
    clips with 400- or 2048-d features.
    """
    x1, x2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    a = (x1 - mu1) / np.sqrt(len(x1) - 1)
    b = (x2 - mu2) / np.sqrt(len(x2) - 1)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * nuclear)


def _json_num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def evaluate(metrics: list[str] | str, pred, gt=None, audio=None, prompt: str | None = None, poses=None,
             weights_dir=None, out=None, resize=None, device: str = "cpu", *, frames: str = "strict",
             max_frames: int | None = None, pred_poses=None, masks=None, iuv=None, clip_model: str | None = None,
             cs_clip_model: str | None = None,
             fvd_clips: str = "first", fvd_resize: str | None = None, fid_resize: str = "pytorch-fid",
             fd_method: str = "sqrtm", allow_download: bool = False, random_weights: bool = False, resume: bool = True,
             progress: Callable[[str, str, str], None] | None = None) -> dict:
    """Compute `metrics` for the videos under `pred` (paired with `gt` by name) and write a report.

    Args:
        metrics: Names (or "a,b,c"); see `dancegen.metrics.registry.available_metrics()`.
        pred: Generated video file, frame folder, or a folder of either.
        gt: Ground truth in the same layout (needed by pair and set metrics).
        audio: Music for rhythm metrics: one WAV for all, or a folder of `<id>.wav` (default: the video's track).
        prompt: Text prompt for `clip-text`.
        poses: Driving poses for `pose-mse` and the rhythm metrics: OpenPose JSON folders / `.npz` named by video id.
        weights_dir: Folder with the backbone files (else $DANCEGEN_WEIGHTS_DIR, $DANCEGEN_HOME/weights).
        out: Report path (`.json`; a `.csv` is written next to it). Its `<stem>.cache/` folder makes reruns resume.
        resize: None, N or "WxH": resize pred and gt frames before every metric (cv2 area/bilinear).
        device: "cpu", "cuda", "auto", ...
        frames: "strict" (pred/gt frame counts must match) or "min" (compare the first min(F) frames).
        max_frames: Read at most this many frames per video.
        pred_poses: Poses already extracted from the predictions (else dancegen.pose.extract runs, cached).
        masks: Person masks for the body/background NIQE/BRISQUE metrics: an `(F, H, W)` array (single video), a
            mask frame folder, a folder of `<id>/` mask folders, or "auto" (BlazePose segmentation of the prediction).
        iuv: DensePose-style IUV of the prediction for `h-mse`: an `(F, H, W, 3)` array, an `.npz` (`iuv`, or
            `parts` + `uv` as `dancegen synth` writes), or a folder of `<id>.npz` / `<id>/iuv.npz`.
        clip_model: CLIP folder or hub id (default openai/clip-vit-large-patch14).
        cs_clip_model: CLIP for `clip-music` (default openai/clip-vit-base-patch32: Wav2CLIP's 512-d space).
        fvd_clips: "first" (one 16-frame clip per video, StyleGAN-V/TF), "all" (non-overlapping) or "sliding".
        fvd_resize: "stretch" (TF reference, styleganv default) or "short-side-crop" (videogpt default).
        fid_resize: "pytorch-fid" (bilinear 299 in torch) or "clean" (clean-fid's PIL bicubic).
        fd_method: Fréchet trace term: "sqrtm" (scipy, as pytorch-fid/StyleGAN-V), "eig" (symmetric eigen route) or
            "lowrank" (exact, in sample space: fast when there are fewer feature rows than dimensions).
        allow_download: Let missing backbone files be fetched from their usual source.
        random_weights: Random-init backbones of the real architecture (tests/benchmarks; recorded in the report).
        resume: Reuse per-video results cached by an earlier run with the same protocol.
        progress: Called as progress(video_id, metric, "done"|"cached").

    Returns:
        The report dict (also written to `out` as JSON and CSV when `out` is given).

    Raises:
        InputError: unknown metric, missing gt for a reference metric, mismatched frame counts or sizes, ...
        MissingWeightsError: a backbone file is missing (names it, where it looked, where it is published).
    """
    import dancegen
    from dancegen.runtime import resolve_device

    specs = get_metrics(metrics)
    if frames not in ("strict", "min"):
        raise InputError(f"--frames must be strict or min, got {frames!r}")
    needs_gt = [s.name for s in specs if "gt" in s.needs]
    if needs_gt and gt is None:
        raise InputError(f"{', '.join(needs_gt)} compare(s) with ground truth: pass --gt DIR|VIDEO")
    if any("prompt" in s.needs for s in specs) and not prompt:
        raise InputError("clip-text needs --prompt TEXT")
    device = resolve_device(device)
    size = _parse_resize(resize)
    pairs = pair_inputs(pred, gt, require_gt=bool(needs_gt))
    out_path = Path(out) if out is not None else None
    cache_dir = out_path.with_name(out_path.stem + ".cache") if out_path is not None else None
    options = {"fvd_clips": fvd_clips, "fvd_resize": fvd_resize, "fid_resize": fid_resize, "clip_model": clip_model,
               "cs_clip_model": cs_clip_model, "fd_method": fd_method}
    array_masks = masks if isinstance(masks, np.ndarray) else None
    array_iuv = iuv if isinstance(iuv, np.ndarray) else None
    ctx = EvalContext(weights_dir, device, allow_download, random_weights, options, audio, poses, pred_poses,
                      cache_dir, masks=None if array_masks is not None else masks,
                      iuv=None if array_iuv is not None else iuv)
    common = {"frames": frames, "max_frames": max_frames, "resize": size, "random_weights": random_weights,
              "options": options, "prompt": prompt, "dancegen": dancegen.__version__}

    per_video: dict[str, dict] = {}
    set_feats: dict[str, tuple[list, list]] = {s.name: ([], []) for s in specs if s.kind == "set"}
    t0 = time.time()
    for vid, ppath, gpath in pairs:
        item = EvalItem(vid, ppath, gpath, prompt=prompt, mask=array_masks, iuv=array_iuv)
        row = {"pred": str(ppath), "gt": None if gpath is None else str(gpath), "scores": {}}
        for spec in specs:
            key = _cache_key(spec, common, item)
            cpath = _cache_path(cache_dir, spec, item)
            result = _cache_load(cpath, key) if resume else None
            status = "cached"
            if result is None:
                if item.pred is None:
                    _load_item(item, size, frames, max_frames)
                if spec.kind != "single" and item.gt is None:
                    raise InputError(f"{spec.name} needs ground truth, none named {vid} in {gt}", ppath)
                result = spec.compute(ctx, item)
                _cache_save(cpath, key, result)
                status = "done"
            if spec.kind == "set":
                set_feats[spec.name][0].append(result["pred"])
                set_feats[spec.name][1].append(result["gt"])
                row["scores"][spec.name] = None
                row.setdefault("feature_rows", {})[spec.name] = int(len(result["pred"]))
            else:
                row["scores"][spec.name] = _json_num(float(result))
                if math.isinf(float(result)):  # e.g. PSNR of identical frames; JSON has no infinity
                    row.setdefault("notes", {})[spec.name] = "inf" if result > 0 else "-inf"
            if progress:
                progress(vid, spec.name, status)
        row.update(item.info or _cached_info(cache_dir, vid))
        _save_info(cache_dir, vid, item.info)
        per_video[vid] = row

    report_metrics = {}
    for spec in specs:
        entry = {"kind": spec.kind, "higher_is_better": spec.higher_is_better, "description": spec.description}
        if spec.kind == "set":
            value, n1, n2, note = _set_score(*set_feats[spec.name], method=fd_method)
            entry.update(value=_json_num(value), feature_rows_pred=n1, feature_rows_gt=n2)
            if note:
                entry["note"] = note
        else:
            vals = [r["scores"][spec.name] for r in per_video.values() if r["scores"][spec.name] is not None]
            entry["value"] = _json_num(float(np.mean(vals))) if vals else None
            infinite = [vid for vid, r in per_video.items() if spec.name in r.get("notes", {})]
            if infinite:
                entry["note"] = (f"infinite for {len(infinite)} video(s) ({', '.join(infinite[:3])}), left out of "
                                 "the mean")
        entry["protocol"] = _metric_protocol(spec, ctx, common, per_video)
        report_metrics[spec.name] = entry

    report = {
        "schema": SCHEMA, "dancegen_version": dancegen.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "pred": str(pred), "gt": None if gt is None else str(gt), "num_videos": len(per_video),
        "protocol": {"frames": frames, "max_frames": max_frames, "resize": list(size) if size else None,
                     "device": device, "random_weights": random_weights, **{k: v for k, v in options.items()}},
        "metrics": report_metrics, "videos": per_video, "seconds": round(time.time() - t0, 3),
    }
    if out_path is not None:
        write_report(report, out_path)
    return report


def _save_info(cache_dir: Path | None, vid: str, info: dict) -> None:
    if cache_dir is None or not info:
        return
    from dancegen.io.atomic import write_text

    write_text(cache_dir / "videos" / f"{vid}.json", json.dumps(info))


def _cached_info(cache_dir: Path | None, vid: str) -> dict:
    p = None if cache_dir is None else cache_dir / "videos" / f"{vid}.json"
    return json.loads(p.read_text()) if p is not None and p.is_file() else {}


def _metric_protocol(spec: MetricSpec, ctx: EvalContext, common: dict, per_video: dict) -> dict:
    import dancegen

    frames = [r.get("num_frames") for r in per_video.values() if r.get("num_frames") is not None]
    proto = {"mode": spec.name, **spec.protocol, "num_videos": len(per_video), "frames_total": int(sum(frames)),
             "frames_per_video": sorted(set(frames)), "frames_policy": common["frames"],
             "resize": list(common["resize"]) if common["resize"] else None, "dancegen_version": dancegen.__version__}
    if spec.weights:
        proto["backbones"] = ctx.weights_protocol(spec.weights)
    if spec.name.startswith("fvd"):
        proto["clips"] = ("all (segments, mean per video)" if spec.name == "fvd-disco"
                          else common["options"]["fvd_clips"])
        proto["fvd_resize"] = common["options"]["fvd_resize"] or (
            "stretch" if spec.name == "fvd" else "short-side-crop" if spec.name == "fvd-videogpt" else "pil-bicubic")
    if spec.name == "fid":
        proto["fid_resize"] = common["options"]["fid_resize"]
    if spec.kind == "set":
        proto["fd_method"] = common["options"]["fd_method"]
    if common["random_weights"] and spec.weights:
        proto["warning"] = "random backbone weights: the score is not comparable with anything"
    return proto


CSV_FIELDS = ["video", "metric", "value", "higher_is_better", "num_videos", "num_frames", "resize", "mode",
              "backbone_files", "backbone_sha256", "frames_policy", "dancegen_version"]


def report_rows(report: dict) -> list[dict]:
    """Flat rows (one per metric overall, then one per video and metric) with the protocol on every row."""
    rows = []
    for name, m in report["metrics"].items():
        p = m["protocol"]
        bb = p.get("backbones") or []
        base = {"metric": name, "higher_is_better": m["higher_is_better"], "num_videos": p["num_videos"],
                "resize": "x".join(map(str, p["resize"])) if p["resize"] else "", "mode": p["mode"],
                "backbone_files": ";".join(str(b.get("file") or b.get("model") or "") for b in bb),
                "backbone_sha256": ";".join(str(b.get("sha256") or "") for b in bb),
                "frames_policy": p["frames_policy"], "dancegen_version": p["dancegen_version"]}
        rows.append({"video": "ALL", "value": m["value"], "num_frames": p["frames_total"], **base})
        for vid, v in report["videos"].items():
            if v["scores"].get(name) is not None:
                rows.append({"video": vid, "value": v["scores"][name], "num_frames": v.get("num_frames"), **base})
    return rows


def report_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The JSON and CSV files `-o OUT` names: OUT itself when it ends in .json, else OUT with suffix .json."""
    out = Path(out)
    json_path = out if out.suffix.lower() == ".json" else out.with_suffix(".json")
    return json_path, json_path.with_suffix(".csv")


def write_report(report: dict, out: str | os.PathLike) -> tuple[Path, Path]:
    """Write `out` (JSON) and `out` with suffix `.csv`, atomically. Returns both paths."""
    from dancegen.io.atomic import write_text

    json_path, csv_path = report_paths(out)
    write_text(json_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in report_rows(report):
        w.writerow(r)
    write_text(csv_path, buf.getvalue())
    return json_path, csv_path


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(metric, value, direction, protocol summary) for a console table (the CLI renders it with rich)."""
    rows = []
    for name, m in report["metrics"].items():
        p = m["protocol"]
        val = "n/a" if m["value"] is None else f"{m['value']:.6g}"
        files = ", ".join(str(b.get("file") or b.get("model")) for b in p.get("backbones", []) if b)
        summary = f"{p['num_videos']} videos, {p['frames_total']} frames" + (f", {files}" if files else "")
        rows.append((name, val, "↑" if m["higher_is_better"] else "↓", summary))
    return rows
