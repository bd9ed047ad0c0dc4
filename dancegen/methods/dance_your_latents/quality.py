"""How good a trained Dance-Your-Latents model is on held-out synthetic clips (issue 4's quality checks).

For every clip of a split (TikTok layout, e.g. the `test.txt` clips of `dancegen synth --layout tiktok`), the model
animates the clip's first frame (the reference, with its background from the person mask) with the clip's own
ground-truth poses, so the output can be compared with the real frames:

- fidelity: PSNR ("correct" mode) and SSIM (TikTok protocol) of the generated frames 1.. against the ground truth
  (frame 0 is the reference itself);
- pose of the generated dancer: SynthPose (the bundled estimator of the synthetic world, `synthpose-tiny`) finds the
  18 joints on each generated frame; `pose_error` is their mean distance from the driving poses (the clip's
  ground-truth joints visible in that frame), in image-size units, and `pose_pck` the fraction within 0.05.
  The `ground_truth` row scores the real frames the same way: the estimator's own error, the floor. (BlazePose finds
  the blurry 64 px toy dancers in a few percent of generated frames, too few to score.) The `static` row shows how
  far a dancer that never moves is from the poses; `other_poses` (below) one that follows the wrong poses;
- motion agreement (no detector needed): `motion_iou`, the IoU of the pixels where the generated video changed since
  its first frame and those where the real one did (both frames 1.., |difference| > 32 in any channel). A model that
  moves the dancer as the poses say scores high; a still video 0; the same model driven by another clip's poses
  (`other_poses`, with `other_poses=True`) shows what ignoring the poses would give;
- temporal consistency: the flow warping error of the generated video with the ground-truth video's motion (DIS flow
  estimated on the real frames, forward-backward occlusion mask), and the adjacent-frame MSE of the generated video.

The same numbers for two trivial baselines give the scale: `static` (the first real frame repeated: perfect
consistency, no motion) and `ground_truth` (the real frames: PSNR infinite, their own consistency).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

METRICS = ("psnr", "ssim", "pose_error", "pose_pck", "motion_iou", "warp_error", "adjacent_mse")
MOTION_THRESHOLD = 32  # uint8 levels: above the toy models' frame-to-frame noise, below a dancer's contrast


def motion_iou(pred: np.ndarray, gt: np.ndarray, threshold: int = MOTION_THRESHOLD) -> float:
    """IoU of "changed since frame 0" between two `(F, H, W, 3)` uint8 videos, over frames 1.. (0 if neither moves)."""
    moved_pred = (np.abs(pred[1:].astype(np.int16) - pred[:1]) > threshold).any(-1)
    moved_gt = (np.abs(gt[1:].astype(np.int16) - gt[:1]) > threshold).any(-1)
    union = np.logical_or(moved_pred, moved_gt).sum()
    return float(np.logical_and(moved_pred, moved_gt).sum() / union) if union else 0.0


def _uint8(x) -> np.ndarray:
    """`(3, H, W)` / `(3, F, H, W)` tensor in [-1, 1] -> `(H, W, 3)` / `(F, H, W, 3)` uint8."""
    a = x.detach().cpu().float().numpy()
    a = np.moveaxis(a, 0, -1)
    return ((np.clip(a, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def _mean(values: list[float]) -> float:
    """Mean over clips; NaN (e.g. no dancer detected in any frame of a clip) propagates: it is a failure."""
    return float(np.mean(values)) if values else float("nan")


def clip_scores(pred: np.ndarray, gt: np.ndarray, gt_flows=None, pose_fn=None, driving=None) -> dict[str, float]:
    """The metrics of one generated clip `pred` against its ground truth `gt` (both `(F, H, W, 3)` uint8).

    Args:
        gt_flows: optional `(forward, backward)` DIS flows of `gt` (computed once per clip by the caller).
        pose_fn: optional `frames -> (F, 18, 3)` COCO-18 estimator (`pose_estimator()`), and
        driving: the `(F, 18, 3)` poses `pred` should show (frames 1.. are scored); without both, no pose metrics.
    """
    from dancegen.metrics.consistency import _flows, adjacent_frame_mse, warping_error
    from dancegen.metrics.image import psnr, ssim

    if gt_flows is None:
        gt_flows = _flows(gt, "dis")
    out = {  # fidelity on frames 1.. (frame 0 is the reference the model was given)
        "psnr": float(psnr(pred[1:], gt[1:], mode="correct")),
        "ssim": float(ssim(pred[1:], gt[1:], mode="tiktok")),
        "motion_iou": motion_iou(pred, gt),
        "warp_error": float(warping_error(pred, flow=gt_flows[0], backward_flow=gt_flows[1])),
        "adjacent_mse": float(adjacent_frame_mse(pred)),
    }
    if pose_fn is not None and driving is not None:
        out.update(pose_scores(pose_fn(pred[1:]), driving[1:], float(max(pred.shape[1:3]))))
    return out


def pose_estimator():
    """The bundled SynthPose estimator, keeping every joint's location (scored against the driving poses' visible
    joints whatever the heatmap's confidence)."""
    from dancegen.pose.backends.synthpose import SynthPoseEstimator

    return SynthPoseEstimator.load(min_confidence=None)


