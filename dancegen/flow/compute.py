"""`dancegen flow`: motion flow for a pose sequence or a video, written as `.flo`/`.npz` plus colour-wheel pictures.

Methods: "pose" (keypoint-driven flow, `pose_flow.py`), or an image estimator ("dis", "farneback", "raft") run on
the video frames, or, for a pose source, on the rendered OpenPose pose maps (DYL §2.5 runs RAFT on pose renders).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.flow import FLOW_DIRECTIONS
from dancegen.pose.sequence import PoseSequence

FLOW_METHODS = ("pose", "dis", "farneback", "raft")
OUTPUT_FORMATS = ("flo", "npz")


def _is_pose_path(p: Path) -> bool:
    if p.is_dir():
        return any(q.suffix.lower() == ".json" and q.name != "pose_meta.json" for q in p.iterdir())
    return p.suffix.lower() in (".json", ".npz")


def _parse_size(size, src_hw: tuple[int, int]) -> tuple[int, int] | None:
    """`size` as (height, width): an int is the longer side (aspect kept, as in extract-pose), or a (h, w) pair."""
    if size is None:
        return None
    if isinstance(size, int | np.integer):
        scale = int(size) / max(src_hw)
        size = (max(1, round(src_hw[0] * scale)), max(1, round(src_hw[1] * scale)))
    h, w = (int(v) for v in size)
    if h < 8 or w < 8:
        raise InputError(f"size must be at least 8x8, got {h}x{w}")
    return h, w


def load_flow_source(source) -> tuple[PoseSequence | None, np.ndarray | None, float]:
    """Resolve `source` into (poses, frames, fps): exactly one of poses / frames is set.

    `source` is a PoseSequence, an `(F, H, W, 3)` uint8 array, a pose folder / `.json` / pose `.npz`
    (dancegen.pose.openpose_json.read_pose_input), or a video / frame folder (dancegen.io.video.read_video).
    """
    if isinstance(source, PoseSequence):
        return source, None, float(source.fps)
    if isinstance(source, np.ndarray):
        return None, source, 30.0
    p = Path(source)
    if not p.exists():
        raise InputError("flow source not found", p)
    if _is_pose_path(p):
        from dancegen.pose.openpose_json import read_pose_input

        seq = read_pose_input(p)
        return seq, None, float(seq.fps)
    from dancegen.io.video import read_video

    video = read_video(p)
    return None, video.frames, float(video.fps)


def _resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def compute_flow(source, out_dir: str | os.PathLike, method: str = "pose", direction: str = "forward",
                 size=None, weights: str | os.PathLike | None = None, gt: str | os.PathLike | None = None,
                 output_format: str = "flo", preview: bool = True, iters: int = 12, device: str = "cpu",
                 limb_width: float | None = None) -> dict:
    """Compute flow between consecutive frames and write it with pictures and a report.

    Args:
        source: Poses (PoseSequence, OpenPose JSON folder, `.json`, pose `.npz`) or a video (file or frame folder).
        out_dir: Output folder. Writes `flo/frame_00000.flo ...` with colour PNGs (`output_format="flo"`) or
            `flows.npz` plus `color/frame_00000.png ...` (`"npz"`), `preview.mp4` and `report.json`.
        method: "pose" (needs poses), "dis", "farneback" or "raft" (on video frames, or on rendered pose maps).
        direction: "forward" (flow[t]: t -> t+1) or "backward" (flow[t]: t+1 -> t).
        size: Work at this size: int (the longer side; aspect kept) or (height, width); default the source's size.
        weights: RAFT checkpoint (default `$DANCEGEN_WEIGHTS_DIR/raft/raft_large_C_T_SKHT_V2-ff5fadd5.pth`).
        gt: Ground-truth flows `.npz` (`save_flow_npz` layout); adds EPE statistics to the report. It is resized
            (vectors scaled) to `size` when the sizes differ; its direction must match.
        output_format: "flo" or "npz".
        preview: Write `preview.mp4` (colour-wheel video).
        iters: RAFT iterations.
        device: torch device for RAFT.
        limb_width: Body support radius in pixels for "pose" (default: scaled with the person).

    Returns:
        The report dict (also written to `report.json`): method, direction, num_pairs, height, width,
        seconds, ms_per_pair, outputs, and `gt` statistics (epe, px1, px3, ...) when `gt` is given.

    Raises:
        InputError: unreadable source, method/source mismatch, too few frames, bad ground truth.
        MissingWeightsError: RAFT weights not found.
    """
    from dancegen.flow.io import load_flow_npz, save_flow_npz, write_flow_folder
    from dancegen.flow.vis import flows_to_colors

    if method not in FLOW_METHODS:
        raise InputError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if direction not in FLOW_DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(FLOW_DIRECTIONS)}, got {direction!r}")
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    seq, frames, fps = load_flow_source(source)
    size = _parse_size(size, (seq.height, seq.width) if seq is not None else frames.shape[1:3])
    n = seq.num_frames if seq is not None else len(frames)
    if n < 2:
        raise InputError(f"flow needs at least 2 frames, the source has {n}")

    t0 = time.perf_counter()
    if method == "pose":
        if seq is None:
            raise InputError("method 'pose' needs poses (an OpenPose folder or pose .npz); run extract-pose first, "
                             "or use --method dis/farneback/raft on the video")
        if size is not None:
            seq = seq.resized(size[1], size[0])
        from dancegen.flow.pose_flow import pose_sequence_flow

        flows = pose_sequence_flow(seq, direction, limb_width=limb_width)
        h, w = seq.height, seq.width
    else:
        if seq is not None:
            from dancegen.pose.render import render_pose_sequence

            frames = render_pose_sequence(seq, *(size[::-1] if size else (None, None)))
        elif size is not None:
            frames = _resize_frames(frames, size)
        from dancegen.flow.estimators import estimate_flow

        kw = {"weights": weights, "iters": iters, "device": device} if method == "raft" else {}
        flows = estimate_flow(frames, method, direction, **kw)
        h, w = frames.shape[1:3]
    seconds = time.perf_counter() - t0

    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    report = {"method": method, "direction": direction, "num_pairs": int(len(flows)), "height": int(h),
              "width": int(w), "seconds": round(seconds, 4), "ms_per_pair": round(1000 * seconds / len(flows), 3),
              "mean_magnitude": float(np.sqrt((flows**2).sum(1)).mean())}
    if gt is not None:  # before anything is written: a bad ground truth leaves no output behind
        report["gt"] = _compare_gt(flows, direction, gt, load_flow_npz)
    meta = {"method": method, "source": str(source) if not isinstance(source, PoseSequence | np.ndarray) else None}
    outputs = {}
    from dancegen.io.atomic import atomic_dir, write_text

    with atomic_dir(out_dir) as tmp:  # the whole folder appears at once, or not at all (Ctrl-C safe)
        if output_format == "flo":
            write_flow_folder(tmp / "flo", flows, direction, meta=meta)
            outputs["flo"] = "flo"
        else:
            save_flow_npz(tmp / "flows.npz", flows, direction, meta)
            from dancegen.io.video import write_image

            for t, img in enumerate(flows_to_colors(flows)):
                write_image(tmp / "color" / f"frame_{t:05d}.png", img)
            outputs["npz"] = "flows.npz"
            outputs["color"] = "color"
        if preview:
            from dancegen.io.video import write_video

            write_video(tmp / "preview.mp4", flows_to_colors(flows), fps=fps, metadata={"verb": "flow"})
            outputs["preview"] = "preview.mp4"
        report["outputs"] = outputs
        write_text(tmp / "report.json", json.dumps(report, indent=2))
    return report


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a non-empty folder that is not an earlier flow output (the output folder is swapped whole)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError("output path exists and is not a folder", out_dir)
    if any(out_dir.iterdir()):
        try:
            previous = json.loads((out_dir / "report.json").read_text())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict) or "method" not in previous or "num_pairs" not in previous:
            raise InputError("output folder exists and is not a flow output; refusing to replace it", out_dir)


def _compare_gt(flows: np.ndarray, direction: str, gt_path, load_flow_npz) -> dict:
    from dancegen.flow.warp import flow_stats, resize_flow

    g = load_flow_npz(gt_path)
    if g.direction != direction:
        raise InputError(f"ground truth is {g.direction} flow but {direction} flow was computed", gt_path)
    if len(g.flow) != len(flows):
        raise InputError(f"ground truth has {len(g.flow)} flow pairs, computed {len(flows)}", gt_path)
    gt = g.flow if g.flow.shape[-2:] == flows.shape[-2:] else resize_flow(g.flow, flows.shape[-2:])
    stats = flow_stats(flows, gt)
    moving = np.sqrt((gt**2).sum(1)) > 0.5
    stats["epe_moving"] = flow_stats(flows, gt, moving)["epe"] if moving.any() else float("nan")
    stats["path"] = str(gt_path)
    return stats
