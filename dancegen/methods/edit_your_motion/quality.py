"""Held-out quality of Edit-Your-Motion at toy scale: Table IV's direction on synthetic cases with an exact target.

Each case (`dancegen.synth` edit layout) has a source clip (dancer A, motion A, room A), the exact target (dancer A
doing motion B in room A, same camera) and a reference (dancer B doing motion B). Every variant fine-tunes on the
source with its own skeletons and masks, then edits it with the target's skeletons (DDIM inversion, sampling), and
the result is scored against the target. The edit is driven by the target's own skeletons, not by the reference's
after the skeleton offset: Algorithm 1 keeps the reference clip's start position, which puts the aligned joints about
7 px from the true target on these 64 px cases and would charge that to every variant alike (the offset has its own
unit tests). Metrics:

- ``psnr`` / ``ssim``: the whole frame against the target (appearance and background kept, motion followed);
- ``pose_px``: distance between the SynthPose joints of the result and the aligned target skeleton, averaged over
  the joints confident in both within each frame, then over frames (`dancegen.metrics.pose_metrics` protocol);
- ``colour``: mean absolute difference (0-255) of the mean RGB inside the target's person mask (the clothes);
- ``warp``: flow warping error of the result itself (`dancegen.metrics.consistency.warping_error`, DIS flow, [0, 1]
  RGB): temporal consistency, the role FVD plays in the paper's Table IV (the exact target's own value is the floor);
- ``lpips``: LPIPS v0.1 (AlexNet) against the target, when its weight files are on this machine (`dancegen weights
  list --used-by lpips`; $DANCEGEN_WEIGHTS_DIR), else left out with one line.

Variants: ``full`` (the recipe), ``wo_rca`` (per-frame self-attention), ``wo_ma`` (plain ControlNet addition),
``wo_stl`` (one joint stage with the two stages' steps), and ``base`` (no fine-tuning, same inversion). Controls:
``source_poses`` (the full model driven by the source's own skeletons: no motion edit), ``source_copy`` (the
source frames themselves scored against the target) and ``reference_copy`` (the reference clip: another dancer in
another room doing the target motion).

    python -m dancegen.methods.edit_your_motion.quality --count 3
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from dancegen.methods.edit_your_motion.config import BUNDLED_OVERRIDES, load_recipe

HELDOUT_SEED = 9100  # far from the seeds the bundled base and ControlNet were trained on
VARIANTS = ("full", "wo_rca", "wo_ma", "wo_stl", "base")


def stages_override(stages) -> str:
    """A ``train.stages=[...]`` override that rebuilds ``stages`` exactly (every field, as flow-style YAML)."""
    import yaml

    from dancegen.config import config_to_dict

    dumped = yaml.safe_dump([config_to_dict(s) for s in stages], default_flow_style=True, width=float("inf"))
    return "train.stages=" + dumped.strip()


def variant_overrides(name: str, cfg) -> list[str]:
    stages = cfg.train.stages
    if name == "wo_rca":
        return ["model.spatial_attn=self"]
    if name == "wo_ma":
        return ["model.motion_adapter.enabled=false"]
    if name == "wo_stl":
        return [stages_override([replace(stages[0], name="joint", steps=sum(s.steps for s in stages))])]
    return []


def make_case(folder: Path, index: int, size: int = 64, frames: int = 8, seed: int = HELDOUT_SEED) -> Path:
    from dancegen.synth.layouts import render_edit_case

    if not (folder / "case.json").is_file():
        render_edit_case(folder, seed + 2 * index, seed + 2 * index + 1, size=size, num_frames=frames, fps=8.0,
                         camera_motion="static", flow=False)
    return folder


def _masks(folder: Path) -> np.ndarray:
    from dancegen.io.video import read_image

    return np.stack([read_image(p).max(-1) > 127 for p in sorted((folder / "masks").glob("*.png"))])


def read_target(target_folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The case's exact target clip: its frames and person masks (read once per case, scored many times)."""
    from dancegen.io.video import read_video

    return read_video(target_folder / "video.mp4").frames, _masks(target_folder)


def lpips_scorer(say=lambda m: None):
    """LPIPS v0.1 AlexNet with its published weights when they are on this machine, else None (said in one line)."""
    from dancegen.errors import MissingWeightsError
    from dancegen.metrics.backbones.features import LPIPSScorer
    from dancegen.metrics.weights import resolve_weight

    try:
        trunk, lin = resolve_weight("alexnet").path, resolve_weight("lpips-alex").path
    except MissingWeightsError as e:
        say(f"no LPIPS column: {str(e).splitlines()[0][:160]}")
        return None
    return LPIPSScorer("alex", trunk, lin)