def pose_scores(found: np.ndarray, driving: np.ndarray, size: float) -> dict[str, float]:
    """`pose_error` (mean distance / `size`) and `pose_pck` (PCK@0.05) of detected joints against driving poses."""
    from dancegen.metrics.pose_metrics import keypoint_scores

    k = keypoint_scores(found, driving, size, use_confidence=False)
    return {"pose_error": k["error"], "pose_pck": k["pck"]}


def clip_poses(data, i: int, num_frames: int):
    """The first `num_frames` poses of the video that clip `i` of a `TikTokClips` comes from."""
    return data.videos[data.index[i][0]]["poses"][list(range(num_frames))]


def animate_item(model, item: dict, poses, steps: int | None = None, guidance_scale: float | None = None,
                 seed: int = 0) -> np.ndarray:
    """`model` animating a `TikTokClips` item's reference, over the item's background, with `poses`: the protocol's
    sampling (the recipe's context window and overlap; DDIM `steps` and CFG `guidance_scale`, default the recipe's;
    a generator seeded with `seed`). Returns `(F, H, W, 3)` uint8."""
    import torch

    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video

    inf = model.config.inference
    h, w = (int(r) for r in model.config.data.resolution)
    pipe = DanceYourLatentsPipeline.from_model(model)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(_uint8(item["reference"]), poses, background=_uint8(item["background"]), height=h, width=w,
               num_inference_steps=steps or inf.steps,
               guidance_scale=inf.guidance_scale if guidance_scale is None else guidance_scale,
               generator=torch.Generator().manual_seed(seed), window=inf.window, overlap=inf.overlap).frames
    return to_uint8_video(out)


def heldout_quality(model, data_root: str | os.PathLike, split: str = "test", num_frames: int = 24,
                    steps: int | None = None, guidance_scale: float | None = None, seed: int = 0,
                    max_clips: int | None = None, pose: bool = True, other_poses: bool = False,
                    progress=None) -> dict:
    """Animate the held-out clips of `data_root` with `model` and score them (see the module docstring).

    Args:
        model: a `DanceYourLatentsModel` (e.g. `DanceYourLatentsModel.from_pretrained(folder)`).
        data_root: TikTok-layout folder with `<split>.txt`.
        num_frames: frames generated per clip (from the clip's first frame).
        steps / guidance_scale: DDIM steps and CFG scale (default: the model's recipe `inference`).
        seed: generator seed, the same for every clip.
        max_clips: use the first N clips only.
        pose: score the generated dancer's pose with the bundled SynthPose estimator.
        other_poses: also animate each clip with the next clip's poses (row `other_poses`, scored against this
            clip's frames and poses): the control for `motion_iou` and `pose_error`.
        progress: optional `progress(message)` callback.

    Returns:
        ``{"clips": [names], "model": {metric: mean}, "static": {...}, "ground_truth": {...},
        ["other_poses": {...},] "per_clip": {name: {metric: value}}, "protocol": {...}}``.
    """
    from dancegen.methods.dance_your_latents.data import TikTokClips
    from dancegen.metrics.consistency import _flows

    cfg = model.config
    h, w = (int(r) for r in cfg.data.resolution)
    data = TikTokClips(data_root, split=split, num_frames=num_frames, resolution=(h, w), reference="first_frame")
    starts = [i for i, (v, s) in enumerate(data.index) if s == 0][:max_clips]
    pose_fn = pose_estimator() if pose else None
    steps = steps or cfg.inference.steps
    guidance_scale = cfg.inference.guidance_scale if guidance_scale is None else guidance_scale
    rows = {"model": {}, "static": {}, "ground_truth": {}, **({"other_poses": {}} if other_poses else {})}
    names = []
    for k, i in enumerate(starts):
        name = Path(data.videos[data.index[i][0]]["dir"]).name
        names.append(name)
        if progress:
            progress(f"clip {k + 1}/{len(starts)}: {name}")
        item = data[i]
        gt = _uint8(item["frames"])
        flows = _flows(gt, "dis")
        own = clip_poses(data, i, num_frames)
        driving = own.keypoints  # what every row is scored against, whatever poses drove it
        driven_by = {"model": own}
        if other_poses:
            driven_by["other_poses"] = clip_poses(data, starts[(k + 1) % len(starts)], num_frames)
        for row, poses in driven_by.items():
            pred = animate_item(model, item, poses, steps, guidance_scale, seed)
            rows[row][name] = clip_scores(pred, gt, flows, pose_fn, driving)
        rows["static"][name] = clip_scores(np.repeat(gt[:1], num_frames, 0), gt, flows, pose_fn, driving)
        gt_row = clip_scores(gt, gt, flows, pose_fn, driving)
        gt_row.pop("psnr")
        rows["ground_truth"][name] = gt_row
    report = {"clips": names, "per_clip": rows["model"],
              "protocol": {"split": split, "num_frames": num_frames, "steps": steps, "guidance_scale": guidance_scale,
                           "seed": seed, "resolution": [h, w], "variant": cfg.model.variant,
                           "motion_threshold": MOTION_THRESHOLD,
                           "pose": "bundled SynthPose on frames 1.., against the driving (ground-truth) joints"
                           if pose else None}}
    for key, per in rows.items():
        metrics = sorted({m for r in per.values() for m in r})
        report[key] = {m: _mean([r[m] for r in per.values() if m in r]) for m in metrics}
    return report
