"""LatentMan at toy scale with the bundled models: Table 1 / Table 2's direction on held-out synthetic motions.

Each held-out case is a motion of the synthetic world's choreography (master seed 7, never seen in training: the
text-to-image model and the ControlNets were trained on seeds 1000+ / 2000+ worlds) and a clothes prompt. Every variant
(`VARIANTS`: recipe overrides) renders the same motion, matches the same maps and starts from the same noise; the
scores are H_MSE (Eq. 9, on the body along the render's correspondences), the warping error and the adjacent-frame
MSE (consistency), the colour names of the generated top / trousers in the render's torso / thigh regions against the
prompt (text following; the control is the next case's prompt colours), and the SynthPose joints of the generated frames against the projected skeleton
(motion following; the control is another case's skeleton).

    python -m dancegen.methods.latentman.quality --count 6
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

HELDOUT_SEED = 7
MOTIONS = ("jumps", "spins", "waves both arms", "raises arms", "kicks", "squats", "steps side to side", "claps")
TOPS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple")
BOTTOMS = ("blue", "black", "grey", "red", "white", "green", "brown", "navy")
#: Table 1 / 2 rows at toy scale as overrides of the bundled recipe.
VARIANTS: dict[str, tuple[str, ...]] = {
    "per-frame": ("attention.kind=per-frame", "sla.enabled=false", "pwg.enabled=false"),
    "cross-frame": ("attention.kind=t2v-zero", "sla.enabled=false", "pwg.enabled=false"),
    "cross-frame+sla": ("attention.kind=t2v-zero", "sla.enabled=true", "pwg.enabled=false"),
    "cross-frame+pwg": ("attention.kind=t2v-zero", "sla.enabled=false", "pwg.enabled=true"),
    "latentman": ("attention.kind=t2v-zero", "sla.enabled=true", "pwg.enabled=true"),
}
# HumanML3D-22 joint -> COCO-18 index, for the joints both skeletons have at the same place
_H22_TO_COCO = {16: 5, 17: 2, 18: 6, 19: 3, 20: 7, 21: 4, 1: 11, 2: 8, 4: 12, 5: 9, 7: 13, 8: 10}
TOP_LABELS, THIGH_LABELS = (1, 2), (7, 8, 9, 10)


def heldout_cases(count: int, seed: int = HELDOUT_SEED) -> list[dict]:
    """``count`` cases: motion text, motion seed and a clothes prompt (colours cycle so neighbours differ)."""
    from dancegen.synth.motion import describe_motion

    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        prim = MOTIONS[k % len(MOTIONS)]
        top, bottom = TOPS[k % len(TOPS)], BOTTOMS[(k * 3 + 1) % len(BOTTOMS)]
        if top == bottom:
            bottom = BOTTOMS[(k * 3 + 2) % len(BOTTOMS)]
        cases.append({"motion": describe_motion([prim]), "motion_seed": int(seed * 1000 + k),
                      "prompt": f"a dancer in a {top} t-shirt and {bottom} trousers", "top": top, "bottom": bottom,
                      "noise_seed": int(rng.integers(0, 2**31 - 1))})
    return cases


def colour_hits(video: np.ndarray, labels: np.ndarray, top: str, bottom: str) -> list[float]:
    """1/0 per garment: the median colour of the generated frames inside the render's torso / thigh labels is the
    prompt's colour (nearest of the synthetic world's colour names)."""
    from dancegen.synth.appearance import nearest_colour_name

    out = []
    for want, labs in ((top, TOP_LABELS), (bottom, THIGH_LABELS)):
        m = np.isin(labels, labs)
        if m.sum() >= 4:
            out.append(float(nearest_colour_name(np.median(video[m].reshape(-1, 3), axis=0)) == want))
    return out


def pose_error(video: np.ndarray, joints2d: np.ndarray, estimator) -> float:
    """Mean pixel distance between SynthPose's joints on ``video`` and the projected skeleton (shared joints)."""
    pred = estimator(video)  # (F, 18, 3) COCO-18 pixels + confidence
    h22, coco = np.array(list(_H22_TO_COCO)), np.array(list(_H22_TO_COCO.values()))
    d = np.linalg.norm(pred[:, coco, :2] - joints2d[:, h22], axis=-1)
    return float(d.mean())


