"""Seconds per frame of `text2character --poses` (Dancing Avatar) on this machine for every combination of the three
alignment switches, as ratios to frame-by-frame T2I + OpenPose ControlNet (all off), measured in one run on the same
poses, prompt and seed.

    python bench/dancing_avatar_bench.py [--frames 8] [--steps 20] [--repeats 1]

Bundled 64 px models, one held-out synthetic clip. The character pack (reference images + the two LoRAs) is made once
and timed separately: it is paid once per character, not per frame (with LoRAs attached, the frames cost a little
more). The background switch includes the plate (two images, paid once per video, spread over the frames here).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()

    import torch

    from dancegen.core.lora import set_lora
    from dancegen.methods.dancing_avatar.character import attach_pack, make_pack
    from dancegen.methods.dancing_avatar.config import BUNDLED_OVERRIDES, load_recipe
    from dancegen.methods.dancing_avatar.quality import heldout_cases
    from dancegen.methods.dancing_avatar.text2character import generate, load_models, person_masks

    case = heldout_cases(1, a.frames)[0]
    base = [*BUNDLED_OVERRIDES, f"sampler.steps={a.steps}"]
    cfg = load_recipe(None, base)
    cfg.prompt.clothes, cfg.prompt.face, cfg.prompt.place = case["clothes"], case["face"], case["place"]
    comps, nets, note = load_models(cfg)
    if note:
        print(note)
    seq = case["poses"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pack = make_pack(cfg, comps, nets, Path(tmp) / "pack")
        pack_s = time.perf_counter() - t0
    times = {}
    for intra, background, inter in itertools.product((False, True), repeat=3):
        c = load_recipe(None, base + [f"intra.enabled={intra}", f"background.enabled={background}",
                                      f"inter.enabled={inter}"])
        c.prompt = cfg.prompt
        if intra:
            attach_pack(comps.unet, pack)
        else:
            set_lora(comps.unet, None)
        masks = person_masks(seq, c) if background else None
        best = float("inf")
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                generate(c, seq, comps, nets, masks)
            best = min(best, time.perf_counter() - t0)
        times[(intra, background, inter)] = best
    ref = times[(False, False, False)]
    print(f"character pack: {pack_s:.1f} s once ({cfg.intra.n_ref_images} references x 2, {cfg.intra.steps} LoRA "
          f"steps x 2)")
    print(f"{'intra':>6} {'background':>10} {'inter':>6} {'s/frame':>8} {'x framewise':>12}")
    for (intra, background, inter), t in times.items():
        print(f"{int(intra):>6} {int(background):>10} {int(inter):>6} {t / a.frames:8.3f} {t / ref:12.2f}")


if __name__ == "__main__":
    main()
