"""`dancegen animate` for Dance-Your-Latents: reference photo + driving poses -> dance video (issue 4, spec §3).

1. Resolve the model: a trained DYL model folder (or a `train` output folder), the bundled tiny model (default), or
   an sd-image-variations-layout folder / hub id (the full-size architecture with fresh ControlNets and identity
   temporal blocks; `dry_run` builds it from the configs alone on the meta device).
2. Read the reference; estimate its pose and person mask with the default pose backend when retargeting or when
   `ref_mask="auto"`; read (or estimate) the driving poses and retarget them onto the reference body.
3. Generate with `DanceYourLatentsPipeline` (pose flow for MF, shared noise, DDIM + CFG, context windows).
4. Write the video atomically, the resolved recipe next to it (`<out>.recipe.yaml`) and a side-by-side preview
   (`<out>.preview.mp4`: reference | pose | output).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.methods.dance_your_latents.model import (
    bundled_model_path,
    missing_bundled_model_error,
    model_folder,
)

POSE_SUFFIXES = (".npz", ".json")


def resolve_animate_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """("dyl", folder) for a trained model folder or the bundled one; ("sd", ref) for an SD-layout base.

    Raises:
        MissingWeightsError: no model given and the bundled one is not installed, or the reference is not found.
        InputError: a folder that is neither layout.
    """
    from dancegen.core.weights import BUNDLED_ROOT, resolve_model

    if model is None:
        folder = model_folder(bundled_model_path())
        if folder is None:
            raise missing_bundled_model_error()
        return "dyl", str(folder)
    folder = model_folder(model)
    if folder is not None:
        return "dyl", str(folder)
    p = Path(model)
    if not p.exists() and "/" not in str(model) and (BUNDLED_ROOT / str(model)).is_dir():
        folder = model_folder(BUNDLED_ROOT / str(model))
        if folder is not None:
            return "dyl", str(folder)
    resolved = resolve_model(model, kind="sd-image-variations")
    return "sd", resolved.location if resolved.is_local else resolved.ref


def load_animate_model(model, recipe=None, overrides=None, device: str = "auto", dtype: str = "auto",
                       dry_run: bool = False):
    """The model and the resolved recipe for `animate`.

    A trained folder brings its own recipe; `recipe` then only supplies `flow`, `inference` and `seed`. An
    SD-layout base uses `recipe` (default: the paper's settings) with `model.base` set to it.

    Returns:
        ``(DanceYourLatentsModel, config, runtime plan, kind)``.
    """
    from dancegen.core.weights import plan_runtime
    from dancegen.methods.dance_your_latents.config import load_recipe
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, build_model

    kind, where = resolve_animate_model(model)
    sets = list(overrides or [])
    if kind == "dyl":
        if recipe is not None:
            rcfg = load_recipe(recipe, sets)
            m = DanceYourLatentsModel.from_pretrained(where)
            m.config.flow, m.config.inference, m.config.seed = rcfg.flow, rcfg.inference, rcfg.seed
        else:
            m = DanceYourLatentsModel.from_pretrained(where, overrides=sets)
        cfg = m.config
    else:
        cfg = load_recipe(recipe, sets + [f"model.base={where}"])
        m = None
    plan = plan_runtime(device if device != "auto" else cfg.inference.device,
                        dtype if dtype != "auto" else cfg.inference.dtype)
    if kind == "sd":
        m = build_model(cfg, weights="meta" if dry_run else "load", dtype=None if dry_run else plan.dtype)
    if not dry_run:
        m = m.to(device=plan.device, dtype=plan.dtype)
    return m, cfg, plan, kind


def _is_pose_input(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix.lower() == ".json" for p in path.iterdir())
    return path.suffix.lower() in POSE_SUFFIXES


def read_driving_poses(poses, max_frames: int | None = None):
    """A `PoseSequence` from a pose folder / .npz / .json, or estimated from a video / frame folder."""
    from dancegen.pose.openpose_json import read_pose_input
    from dancegen.pose.sequence import PoseSequence

    if isinstance(poses, PoseSequence):
        return poses[:max_frames] if max_frames else poses
    p = Path(poses)
    if not p.exists():
        raise InputError("driving poses not found", p)
    if _is_pose_input(p):
        seq = read_pose_input(p)
        return seq[:max_frames] if max_frames else seq
    from dancegen.pose.extract import estimate_poses

    return estimate_poses(p, max_frames=max_frames)


def reference_pose_and_mask(ref_path: Path, want_mask: bool):
    """The reference photo's pose (and person mask) with the default pose backend, in a temporary folder."""
    from dancegen.io.video import read_image
    from dancegen.pose.extract import extract_poses
    from dancegen.pose.openpose_json import read_openpose_folder

    with tempfile.TemporaryDirectory(prefix="dyl-ref-") as tmp:
        out = Path(tmp) / "ref"
        extract_poses(ref_path, out, write_maps=False, write_video=False, write_masks=want_mask, cache=False,
                      mode="image")
        pose = read_openpose_folder(out / "openpose_json")
        masks = sorted((out / "masks").glob("*.png")) if want_mask and (out / "masks").is_dir() else []
        mask = read_image(masks[0]).max(-1) > 127 if masks else None
    return pose, mask


def animate(ref, poses, out, *, model=None, recipe=None, overrides: list[str] | None = None, background=None,
            ref_mask: str | os.PathLike | None = "auto", retarget: bool = True, frames: int | None = None,
            steps: int | None = None, guidance_scale: float | None = None, size: int | tuple[int, int] | None = None,
            device: str = "auto", dtype: str = "auto", seed: int | None = None, dry_run: bool = False,
            preview: bool = True, progress=None) -> dict:
    """Animate the person in `ref` with the driving `poses` (see the module docstring).

    Args:
        ref: reference image path (or a ``(H, W, 3)`` uint8 array; then no pose/mask estimation is possible).
        poses: pose folder (OpenPose JSON) / .npz / .json, a video or frame folder (poses are estimated), or a
            ``PoseSequence``.
        out: output video (.mp4 / .gif / folder).
        model: trained DYL folder, bundled name, or sd-image-variations folder / hub id; None: the bundled model.
        recipe / overrides: recipe YAML and ``key=value`` overrides.
        background: background image for the background ControlNet (default: the reference minus the person).
        ref_mask: person mask image of the reference, "auto" (estimated with the pose backend), or None (no split).
        retarget: put the driving motion on the reference body (bone lengths and position of the reference).
        frames: generate at most this many frames.
        steps / guidance_scale: override ``inference.steps`` / ``inference.guidance_scale``.
        size: output size N or (W, H) (default the recipe's ``data.resolution``).
        device / dtype: runtime ("auto": the recipe's ``inference.device`` / ``inference.dtype``).
        seed: initial-noise seed (default the recipe's).
        dry_run: build the pipeline (from configs only for an SD-layout base) and report, without generating.
        preview: also write ``<out>.preview.mp4``.
        progress: optional ``progress(message)``.

    Returns:
        Report dict (model, kind, frames, size, seconds, outputs, parameter counts).
    """
    import torch

    from dancegen.config import save_config
    from dancegen.io.video import read_image, write_video
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video

    say = progress or (lambda msg: None)
    out = Path(out)
    say("loading the model")
    m, cfg, plan, kind = load_animate_model(model, recipe, overrides, device, dtype, dry_run)
    if steps is not None:
        cfg.inference.steps = int(steps)
    if guidance_scale is not None:
        cfg.inference.guidance_scale = float(guidance_scale)
    if seed is not None:
        cfg.seed = int(seed)
    if size is not None:
        w, h = (size, size) if isinstance(size, int) else size
        cfg.data.resolution = [int(h), int(w)]
    h, w = (int(r) for r in cfg.data.resolution)
    report = {"model": str(model) if model is not None else "bundled:dyl-tiny", "kind": kind,
              "variant": cfg.model.variant, "attention": cfg.model.attention, "size": [w, h],
              "parameters": m.num_parameters_by_part(), "runtime": plan.as_dict()}
    pipe = DanceYourLatentsPipeline.from_model(m)
    if pipe.size_multiple and (h % pipe.size_multiple or w % pipe.size_multiple):
        raise InputError(f"size {w}x{h} must be a multiple of {pipe.size_multiple} for this model")
    if dry_run:
        report["dry_run"] = True
        return report

    say("reading the reference and the poses")
    if isinstance(ref, np.ndarray):
        ref_img, ref_path = ref, None
    else:
        ref_path = Path(ref)
        ref_img = read_image(ref_path)
    seq = read_driving_poses(poses, frames)
    mask = None
    ref_pose = None
    auto_mask = isinstance(ref_mask, str) and ref_mask == "auto"
    if (retarget or auto_mask) and ref_path is None:
        raise InputError("retargeting and ref_mask='auto' need the reference as a file")
    if retarget or auto_mask:
        say("estimating the reference pose" + (" and mask" if auto_mask else ""))
        ref_pose, mask = reference_pose_and_mask(ref_path, auto_mask)
    if ref_mask is not None and not auto_mask:
        mask = read_image(ref_mask).max(-1) > 127
    if retarget:
        from dancegen.pose.retarget import retarget as retarget_poses

        if not (ref_pose.keypoints[0, :, 2] > 0).any():
            raise InputError("the pose detector found no person in the reference; pass --no-retarget", ref_path)
        seq = retarget_poses(seq, ref_pose)
    else:
        seq = seq.resized(ref_img.shape[1], ref_img.shape[0]) if (seq.width, seq.height) != ref_img.shape[1::-1] \
            else seq
    bg = read_image(background) if background is not None else None

    say(f"generating {seq.num_frames} frames at {w}x{h}, {cfg.inference.steps} steps")
    pipe.set_progress_bar_config(disable=progress is None)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    t0 = time.perf_counter()
    inf = cfg.inference
    result = pipe(ref_img, seq, background=bg, ref_mask=mask, height=h, width=w, num_inference_steps=inf.steps,
                  guidance_scale=inf.guidance_scale, eta=inf.eta, generator=gen, window=inf.window,
                  overlap=inf.overlap, weighting=inf.weighting, pose_scale=inf.pose_scale,
                  background_scale=inf.background_scale, decode_chunk_size=inf.decode_chunk_size,
                  cfg_mode=inf.cfg_mode).frames
    seconds = time.perf_counter() - t0
    video = to_uint8_video(result)

    write_video(out, video, fps=seq.fps)
    recipe_path = out.with_name(out.stem + ".recipe.yaml")
    save_config(cfg, recipe_path)
    report.update({"frames": int(video.shape[0]), "seconds": round(seconds, 3), "output": str(out),
                   "recipe": str(recipe_path), "retargeted": bool(retarget), "ref_mask": mask is not None})
    if preview:
        prev = out.with_name(out.stem + ".preview.mp4")
        write_video(prev, preview_frames(ref_img, seq, video), fps=seq.fps)
        report["preview"] = str(prev)
    return report


def preview_frames(ref_img: np.ndarray, seq, video: np.ndarray) -> np.ndarray:
    """Side-by-side frames: reference | pose map | output (``dancegen.io.montage``)."""
    from dancegen.io import montage
    from dancegen.methods.dance_your_latents.data import render_pose_maps

    h = video.shape[1]
    maps = render_pose_maps(seq.resized(video.shape[2], video.shape[1]))
    rows = []
    for t in range(video.shape[0]):
        cells = [montage.label(montage.fit(ref_img, h), "reference"), montage.label(maps[t], "pose"),
                 montage.label(video[t], f"output t={t}")]
        rows.append(montage.grid([cells], height=h))
    return np.stack(rows)