def run_case(case: dict, variants: dict[str, tuple[str, ...]], comps, nets, steps: int | None = None,
             num_frames: int = 8, extra: tuple[str, ...] = (), other: dict | None = None) -> dict:
    """Every variant on one case; ``{variant: {"video", "h_mse", "warp", "adjacent", "colour", "colour_other"}}``
    plus the render (``colour_other``: the same garments scored against ``other`` case's colours, the control)."""
    from dancegen.methods.latentman.config import BUNDLED_OVERRIDES, load_recipe
    from dancegen.methods.latentman.text2character import generate, motion_joints, render_conditions
    from dancegen.metrics.consistency import adjacent_frame_mse, h_mse, warping_error

    out: dict = {}
    base = list(BUNDLED_OVERRIDES) + ["motion.source=procedural", f"motion.seed={case['motion_seed']}",
                                      f"num_frames={num_frames}", f"seed={case['noise_seed']}", *extra]
    if steps is not None:
        base.append(f"sampler.steps={steps}")
    cfg = load_recipe(None, base + ["sla.enabled=true", "pwg.enabled=true"])  # both sets of maps, once per case
    cfg.prompt, cfg.motion.text = case["prompt"], case["motion"]
    joints, _ = motion_joints(cfg)
    prepared = (joints, *render_conditions(joints, cfg, cfg.render.size // comps.vae_scale_factor))
    _, depth, render, lp, pp = prepared
    for name, sets in variants.items():
        cfg = load_recipe(None, base + list(sets))
        cfg.prompt = case["prompt"]
        video = generate(cfg, depth, lp, pp, comps, nets)
        res = min(cfg.eval.h_mse_res, cfg.render.size)
        out[name] = {"video": video, "h_mse": h_mse(video, render.iuv, size=res), "warp": warping_error(video),
                     "adjacent": adjacent_frame_mse(video), "colour": colour_hits(video, render.labels, case["top"],
                                                                                    case["bottom"])}
        if other is not None:
            out[name]["colour_other"] = colour_hits(video, render.labels, other["top"], other["bottom"])
    out["_render"] = prepared
    return out


def evaluate(count: int = 4, steps: int | None = None, variants: dict | None = None, pose: bool = True,
             extra: tuple[str, ...] = ()) -> dict:
    """Mean scores per variant over ``count`` held-out cases (module docstring)."""
    import torch

    from dancegen.methods.latentman.config import load_recipe
    from dancegen.methods.latentman.text2character import load_models
    from dancegen.motion.render import project_joints

    if count < 2:
        raise ValueError("count must be >= 2: each case's controls are another case's skeleton and colours")
    variants = variants or VARIANTS
    comps, nets = load_models(load_recipe(None, []), plan=None)
    est = None
    if pose:
        from dancegen.pose.backends.synthpose import SynthPoseEstimator

        est = SynthPoseEstimator.load(None)
    cases = heldout_cases(count)
    rows: dict = {v: {"h_mse": [], "warp": [], "adjacent": [], "colour": [], "colour_other": [], "pose": [],
                      "pose_other": []} for v in variants}
    renders = []
    with torch.no_grad():
        results = [run_case(c, variants, comps, nets, steps, extra=extra, other=cases[(k + 1) % len(cases)])
                   for k, c in enumerate(cases)]
    for res in results:
        joints, _, render, _, _ = res["_render"]
        renders.append(project_joints(joints, render.camera))
    for k, res in enumerate(results):
        for v in variants:
            r = res[v]
            for key in ("h_mse", "warp", "adjacent"):
                rows[v][key].append(float(r[key]))
            rows[v]["colour"].extend(r["colour"])
            rows[v]["colour_other"].extend(r.get("colour_other", []))
            if est is not None:
                rows[v]["pose"].append(pose_error(r["video"], renders[k], est))
                rows[v]["pose_other"].append(pose_error(r["video"], renders[(k + 1) % len(renders)], est))
    summary = {v: {key: (float(np.mean(vals)) if vals else float("nan")) for key, vals in r.items()}
               for v, r in rows.items()}
    return {"count": count, "cases": cases, "per_case": rows, "summary": summary}


def format_report(rep: dict) -> str:
    lines = [f"{'variant':<18} {'H_MSE':>8} {'warp':>9} {'adjacent':>9} {'colour':>7} {'other':>6} {'pose px':>8} "
             f"{'other':>7}"]
    for v, s in rep["summary"].items():
        lines.append(f"{v:<18} {s['h_mse']:8.1f} {s['warp']:9.2e} {s['adjacent']:9.1f} {s['colour']:7.2f} "
                     f"{s['colour_other']:6.2f} "
                     f"{s['pose']:8.2f} {s['pose_other']:7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], help="extra recipe overrides for every variant")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rep = evaluate(a.count, a.steps, extra=tuple(a.set))
    print(format_report(rep))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: v for k, v in rep.items()}, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