def score(video: np.ndarray, target: tuple[np.ndarray, np.ndarray], aligned: np.ndarray, lpips=None) -> dict:
    """The metrics of one edited video against the case's target (``read_target``); ``lpips``: an
    `LPIPSScorer` (`lpips_scorer`) or None."""
    from dancegen.metrics.consistency import warping_error
    from dancegen.metrics.image import psnr, ssim
    from dancegen.metrics.pose_metrics import pose_keypoint_error
    from dancegen.pose.extract import estimate_poses

    gt, masks = (a[: len(video)] for a in target)
    est = estimate_poses(video, backend="synthpose")
    pose_px = pose_keypoint_error(est, est.replace(keypoints=aligned), normalise="none", conf_thr=0.3)
    colour = [np.abs(video[t][masks[t]].mean(0) - gt[t][masks[t]].astype(float).mean(0)).mean()
              for t in range(len(video)) if masks[t].any()]
    out = {"psnr": float(psnr(video, gt)), "ssim": float(ssim(video, gt)), "pose_px": pose_px,
           "colour": float(np.mean(colour)), "warp": warping_error(video) if len(video) > 1 else float("nan")}
    if lpips is not None:
        out["lpips"] = float(np.mean(lpips(video, gt)))
    return out


def run_case(case: Path, variants=VARIANTS, steps: int | None = None, work: Path | None = None,
             inference_steps: int | None = None, say=lambda m: None, lpips=None, seed: int | None = None) -> dict:
    """Fine-tune every variant on one case and score its edit; ``{variant: metrics}`` (``lpips``: see `score`).

    ``seed``: the run's seed (fine-tuning draws and sampling) instead of the recipe's, to measure seed spread.
    """
    import torch

    from dancegen.io.video import read_video
    from dancegen.methods.edit_your_motion.animate import target_keypoints
    from dancegen.methods.edit_your_motion.data import prepare_case
    from dancegen.methods.edit_your_motion.model import build_model, load_model
    from dancegen.methods.edit_your_motion.pipeline import edit_video
    from dancegen.methods.edit_your_motion.train import train
    from dancegen.pose.openpose_json import read_pose_input
    from dancegen.runtime import seed_everything

    info = json.loads((case / "case.json").read_text())
    src = case / "source"
    sets = [*BUNDLED_OVERRIDES, f"data.source={src / 'video.mp4'}", f"data.poses={src / 'openpose_json'}",
            "data.masks=given", f"data.masks_path={src / 'masks'}", f"data.prompt={info['prompt']}",
            f"data.num_frames={info['num_frames']}", "train.device=cpu", "inference.skeleton_offset.enabled=false"]
    if seed is not None:
        sets.append(f"seed={seed}")
    base_cfg = load_recipe(None, sets)
    if steps is not None:
        sets.append(stages_override([replace(s, steps=steps) for s in base_cfg.train.stages]))
        base_cfg = load_recipe(None, sets)
    target = read_pose_input(case / "target" / "openpose_json")
    truth = read_target(case / "target")
    out = {}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for name in variants:
            cfg = load_recipe(None, sets + variant_overrides(name, base_cfg))
            seed_everything(cfg.seed)
            if name == "base":
                model, case_arrays = build_model(cfg), prepare_case(cfg)
            else:
                say(f"{case.name}: fine-tuning {name}")
                train(cfg, Path(tmp) / name, resume="never")
                model, case_arrays = load_model(Path(tmp) / name)
            aligned = target_keypoints(target, case_arrays, cfg)
            sample_steps, scale = inference_steps or cfg.inference.steps, cfg.inference.controlnet_scale
            with torch.no_grad():
                video = edit_video(model, case_arrays, aligned, steps=sample_steps, controlnet_scale=scale)
            out[name] = score(video, truth, aligned, lpips)
            out[name]["video"] = video
            if name == "full":
                with torch.no_grad():
                    video = edit_video(model, case_arrays, case_arrays["keypoints"], steps=sample_steps,
                                       controlnet_scale=scale)
                out["source_poses"] = {**score(video, truth, aligned, lpips), "video": video}
                out["source_copy"] = {**score(case_arrays["frames"], truth, aligned, lpips),
                                      "video": case_arrays["frames"]}
                other = read_video(case / "reference" / "video.mp4").frames[: len(video)]
                out["reference_copy"] = {**score(other, truth, aligned, lpips), "video": other}
    for name, r in out.items():
        say(f"{case.name} {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "video"))
    return out


HIGHER_IS_BETTER = {"psnr", "ssim"}


def summarise(runs: list[dict], keys) -> dict:
    """Means and paired comparisons over ``runs``, a list of ``{"seed": s, "scores": {variant: metrics}}``.

    - ``mean``: every variant's metrics averaged over all runs (cases x seeds);
    - ``full_better``: for each other variant and metric, ``"k/n"``: in how many of the n runs the full model scored
      better than that variant on the same case and seed (a tie counts as not better);
    - ``seed_sd`` (two or more seeds): the standard deviation over seeds of each variant's case-averaged metric, the
      spread a difference between variants has to clear.
    """
    variants = list(runs[0]["scores"])

    def avg(rs, v, k):
        return float(f"{np.mean([r['scores'][v][k] for r in rs]):.4g}")

    out = {"mean": {v: {k: avg(runs, v, k) for k in keys} for v in variants}}
    if "full" in variants:
        def better(r, v, k):
            a, b = r["scores"]["full"][k], r["scores"][v][k]
            return a > b if k in HIGHER_IS_BETTER else a < b

        out["full_better"] = {v: {k: f"{sum(better(r, v, k) for r in runs)}/{len(runs)}" for k in keys}
                              for v in variants if v != "full"}
    seeds = sorted({r["seed"] for r in runs}, key=str)
    if len(seeds) > 1:
        by_seed = {s: [r for r in runs if r["seed"] == s] for s in seeds}
        out["seed_sd"] = {v: {k: float(f"{np.std([avg(rs, v, k) for rs in by_seed.values()], ddof=1):.3g}")
                              for k in keys} for v in variants}
    return out


def main(argv: list[str] | None = None) -> dict:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="steps of each stage (default: the bundled recipe's)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default=None,
                    help="comma-separated run seeds, each case run once per seed (default: the recipe's seed)")
    ap.add_argument("--cases", type=Path, default=Path("runs/eym_quality_cases"))
    ap.add_argument("--figure", type=Path, default=None, help="write a contact sheet of the first case (PNG)")
    ap.add_argument("--json", type=Path, default=None, help="write the per-case and mean metrics (JSON)")
    args = ap.parse_args(argv)
    from dancegen.io.atomic import write_text

    variants = tuple(args.variants.split(","))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [None]
    runs = []  # the scores without the videos
    lpips = lpips_scorer(say=print)
    for seed in seeds:
        for i in range(args.count):
            case = make_case(args.cases / f"case_{i:03d}", i)
            scores = run_case(case, variants, args.steps, say=print, lpips=lpips, seed=seed)
            if not runs and args.figure is not None:
                write_figure(case, scores, args.figure)
            runs.append({"case": i, "seed": seed, "scores": {v: {k: x for k, x in m.items() if k != "video"}
                                                             for v, m in scores.items()}})
            if args.json is not None:  # rewritten after every case: a long run's numbers survive an interruption
                write_text(args.json, json.dumps({"runs": runs}, indent=1))
    keys = ("psnr", "ssim", "pose_px", "colour", "warp") + (("lpips",) if lpips is not None else ())
    summary = summarise(runs, keys)
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        write_text(args.json, json.dumps({**summary, "runs": runs}, indent=1))
    return summary["mean"]


FIGURE_NAMES = {"full": "Edit-Your-Motion", "wo_rca": "w/o RCA", "wo_ma": "w/o MA", "wo_stl": "w/o STL",
                "base": "base", "source_poses": "src skeletons", "source_copy": "source copy",
                "reference_copy": "reference"}


def write_figure(case: Path, results: dict, path: Path) -> None:
    """Source | target (ground truth) | each variant, every other frame (labels drawn at the figure's size)."""
    from dancegen.io import montage
    from dancegen.io.video import read_video, write_image

    src = read_video(case / "source" / "video.mp4").frames
    gt = read_video(case / "target" / "video.mp4").frames
    height = src.shape[1] * 2

    def cell(img, text):
        return montage.label(montage.fit(img, height), text)

    rows = [[cell(src[t], "source"), cell(gt[t], "target")] +
            [cell(r["video"][t], FIGURE_NAMES.get(name, name)) for name, r in results.items()]
            for t in range(0, len(src), 2)]
    write_image(path, montage.grid(rows, height=height))


if __name__ == "__main__":
    main()
