"""`dancegen animate --method edit-your-motion --model CASE --poses TARGET -o out.mp4` (spec §2.8-2.9).

1. The case folder (`finetune-oneshot`'s output) gives the fine-tuned networks, the source frames, their skeletons
   and the prompt; no ``--ref``.
2. The target skeletons (an OpenPose JSON folder, .npz, a motion file, or a video to estimate them from) are brought
   into the case's square frame, cut to the source's frame count, and moved and scaled onto the source body by the
   skeleton offset (Algorithm 1, ``dancegen.pose.retarget.skeleton_offset``; ``inference.skeleton_offset``).
3. DDIM inversion of the source with the source skeletons, DDIM sampling with the target skeletons
   (`pipeline.edit_video`).
4. The video written atomically with its provenance, the aligned target skeletons (``<out>.poses.npz``) and, with
   ``--preview``, a source | target skeleton | result video.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".gif")


def target_keypoints(seq, case: dict, cfg, say=lambda m: None) -> np.ndarray:
    """The target skeletons in the case's pixels, cut to its frame count and aligned onto the source body."""
    from dancegen.methods.edit_your_motion.data import _crop_poses, pose_sequence
    from dancegen.pose.convert import convert
    from dancegen.pose.retarget import skeleton_offset

    f, size = case["frames"].shape[0], case["frames"].shape[1]
    if len(seq) < f:
        raise InputError(f"the target has {len(seq)} skeleton frames; the fine-tuned source has {f}")
    if len(seq) > f:
        say(f"using the first {f} of the {len(seq)} target frames (the source's length)")
    seq = convert(seq[:f], "coco18") if seq.format != "coco18" else seq[:f]
    seq = _crop_poses(seq, (seq.height, seq.width), size)
    off = cfg.inference.skeleton_offset
    if not off.enabled:
        return seq.keypoints
    src = pose_sequence(case["keypoints"], size, float(case["fps"]))
    return skeleton_offset(src, seq, mode=off.mode, keep_aspect=off.keep_aspect, conf_thr=off.conf).keypoints


def animate(request, progress=None) -> dict:
    """Make the source of the case folder ``request.model`` perform ``request.poses`` (module docstring).

    Args:
        request: a `dancegen.requests.AnimateRequest` (poses, out, model = the case folder, overrides, steps,
            guidance_scale, device, dtype, preview, dry_run).
        progress: optional ``progress(message)``.

    Returns:
        Report dict (model, frames, size, seconds, outputs).
    """
    from dancegen.console import progress_bar
    from dancegen.io.video import write_video
    from dancegen.methods.edit_your_motion.model import LAYOUT, build_model, load_model
    from dancegen.methods.edit_your_motion.pipeline import edit_video
    from dancegen.pose.inputs import load_poses

    say = progress or (lambda msg: None)
    if request.ref is not None:
        raise InputError("edit-your-motion edits the source of its case folder (--model); drop --ref")
    if request.model is None:
        raise InputError("edit-your-motion needs --model CASE, a folder written by `dancegen finetune-oneshot`")
    out = Path(request.out) if request.out is not None else None
    if out is None and not request.dry_run:
        raise InputError("animate needs -o OUT.mp4")
    if out is not None and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"animate writes a video ({', '.join(VIDEO_SUFFIXES)}); got {out.name}", out)
    folder = LAYOUT.resolve(request.model)
    seq = None if request.dry_run else load_poses(request.poses)  # bad pose input fails before models load
    plan = request.runtime("auto", "auto")
    say("loading the fine-tuned case")
    model, case = load_model(folder, list(request.overrides or []), dtype=plan.dtype,
                             allow_download=request.downloads_allowed())
    cfg = model.config
    inf = cfg.inference
    steps = int(request.steps or inf.steps)
    guidance = float(request.guidance_scale if request.guidance_scale is not None else inf.guidance_scale)
    report = {"model": str(folder), "method": "edit-your-motion", "frames": int(case["frames"].shape[0]),
              "size": [int(case["frames"].shape[1])] * 2, "steps": steps, "runtime": plan.as_dict()}
    if request.dry_run:
        report["dry_run"] = True
        return report
    target = target_keypoints(seq, case, cfg, say)
    inv_model = None
    if inf.inversion_model == "base":
        inv_model = build_model(cfg, dtype=plan.dtype, allow_download=request.downloads_allowed())
        inv_model.to(plan.device)
    model.to(plan.device)
    t0 = time.perf_counter()
    total = steps + int(inf.inversion_steps or steps)
    with progress_bar(total, "invert + sample") as bar:
        video = edit_video(model, case, target, steps=steps, inversion_steps=inf.inversion_steps,
                           controlnet_scale=inf.controlnet_scale, guidance_scale=guidance, eta=inf.eta,
                           inversion_model=inv_model, callback=lambda done, n: bar.advance())
    seconds = time.perf_counter() - t0
    fps = float(case["fps"])
    meta = {"method": "edit-your-motion", "model": str(folder), "seed": int(cfg.seed), "steps": steps}
    write_video(out, video, fps=fps, metadata=meta)
    poses_path = out.with_name(out.stem + ".poses.npz")
    from dancegen.io.atomic import save_npz

    save_npz(poses_path, True, keypoints=target, source_keypoints=case["keypoints"])
    report.update({"seconds": round(seconds, 3), "fps": fps, "output": str(out), "poses": str(poses_path)})
    if request.preview:
        from dancegen.io import montage
        from dancegen.methods.edit_your_motion.data import pose_sequence
        from dancegen.pose.render import render_control_maps

        maps = render_control_maps(pose_sequence(target, video.shape[1]))
        rows = [montage.grid([[montage.label(case["frames"][t], "source"), montage.label(maps[t], "target"),
                               montage.label(video[t], "edit")]], height=video.shape[1]) for t in range(len(video))]
        prev = out.with_name(out.stem + ".preview" + out.suffix)
        write_video(prev, np.stack(rows), fps=fps, metadata=meta)
        report["preview"] = str(prev)
    return report
