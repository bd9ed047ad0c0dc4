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
from dancegen.methods.dance_your_latents.model import LAYOUT, model_folder


def resolve_animate_model(model: str | os.PathLike | None, allow_download: bool = False) -> tuple[str, str]:
    """("dyl", folder) for a trained model folder or the bundled one; ("sd", ref) for an SD-layout base.

    Raises:
        MissingWeightsError: no model given and the bundled one is not installed, or the reference is not found.
        InputError: a folder that is neither layout.
    """
    from dancegen.core.weights import BUNDLED_ROOT, resolve_model

    if model is None:
        return "dyl", str(LAYOUT.resolve(None))
    folder = model_folder(model)
    if folder is None and not Path(model).exists() and "/" not in str(model):
        folder = model_folder(BUNDLED_ROOT / str(model))
    if folder is not None:
        return "dyl", str(folder)
    resolved = resolve_model(model, kind="sd-image-variations", allow_download=allow_download)
    if not resolved.is_local:  # the user allowed it (--allow-download): fetch it now, explicitly, once
        from huggingface_hub import snapshot_download

        return "sd", snapshot_download(resolved.ref)
    return "sd", resolved.location


def load_animate_model(request, dry_run: bool | None = None):
    """The model and the resolved recipe for `animate`.

    A trained folder brings its own recipe; `request.recipe` then only supplies `flow`, `inference` and `seed`. An
    SD-layout base uses `request.recipe` (default: the paper's settings) with `model.base` set to it. The runtime
    plan (device, precision, CPU offload, VAE slicing / tiling) and the LoRA files of the request are applied.

    Returns:
        ``(DanceYourLatentsModel, config, runtime plan, kind)``.
    """
    from dancegen.core.weights import apply_runtime
    from dancegen.methods.dance_your_latents.config import load_recipe
    from dancegen.methods.dance_your_latents.model import DanceYourLatentsModel, build_model

    dry_run = request.dry_run if dry_run is None else dry_run
    kind, where = resolve_animate_model(request.model, request.downloads_allowed())
    sets = list(request.overrides or [])
    if kind == "dyl":
        if request.recipe is not None:
            rcfg = load_recipe(request.recipe, sets)
            m = DanceYourLatentsModel.from_pretrained(where)
            m.config.flow, m.config.inference, m.config.seed = rcfg.flow, rcfg.inference, rcfg.seed
        else:
            m = DanceYourLatentsModel.from_pretrained(where, overrides=sets)
        cfg = m.config
    else:
        cfg = load_recipe(request.recipe, sets + [f"model.base={where}"])
        m = None
    plan = request.runtime(cfg.inference.device, cfg.inference.dtype)
    if kind == "sd":
        m = build_model(cfg, weights="meta" if dry_run else "load", dtype=None if dry_run else plan.dtype)
    if not dry_run:
        from dancegen.core.lora import load_lora

        for k, (path, weight) in enumerate(request.lora_files()):
            load_lora(m.unet, path, adapter_name=f"lora{k}", weight=weight)
        apply_runtime(plan, {"reference": m.reference, "controlnets": m.controlnets, "unet": m.unet, "vae": m.vae},
                      vae=m.vae, offload_order=("reference", "controlnets", "unet", "vae"))
        if request.vae_tiling:
            m.vae.enable_tiling()
    return m, cfg, plan, kind


def read_driving_poses(poses, max_frames: int | None = None):
    """A `PoseSequence` from a pose folder / .npz / .json / motion file, or estimated from a video / frame folder."""
    from dancegen.pose.inputs import load_poses
    from dancegen.pose.sequence import PoseSequence

    if isinstance(poses, PoseSequence):
        return poses[:max_frames] if max_frames else poses
    if not Path(poses).exists():
        raise InputError("driving poses not found", poses)
    return load_poses(poses, max_frames=max_frames)


