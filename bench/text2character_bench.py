"""Seconds per frame of `text2character` (LatentMan) on this machine, and the cost of SLA and PWG as ratios to the
baseline (cross-frame attention only), measured in one run on the same prepared motion, render and correspondences.

    python bench/text2character_bench.py [--frames 8] [--steps 20] [--repeats 2]

Bundled 64 px models, procedural motion; the render + correspondence time is reported separately (it is paid once
per video, shared by every variant).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()

    from dancegen.methods.latentman.config import BUNDLED_OVERRIDES, load_recipe
    from dancegen.methods.latentman.quality import VARIANTS
    from dancegen.methods.latentman.text2character import generate, load_models, motion_joints, render_conditions

    base = [*BUNDLED_OVERRIDES, "motion.source=procedural", f"num_frames={a.frames}", f"sampler.steps={a.steps}"]
    cfg = load_recipe(None, base)
    cfg.prompt = "a dancer in a red t-shirt and blue trousers"
    cfg.motion.text = "a person jumps and spins"
    comps, nets = load_models(cfg)
    joints, _ = motion_joints(cfg)
    t0 = time.perf_counter()
    depth, render, lp, pp = render_conditions(joints, cfg, cfg.render.size // comps.vae_scale_factor)
    prep = time.perf_counter() - t0
    times = {}
    for name, sets in VARIANTS.items():
        c = load_recipe(None, base + list(sets))
        c.prompt = cfg.prompt
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            generate(c, depth, lp, pp, comps, nets)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    ref = times["cross-frame"]
    print(f"render + correspondences: {prep:.2f} s for {a.frames} frames at {cfg.render.size} px")
    print(f"{'variant':<18} {'s/frame':>8} {'x cross-frame':>14}")
    for name, t in times.items():
        print(f"{name:<18} {t / a.frames:8.3f} {t / ref:14.2f}")


if __name__ == "__main__":
    main()
