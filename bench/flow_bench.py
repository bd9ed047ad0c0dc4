"""Benchmark: pose-driven flow vs DIS vs Farneback (and RAFT when weights exist): EPE and time per pair.

Ground truth comes from the synthetic dance world (`dancegen.synth.render_clip`, rendered in memory): exact per-pixel
forward flow, the dancer's true COCO-18 keypoints and person masks. All numbers of a table come from one run; ratios
are relative to the pose-flow row. Pose flow uses the true keypoints; the "kp noise" rows add Gaussian jitter of the
kind a detector gives.

    .venv/bin/python bench/flow_bench.py                         # 3 clips x 16 frames at 256x256, static camera
    .venv/bin/python bench/flow_bench.py --clips 5 --kp-noise 1,2 --size 256 --camera pan
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np

from dancegen.flow.estimators import estimate_flow
from dancegen.flow.pose_flow import pose_sequence_flow
from dancegen.flow.warp import flow_stats
from dancegen.pose.sequence import PoseSequence


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    poses: PoseSequence  # COCO-18, the clip's true keypoints
    gt: np.ndarray  # (F-1, 2, H, W) forward flow
    body: np.ndarray  # (F-1, H, W) bool, person mask of frame t


def make_clips(n: int, num_frames: int, size: int, seed: int, camera: str = "static") -> list[Clip]:
    """Render `n` synthetic clips in memory with `dancegen.synth` (exact per-pixel forward flow)."""
    from dancegen.synth import render_clip

    clips = []
    for i in range(n):
        c = render_clip(seed=seed + i, size=size, num_frames=num_frames, camera_motion=camera)
        clips.append(Clip(f"synth seed {seed + i}", c.frames, c.pose_sequence(), c.flow_forward, c.masks[:-1]))
    return clips


def _timed(fn, n_pairs):
    t = time.perf_counter()
    out = fn()
    return out, 1000 * (time.perf_counter() - t) / n_pairs


def run(clips: list[Clip], kp_noise: list[float], seed: int, raft_weights: str | None) -> list[dict]:
    from dancegen.pose.render import render_pose_sequence

    rng = np.random.default_rng(seed)
    methods = {
        "pose": lambda c: pose_sequence_flow(c.poses, "forward"),
        "dis (video)": lambda c: estimate_flow(c.frames, "dis"),
        "farneback (video)": lambda c: estimate_flow(c.frames, "farneback"),
        "dis (pose maps)": lambda c: estimate_flow(render_pose_sequence(c.poses), "dis"),
        "zero": lambda c: np.zeros_like(c.gt),
    }
    for sd in kp_noise:  # pose flow from jittered keypoints, as a detector would give them
        def noisy(c, sd=sd):
            k = c.poses.keypoints.copy()
            k[..., :2] += rng.normal(0, sd, k[..., :2].shape)
            return pose_sequence_flow(c.poses.replace(keypoints=k), "forward")
        methods[f"pose (kp noise {sd:g}px)"] = noisy
    if raft_weights:
        from dancegen.flow.raft import load_raft

        model = load_raft(raft_weights)
        methods["raft (video)"] = lambda c: estimate_flow(c.frames, "raft", model=model)
    rows = []
    for name, fn in methods.items():
        preds, gts, bodies, ms = [], [], [], []
        for c in clips:
            pred, t = _timed(lambda c=c, fn=fn: fn(c), len(c.gt))
            preds.append(pred)
            gts.append(c.gt)
            bodies.append(c.body)
            ms.append(t)
        pred, gt, body = np.concatenate(preds), np.concatenate(gts), np.concatenate(bodies)
        moving = np.sqrt((gt**2).sum(1)) > 0.5
        rows.append({"method": name, "epe": flow_stats(pred, gt)["epe"], "epe_body": flow_stats(pred, gt, body)["epe"],
                     "px3_body": flow_stats(pred, gt, body)["px3"], "epe_moving": flow_stats(pred, gt, moving)["epe"],
                     "ms": float(np.mean(ms))})
    return rows


def print_table(rows: list[dict], header: str) -> None:
    base = next(r for r in rows if r["method"] == "pose")
    print(header)
    print(f"{'method':28s} {'EPE all':>8s} {'EPE body':>9s} {'>3px body':>10s} {'EPE moving':>11s} {'ms/pair':>8s} "
          f"{'EPE body / pose':>16s} {'time / pose':>12s}")
    for r in rows:
        print(f"{r['method']:28s} {r['epe']:8.3f} {r['epe_body']:9.3f} {100 * r['px3_body']:9.1f}% "
              f"{r['epe_moving']:11.3f} {r['ms']:8.2f} {r['epe_body'] / max(base['epe_body'], 1e-9):16.2f} "
              f"{r['ms'] / max(base['ms'], 1e-9):12.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kp-noise", default="0.5,1.5", help="comma-separated keypoint noise std (px): one pose row each")
    ap.add_argument("--camera", default="static", help="synthetic camera: static | pan | zoom | shake")
    ap.add_argument("--raft-weights", default=None, help="RAFT-large checkpoint (adds a RAFT row)")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t = time.perf_counter()
    clips = make_clips(args.clips, args.frames, args.size, args.seed, args.camera)
    header = f"dancegen synth: {args.clips} clips x {args.frames} frames at {args.size}x{args.size}, {args.camera} camera"
    n_pairs = sum(len(c.gt) for c in clips)
    body = float(np.mean([c.body.mean() for c in clips]))
    mag = float(np.mean([np.sqrt((c.gt ** 2).sum(1))[c.body].mean() for c in clips]))
    header += f", {n_pairs} pairs, body {100 * body:.1f}% of pixels, mean GT motion on body {mag:.2f} px " \
              f"(data {time.perf_counter() - t:.1f}s)"
    noise = [float(v) for v in args.kp_noise.split(",") if v.strip() and float(v) > 0]
    rows = run(clips, noise, args.seed, args.raft_weights)
    print_table(rows, header)
    return rows


if __name__ == "__main__":
    main()