def reference_pose_and_mask(ref_path: Path, want_mask: bool, say=lambda m: None):
    """The reference photo's pose (and person mask) with the default pose backend, in a temporary folder.

    When that detector finds nobody (BlazePose misses the small synthetic dancers, so a `dancegen synth` frame given as
    the reference did), the bundled SynthPose estimator, trained on the synthetic world, takes over for the pose, and
    the mask is the body drawn from that pose (`pose.masks.pose_masks`, slightly dilated); one line says so.
    """
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
        if not (pose.keypoints[0, :, 2] > 0).any():
            out = Path(tmp) / "ref-synthpose"
            extract_poses(ref_path, out, backend="synthpose", write_maps=False, write_video=False, write_masks=False,
                          cache=False, mode="image")
            fallback = read_openpose_folder(out / "openpose_json")
            if (fallback.keypoints[0, :, 2] > 0.3).sum() >= 4:
                say("the default pose detector found no person in the reference; using the bundled SynthPose "
                    "estimator (made for the synthetic world)")
                from dancegen.pose.masks import dilate_mask, pose_masks

                pose = fallback
                mask = dilate_mask(pose_masks(pose[:1])[0], max(1, pose.width // 64)) if want_mask else None
    return pose, mask


def animate(request, progress=None) -> dict:
    """Animate the person in `request.ref` with the driving `request.poses` (see the module docstring).

    Args:
        request: a `dancegen.requests.AnimateRequest`: ref (image path, or a ``(H, W, 3)`` uint8 array: then no
            pose / mask estimation is possible), poses (pose folder / .npz / .json, a video or frame folder, or a
            ``PoseSequence``), out (.mp4 / .gif / folder), model (trained DYL folder, bundled name, or an
            sd-image-variations folder / hub id; None: the bundled model), recipe / overrides, background, ref_mask
            (a mask image, "auto" or None), retarget, frames, steps, guidance_scale, size (W, H), device, dtype,
            cpu_offload, vae_slicing, vae_tiling, lora, allow_download, seed, dry_run, preview.
        progress: optional ``progress(message)``.

    Returns:
        Report dict (model, kind, frames, size, seconds, outputs, parameter counts).
    """
    ref, poses, out, model = request.ref, request.poses, request.out, request.model
    ref_mask, retarget, frames, background = request.ref_mask, request.retarget, request.frames, request.background
    steps, guidance_scale, seed, size = request.steps, request.guidance_scale, request.seed, request.size
    dry_run, preview = request.dry_run, request.preview
    import torch

    from dancegen.config import save_config
    from dancegen.io.video import read_image, write_video
    from dancegen.methods.dance_your_latents.pipeline import DanceYourLatentsPipeline, to_uint8_video

    say = progress or (lambda msg: None)
    out = Path(out)
    if not dry_run:  # the inputs first: a bad reference or pose file fails before the model loads
        say("reading the reference and the poses")
        if isinstance(ref, np.ndarray):
            ref_img, ref_path = ref, None
        else:
            ref_path = Path(ref)
            ref_img = read_image(ref_path)
        seq = read_driving_poses(poses, frames)
    say("loading the model")
    m, cfg, plan, kind = load_animate_model(request)
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
    if request.lora:
        report["lora"] = [f"{p}:{wt:g}" for p, wt in request.lora_files()]
    pipe = DanceYourLatentsPipeline.from_model(m)
    if pipe.size_multiple and (h % pipe.size_multiple or w % pipe.size_multiple):
        raise InputError(f"size {w}x{h} must be a multiple of {pipe.size_multiple} for this model")
    if dry_run:
        report["dry_run"] = True
        return report

    mask = None
    ref_pose = None
    auto_mask = isinstance(ref_mask, str) and ref_mask == "auto"
    if (retarget or auto_mask) and ref_path is None:
        raise InputError("retargeting and ref_mask='auto' need the reference as a file")
    if retarget or auto_mask:
        say("estimating the reference pose" + (" and mask" if auto_mask else ""))
        ref_pose, mask = reference_pose_and_mask(ref_path, auto_mask, say)
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
    factor = toy_display_factor(model, size, ref_img.shape[:2], (h, w))
    if factor > 1:
        note = (f"the bundled dyl-tiny is a {w}x{h} toy trained on the synthetic world, so a {ref_img.shape[1]}x"
                f"{ref_img.shape[0]} photo comes out as a {w}x{h} blur (written upscaled x{factor}); pass --model "
                f"with real weights for real photos (`dancegen weights list --used-by dance-your-latents`)")
        say(note)
        video = upscale_frames(video, factor)
        report.update({"note": note, "written_size": [w * factor, h * factor]})

    provenance = {"method": "dance-your-latents", "model": report["model"], "seed": int(cfg.seed)}
    write_video(out, video, fps=seq.fps, metadata=provenance)
    recipe_path = out.with_name(out.stem + ".recipe.yaml")
    save_config(cfg, recipe_path)
    report.update({"frames": int(video.shape[0]), "seconds": round(seconds, 3), "output": str(out),
                   "recipe": str(recipe_path), "retargeted": bool(retarget), "ref_mask": mask is not None})
    if preview:
        prev = out.with_name(out.stem + ".preview.mp4")
        write_video(prev, preview_frames(ref_img, seq, video), fps=seq.fps, metadata=provenance)
        report["preview"] = str(prev)
    return report


def toy_display_factor(model, size, ref_hw, gen_hw) -> int:
    """The integer upscale for writing the bundled toy's output when the reference is much larger than it (1: none).

    Only for the bundled model without an explicit --size: the written video then roughly matches the photo (up to
    512 px), instead of a 64 px thumbnail."""
    if model is not None or size is not None:
        return 1
    factor = min(ref_hw[0] // gen_hw[0], ref_hw[1] // gen_hw[1], 512 // max(gen_hw))
    return factor if factor >= 2 else 1


def upscale_frames(video: np.ndarray, factor: int) -> np.ndarray:
    """``(F, H, W, 3)`` uint8 frames enlarged ``factor`` times (bicubic)."""
    from PIL import Image

    h, w = video.shape[1:3]
    return np.stack([np.asarray(Image.fromarray(f).resize((w * factor, h * factor), Image.BICUBIC)) for f in video])


def preview_frames(ref_img: np.ndarray, seq, video: np.ndarray) -> np.ndarray:
    """Side-by-side frames: reference | pose map | output (``dancegen.io.montage``)."""
    from dancegen.io import montage
    from dancegen.pose.render import render_control_maps

    h = video.shape[1]
    maps = render_control_maps(seq.resized(video.shape[2], video.shape[1]))
    rows = []
    for t in range(video.shape[0]):
        cells = [montage.label(montage.fit(ref_img, h), "reference"), montage.label(maps[t], "pose"),
                 montage.label(video[t], f"output t={t}")]
        rows.append(montage.grid([cells], height=h))
    return np.stack(rows)
