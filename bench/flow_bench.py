"""Benchmark: pose-driven flow vs DIS vs Farneback (and RAFT when weights exist): EPE and time per pair.

Ground truth comes from a small built-in articulated figure (rigid textured capsules, a torso and a head moved by
2D forward kinematics over a static textured background; exact per-pixel flow from each part's rigid motion), or
from `dancegen synth` clips with `--synth-dir` (folders holding video.mp4, poses/ and flow_fw.npz). All numbers of a
table come from one run; ratios are relative to the pose flow row.

    .venv/bin/python bench/flow_bench.py                     # 3 clips x 16 frames at 256x256
    .venv/bin/python bench/flow_bench.py --clips 5 --kp-noise 1,2 --size 256
    .venv/bin/python bench/flow_bench.py --synth-dir out/synth   # every clip folder below it
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancegen.flow.estimators import estimate_flow
from dancegen.flow.pose_flow import pose_sequence_flow
from dancegen.flow.warp import flow_stats
from dancegen.pose.sequence import PoseSequence

# COCO-18 rest pose (offsets from the neck, pixels at 256x256) and the kinematic tree.
REST = np.array([
    [0, -20], [0, 0], [-25, 2], [-45, 30], [-60, 55], [25, 2], [45, 30], [60, 55],
    [-15, 60], [-18, 100], [-20, 140], [15, 60], [18, 100], [20, 140], [-5, -25], [5, -25], [-10, -22], [10, -22],
], np.float64)
PARENT = {0: 1, 2: 1, 3: 2, 4: 3, 5: 1, 6: 5, 7: 6, 8: 1, 9: 8, 10: 9, 11: 1, 12: 11, 13: 12,
          14: 0, 15: 0, 16: 0, 17: 0}
TORSO = (2, 5, 11, 8)
HEAD = (0, 14, 15, 16, 17)
# Joints whose angle drives their subtree (amplitude in degrees).
DRIVEN = {3: 50, 4: 60, 6: 50, 7: 60, 9: 30, 10: 35, 12: 30, 13: 35, 0: 15}
# Rendered parts back to front: (name, kind, joints, radius at 256 px).
PARTS = [
    ("l_thigh", "bone", (11, 12), 9), ("l_shin", "bone", (12, 13), 8),
    ("r_thigh", "bone", (8, 9), 9), ("r_shin", "bone", (9, 10), 8),
    ("torso", "poly", TORSO, 6), ("head", "disc", HEAD, 0),
    ("l_upper", "bone", (5, 6), 7), ("l_fore", "bone", (6, 7), 6),
    ("r_upper", "bone", (2, 3), 7), ("r_fore", "bone", (3, 4), 6),
]


def _rot(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def _children(j):
    return [k for k, p in PARENT.items() if p == j]


def _subtree(j):
    out = [j]
    for c in _children(j):
        out += _subtree(c)
    return out


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # (F, H, W, 3) uint8
    poses: PoseSequence
    gt: np.ndarray  # (F-1, 2, H, W) forward
    body: np.ndarray  # (F-1, H, W) bool: rendered body pixels of frame t


def _dance(num_frames: int, rng: np.random.Generator, scale: float, size: int):
    """Joint positions `(F, 18, 2)` and per-joint global angles `(F, 18)` from random sinusoidal joint angles."""
    amp = {j: np.deg2rad(a) * rng.uniform(0.5, 1.0) for j, a in DRIVEN.items()}
    freq = {j: rng.uniform(0.04, 0.12) for j in DRIVEN}
    phase = {j: rng.uniform(0, 2 * np.pi) for j in DRIVEN}
    root_amp, root_f, root_p = np.deg2rad(10) * rng.uniform(0.3, 1), rng.uniform(0.03, 0.08), rng.uniform(0, 6)
    drift = rng.uniform(-2.0, 2.0, 2)
    pos = np.zeros((num_frames, 18, 2))
    ang = np.zeros((num_frames, 18))
    for t in range(num_frames):
        root = np.array([size / 2, size * 0.3]) + drift * t + 3 * np.sin([0.3 * t, 0.5 * t])
        local = {j: amp[j] * np.sin(2 * np.pi * freq[j] * t + phase[j]) for j in DRIVEN}
        a_root = root_amp * np.sin(2 * np.pi * root_f * t + root_p)
        pos[t, 1] = root
        ang[t, 1] = a_root
        _place(pos[t], ang[t], 1, a_root, local, scale)
    return pos, ang


def _place(pos_t, ang_t, j, parent_angle, local, scale):
    """Forward kinematics below joint j: each bone (parent -> c) is the rest bone rotated by its global angle."""
    for c in _children(j):
        # Eyes and ears stay rigid with the nose; the nose (head) and limbs add their own joint angle.
        a = parent_angle + (0.0 if c in HEAD[1:] else local.get(c, 0.0))
        pos_t[c] = pos_t[j] + _rot(a) @ ((REST[c] - REST[j]) * scale)
        ang_t[c] = a
        _place(pos_t, ang_t, c, a, local, scale)


def _part_frame(kind, joints, pos_t, ang_t):
    """Rigid frame (origin, angle) of a part in one frame."""
    if kind == "bone":
        return pos_t[joints[0]], ang_t[joints[1]]
    if kind == "poly":
        return pos_t[1], ang_t[2]  # torso: shoulders/hips all carry the root angle
    return pos_t[1], ang_t[0]  # head rotates about the neck with the nose's angle


def _render(pos, ang, scale, size, rng):
    """Frames, forward GT flow and body masks for one clip."""
    import cv2

    f_count = len(pos)
    tex = cv2.GaussianBlur(rng.random((512, 512, 3)).astype(np.float32), (0, 0), 2.5)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    bg = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 3.0)
    bg = 0.25 + 0.5 * (bg - bg.min()) / (bg.max() - bg.min())
    offsets = rng.uniform(-150, 150, (len(PARTS), 2))
    tints = rng.uniform(0.4, 1.0, (len(PARTS), 3))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    P = np.stack([xs.ravel(), ys.ravel()], 1)
    # Part shapes in their local frames (from frame 0; parts are rigid).
    shapes = []
    for _, kind, joints, rad in PARTS:
        o, a = _part_frame(kind, joints, pos[0], ang[0])
        local = (pos[0][list(joints)] - o) @ _rot(a)  # R^T (p - o)
        shapes.append((kind, local, rad * scale))
    frames = np.zeros((f_count, size, size, 3), np.uint8)
    labels = np.full((f_count, size * size), -1, np.int64)
    locals_ = np.zeros((f_count, size * size, 2))
    for t in range(f_count):
        for k, (kind, shp, rad) in enumerate(shapes):
            o, a = _part_frame(kind, PARTS[k][2], pos[t], ang[t])
            loc = (P - o) @ _rot(a)
            if kind == "bone":
                (x0, y0), (x1, y1) = shp
                L = max(np.hypot(x1 - x0, y1 - y0), 1e-6)
                u = np.clip(((loc[:, 0] - x0) * (x1 - x0) + (loc[:, 1] - y0) * (y1 - y0)) / L**2, 0, 1)
                d = np.hypot(loc[:, 0] - (x0 + u * (x1 - x0)), loc[:, 1] - (y0 + u * (y1 - y0)))
                inside = d <= rad
            elif kind == "poly":
                inside = _poly_inside(loc, shp, rad)
            else:
                c = shp.mean(0)
                r = max(1.3 * np.linalg.norm(shp - c, axis=1).max(), 0.5 * np.linalg.norm(shp[0]))
                inside = np.hypot(loc[:, 0] - c[0], loc[:, 1] - c[1]) <= r
            labels[t, inside] = k
            locals_[t, inside] = loc[inside]
        img = bg.reshape(-1, 3).copy()
        body = labels[t] >= 0
        lab = labels[t, body]
        uv = locals_[t, body] + offsets[lab] + 256
        mx = np.mod(uv[:, 0], 511).astype(np.float32).reshape(-1, 1)
        my = np.mod(uv[:, 1], 511).astype(np.float32).reshape(-1, 1)
        col = cv2.remap(tex, mx, my, cv2.INTER_LINEAR).reshape(-1, 3)
        img[body] = 0.15 + 0.85 * col * tints[lab]
        frames[t] = (255 * img.reshape(size, size, 3)).clip(0, 255).astype(np.uint8)
    gt = np.zeros((f_count - 1, 2, size, size), np.float32)
    masks = np.zeros((f_count - 1, size, size), bool)
    for t in range(f_count - 1):
        body = labels[t] >= 0
        lab = labels[t, body]
        dst = np.zeros((body.sum(), 2))
        for k in np.unique(lab):
            sel = lab == k
            o, a = _part_frame(PARTS[k][1], PARTS[k][2], pos[t + 1], ang[t + 1])
            dst[sel] = locals_[t, body][sel] @ _rot(a).T + o
        fl = np.zeros((size * size, 2))
        fl[body] = dst - P[body]
        gt[t] = fl.reshape(size, size, 2).transpose(2, 0, 1)
        masks[t] = body.reshape(size, size)
    return frames, gt, masks


def _poly_inside(loc, poly, margin):
    """Inside the polygon grown by `margin` (all local coords)."""
    from dancegen.flow.pose_flow import _polygon_dist2, _polygon_order

    return _polygon_dist2(loc[:, 0][None], loc[:, 1][None], _polygon_order(poly)) <= margin**2


def make_clips(num_clips: int, num_frames: int, size: int, seed: int) -> list[Clip]:
    clips = []
    for c in range(num_clips):
        rng = np.random.default_rng(seed + c)
        scale = size / 256
        pos, ang = _dance(num_frames, rng, scale, size)
        frames, gt, body = _render(pos, ang, scale, size, rng)
        kps = np.concatenate([pos, np.ones((num_frames, 18, 1))], -1).astype(np.float32)
        seq = PoseSequence(kps, "coco18", size, size, fps=24.0)
        clips.append(Clip(f"figure{c}", frames, seq, gt, body))
    return clips


def load_synth_clips(root: Path) -> list[Clip]:
    from dancegen.flow.io import load_flow_npz
    from dancegen.io.video import read_video
    from dancegen.pose.openpose_json import read_pose_input

    clips = []
    for d in sorted({p.parent for p in root.rglob("flow_fw.npz")}):
        video = read_video(d / "video.mp4")
        seq = read_pose_input(d / "poses")
        gt = load_flow_npz(d / "flow_fw.npz").flow
        body = np.ones(gt.shape[:1] + gt.shape[2:], bool)
        mask_file = d / "masks.npz"
        if mask_file.is_file():
            with np.load(mask_file) as z:
                body = np.asarray(z[list(z.keys())[0]][:-1]).astype(bool)
        n = min(video.num_frames, seq.num_frames, len(gt) + 1)
        clips.append(Clip(d.name, video.frames[:n], seq[:n], gt[:n - 1], body[:n - 1]))
    if not clips:
        raise SystemExit(f"no clip folders with flow_fw.npz under {root}")
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
    ap.add_argument("--synth-dir", type=Path, default=None, help="use dancegen synth clips instead of the figure")
    ap.add_argument("--raft-weights", default=None, help="RAFT-large checkpoint (adds a RAFT row)")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t = time.perf_counter()
    if args.synth_dir:
        clips = load_synth_clips(args.synth_dir)
        header = f"synth clips from {args.synth_dir}: {len(clips)} clips"
    else:
        clips = make_clips(args.clips, args.frames, args.size, args.seed)
        header = f"built-in figure: {args.clips} clips x {args.frames} frames at {args.size}x{args.size}"
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
