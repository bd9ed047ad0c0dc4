"""Dancing Avatar at toy scale with the bundled models: Table 3's directions on held-out synthetic poses and prompts.

Each held-out case is a clip of the synthetic world with master seed 7 (the bundled models trained on seeds 2000+ and
3000+): its OpenPose joints drive the video and its dancer's description is the text (clothes "a <top> t-shirt and
<bottom> <trousers|shorts>", face "<style> <colour> hair", place its room). Every variant (`VARIANTS`, the ablation
switches as recipe overrides) runs the same poses, prompt and seed; variants with intra-frame alignment share one
character pack per case. Scores per video (consistency between adjacent frames; lower is better):

- ``frame_mse`` / ``frame_l1``: adjacent-frame pixel MSE / L1 on the 0-255 scale (Table 2/3's Frame MSE / L1;
  `metrics.consistency`);
- ``warp``: the warping error with DIS flow of the output (`metrics.consistency.warping_error`);
- ``background_change``: mean |x_{t+1} - x_t| outside the person (the clip's true dancer masks of both frames,
  dilated 3 px: not the pipeline's own masks), what Background CLIP measures in the paper;
- ``colour_drift``: mean RGB distance of the torso's median colour (shoulder-hip quadrilateral of the driving joints,
  shrunk) from frame 0's, what Body CLIP / "the clothes do not stay the same" measure.

Whether the video does what it was asked (higher / lower as marked):

- ``pose_px`` (lower): mean pixel distance between the bundled SynthPose estimator's joints on the output and the
  driving joints (`metrics.pose_metrics.pose_keypoint_error`, joints confident in both); ``pose_px_other`` is the
  same output against another case's driving joints, the control a video that ignores its poses would tie with;
- ``colour_err`` (lower): RGB distance of each frame's torso median colour from the torso colour of the true clip
  (the same dancer rendered by the synthetic world, so the same shading: the world's colour names alone are too far
  from shaded cloth); ``colour_err_other`` is the same against another case's dancer, the control a video that
  ignores the prompt's colours would tie with.

``framewise`` (all three switches off: T2I + OpenPose ControlNet frame by frame) is the control.

    python -m dancegen.methods.dancing_avatar.quality --count 4 --frames 8 -o runs/dancing-avatar-quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HELDOUT_SEED = 7
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "wo_intra": ("intra.enabled=false",),
    "wo_inter": ("inter.enabled=false",),
    "wo_background": ("background.enabled=false",),
    "framewise": ("intra.enabled=false", "inter.enabled=false", "background.enabled=false"),
}
METRICS = ("frame_mse", "frame_l1", "warp", "background_change", "colour_drift", "pose_px", "pose_px_other",
           "colour_err", "colour_err_other")


def heldout_cases(count: int, num_frames: int = 8, size: int = 64, seed: int = HELDOUT_SEED) -> list[dict]:
    """``count`` held-out clips: poses, true masks and the dancer's clothes / face / place text."""
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.appearance import place_text
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed

    cases = []
    for k in range(count):
        clip = render_clip(seed=clip_seed(seed, k), size=size, num_frames=num_frames, camera_motion="static",
                           flow=False)
        clothes, face = clip.appearance.prompt_parts()
        cases.append({"poses": PoseSequence(clip.keypoints.astype(np.float32), width=size, height=size, fps=clip.fps),
                      "masks": clip.masks, "clothes": clothes, "face": face,
                      "place": place_text(clip.scene_text), "top": clip.appearance.top_colour,
                      "torso_rgb": np.nanmedian(torso_colours(clip.frames, clip.keypoints), axis=0)})
    return cases


