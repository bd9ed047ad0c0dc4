"""Edit-Your-Motion on this machine: seconds per fine-tune step (each stage), seconds per generated frame (DDIM
inversion + sampling) and peak memory against the clip's frame count, as ratios to the 8-frame case, one run.

    python bench/edit_your_motion_bench.py [--frames 4,8,16] [--steps 3] [--ddim 10]

Bundled 64 px models (t2i-tiny + controlnet-openpose-tiny), a synthetic edit case per frame count. Each frame count
runs in its own process so that its peak resident memory (``ru_maxrss``) is its own; "peak" below is that peak minus
the resident memory after the models loaded, i.e. what the clip's activations and optimizer state add.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(frames: int, steps: int, ddim: int, work: Path) -> dict:
    """One frame count, in this process: fine-tune steps of each stage, then one edit."""
    import resource

    import torch

    from dancegen.core.train import select_trainable
    from dancegen.methods.edit_your_motion.animate import target_keypoints
    from dancegen.methods.edit_your_motion.config import BUNDLED_OVERRIDES, load_recipe
    from dancegen.methods.edit_your_motion.data import CaseDataset, prepare_case
    from dancegen.methods.edit_your_motion.model import build_model
    from dancegen.methods.edit_your_motion.pipeline import edit_video
    from dancegen.methods.edit_your_motion.quality import make_case
    from dancegen.methods.edit_your_motion.train import make_loss_fn, stage_patterns
    from dancegen.pose.openpose_json import read_pose_input

    torch.manual_seed(0)
    case_dir = make_case(work / f"case_{frames}", 0, frames=frames)
    info = json.loads((case_dir / "case.json").read_text())
    src = case_dir / "source"
    cfg = load_recipe(None, [*BUNDLED_OVERRIDES, f"data.source={src / 'video.mp4'}",
                             f"data.poses={src / 'openpose_json'}", "data.masks=given",
                             f"data.masks_path={src / 'masks'}", f"data.prompt={info['prompt']}",
                             f"data.num_frames={frames}"])
    model = build_model(cfg)
    case = prepare_case(cfg)
    batch = {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in CaseDataset(model, case)[0].items()}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"frames": frames}
    for stage in cfg.train.stages:
        names = select_trainable(model, stage_patterns(stage, model), [])
        params = [p for n, p in model.named_parameters() if n in set(names)]
        opt = torch.optim.AdamW(params, lr=stage.lr)
        loss_fn = make_loss_fn(stage.masked)
        loss_fn(model, batch).backward()  # warm-up step, not timed
        opt.step()
        opt.zero_grad()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss_fn(model, batch).backward()
            opt.step()
            opt.zero_grad()
        out[f"step_{stage.name}"] = (time.perf_counter() - t0) / steps
    model.requires_grad_(False)
    aligned = target_keypoints(read_pose_input(case_dir / "reference" / "openpose_json"), case, cfg)
    t0 = time.perf_counter()
    with torch.no_grad():
        edit_video(model, case, aligned, steps=ddim)
    out["edit_s_per_frame"] = (time.perf_counter() - t0) / frames
    out["peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", default="4,8,16")
    ap.add_argument("--steps", type=int, default=3, help="timed fine-tune steps per stage")
    ap.add_argument("--ddim", type=int, default=10, help="DDIM steps of inversion and of sampling")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(measure(a.one, a.steps, a.ddim, a.work)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in a.frames.split(",")):
            res = subprocess.run([sys.executable, __file__, "--one", str(n), "--steps", str(a.steps), "--ddim",
                                  str(a.ddim), "--work", tmp], capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = next((r for r in rows if r["frames"] == 8), rows[0])
    stages = [k for k in rows[0] if k.startswith("step_")]
    head = " ".join(f"{k[5:] + ' s/step':>17}" for k in stages)
    print(f"{'frames':>6} {head} {'edit s/frame':>13} {'peak MB':>8}  ratios to {ref['frames']} frames "
          f"({', '.join(k[5:] for k in stages)}, edit/frame, peak)")
    for r in rows:
        cells = " ".join(f"{r[k]:17.3f}" for k in stages)
        ratios = ", ".join(f"{r[k] / ref[k]:.2f}" for k in [*stages, "edit_s_per_frame", "peak_mb"])
        print(f"{r['frames']:>6} {cells} {r['edit_s_per_frame']:13.3f} {r['peak_mb']:8.0f}  {ratios}")
    print(f"(DDIM {a.ddim} + {a.ddim} steps per edit; the bundled recipe fine-tunes "
          f"{sum(1 for _ in stages)} stages of 150 steps and edits with 50 + 50)")


if __name__ == "__main__":
    main()