def torso_colours(video: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """``(F, 3)`` median RGB inside the shrunk shoulder-hip quadrilateral of each frame (NaN when not visible)."""
    import cv2

    out = np.full((len(video), 3), np.nan)
    for t, (img, k) in enumerate(zip(video, keypoints, strict=True)):
        quad = k[[2, 5, 11, 8]]
        if (quad[:, 2] <= 0.3).any():
            continue
        c = quad[:, :2].mean(0)
        pts = np.round((c + 0.6 * (quad[:, :2] - c)) * 4).astype(np.int32)
        m = np.zeros(img.shape[:2], np.uint8)
        cv2.fillConvexPoly(m, pts, 1, shift=2)
        if m.sum() >= 2:
            out[t] = np.median(img[m.astype(bool)].reshape(-1, 3), axis=0)
    return out


def pose_errors(video: np.ndarray, driving, other) -> tuple[float, float]:
    """SynthPose joints of ``video`` against its driving PoseSequence and against another case's (pixels)."""
    from dancegen.metrics.pose_metrics import pose_keypoint_error
    from dancegen.pose.extract import estimate_poses

    est = estimate_poses(video, backend="synthpose")
    return (float(pose_keypoint_error(est, driving, normalise="none")),
            float(pose_keypoint_error(est, other, normalise="none")))


def colour_error(colours: np.ndarray, want: np.ndarray) -> float:
    """Mean RGB distance of the ``(F, 3)`` torso colours (NaN rows skipped) from the colour ``want``."""
    d = np.linalg.norm(colours - np.asarray(want, np.float64), axis=-1)
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")


def scores(video: np.ndarray, case: dict, other: dict | None = None) -> dict[str, float]:
    """The module docstring's scores of one ``(F, H, W, 3)`` uint8 video; ``other``: the case whose driving joints
    are the pose control (None: the pose scores are left out)."""
    from dancegen.metrics.consistency import adjacent_frame_l1, adjacent_frame_mse, warping_error
    from dancegen.pose.masks import dilate_mask

    v = video.astype(np.float32)
    person = dilate_mask(case["masks"], 3)
    outside = ~(person[1:] | person[:-1])
    diff = np.abs(v[1:] - v[:-1]).mean(-1)
    cols = torso_colours(video, case["poses"].keypoints)
    drift = np.linalg.norm(cols[1:] - cols[0], axis=-1)
    out = {"frame_mse": float(adjacent_frame_mse(video)), "frame_l1": float(adjacent_frame_l1(video)),
           "warp": float(warping_error(video)), "background_change": float(diff[outside].mean()),
           "colour_drift": float(np.nanmean(drift)) if np.isfinite(drift).any() else float("nan"),
           "colour_err": colour_error(cols, case["torso_rgb"])}
    if other is not None:
        out["pose_px"], out["pose_px_other"] = pose_errors(video, case["poses"], other["poses"])
        out["colour_err_other"] = colour_error(cols, other["torso_rgb"])
    return out


def evaluate(count: int = 4, num_frames: int = 8, steps: int | None = None, variants: dict | None = None,
             extra: list[str] | None = None, seed: int = 0, work_dir: str | Path | None = None,
             progress=None) -> dict:
    """Run every variant on ``count`` held-out cases with the bundled models; per-case scores and means."""
    from dancegen import api
    from dancegen.io.video import read_video

    if count < 2:
        raise ValueError("count must be >= 2: each case's controls are another case's poses and colours")
    variants = variants or VARIANTS
    say = progress or (lambda m: None)
    cases = heldout_cases(count, num_frames)
    tmp = tempfile.TemporaryDirectory() if work_dir is None else None
    root = Path(work_dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    per: dict[str, list[dict]] = {name: [] for name in variants}
    seconds: dict[str, float] = {name: 0.0 for name in variants}
    try:
        for k, case in enumerate(cases):
            pack = None
            for name, sets in variants.items():
                out = root / f"case{k}_{name}.mp4"
                intra = "intra.enabled=false" not in sets
                kw = dict(poses=case["poses"], clothes=case["clothes"], face=case["face"], place=case["place"],
                          seed=seed, preview=False, method="dancing-avatar",
                          overrides=list(sets) + list(extra or []))
                if steps is not None:
                    kw["steps"] = steps
                if intra and pack is not None:
                    kw["character"] = pack
                rep = api.text2character(None, out, **kw)
                if intra and pack is None:
                    pack = rep["character"]
                seconds[name] += rep["seconds"]
                per[name].append(scores(read_video(out).frames, case, cases[(k + 1) % len(cases)]))
                say(f"case {k + 1}/{count} {name}: " + ", ".join(f"{m} {per[name][-1][m]:.2f}" for m in METRICS))
    finally:
        if tmp is not None:
            tmp.cleanup()
    summary = {name: {m: float(np.nanmean([r.get(m, np.nan) for r in rows])) for m in METRICS}
               for name, rows in per.items()}
    for name in summary:
        summary[name]["seconds_per_frame"] = seconds[name] / (count * num_frames)
    return {"cases": count, "frames": num_frames, "steps": steps, "seed": seed, "variants": {k: list(v) for k, v in
                                                                                            variants.items()},
            "summary": summary, "per_case": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the videos in this folder")
    args = ap.parse_args(argv)
    report = evaluate(args.count, args.frames, args.steps, extra=args.sets, work_dir=args.keep,
                      progress=lambda m: print(m, file=sys.stderr))
    text = json.dumps(report, indent=2)
    if args.output:
        from dancegen.io.atomic import write_text

        write_text(args.output, text + "\n")
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
