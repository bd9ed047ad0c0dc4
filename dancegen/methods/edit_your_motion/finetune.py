"""`dancegen finetune-oneshot`: fine-tune Edit-Your-Motion on one source clip (and optionally edit it right away).

The recipe is the request's ``--recipe`` / ``--set`` over the paper's defaults; with the bundled base and no recipe,
`config.BUNDLED_OVERRIDES` (64 px, toy learning rate) come first. Every path and option is checked before a model
loads; then `train.train` runs both stages into the run folder (resumable), and with ``--target`` the edit is made
with `animate.animate` from the fresh case folder.
"""

from __future__ import annotations

from pathlib import Path

from dancegen.errors import InputError
from dancegen.methods.edit_your_motion.config import BUNDLED_OVERRIDES, EditYourMotionConfig, load_recipe


def build_config(source, prompt: str | None, *, poses=None, masks=None, model=None, controlnet=None, recipe=None,
                 overrides=None, steps: int | None = None, frames: int | None = None, device: str | None = None,
                 seed: int | None = None) -> EditYourMotionConfig:
    """The resolved recipe of a fine-tune (checked before any model loads)."""
    bundled = model is None and recipe is None
    if recipe is not None and not Path(recipe).is_file():
        raise InputError("recipe not found", recipe)
    cfg = load_recipe(recipe, (list(BUNDLED_OVERRIDES) if bundled else []) + list(overrides or []))
    d = cfg.data
    if source is not None:
        d.source = str(source)
    if prompt is not None:
        d.prompt = prompt
    if poses is not None:
        d.poses = str(poses)
    if masks is not None:
        if masks in ("auto", "skeleton", "none"):
            d.masks = masks
        else:
            d.masks, d.masks_path = "given", str(masks)
    if model is not None:
        cfg.model.base = str(model)
    if controlnet is not None:
        cfg.model.controlnet = str(controlnet)
    if steps is not None:
        if steps < 1:
            raise InputError(f"--steps must be >= 1, got {steps}")
        for s in cfg.train.stages:
            s.steps = int(steps)
    if frames is not None:
        if frames < 1:
            raise InputError(f"--frames must be >= 1, got {frames}")
        d.num_frames = int(frames)
    if device is not None and device != "auto":
        cfg.train.device = cfg.model.device = device
    if seed is not None:
        cfg.seed = int(seed)
    if not d.source:
        raise InputError("finetune-oneshot needs --source (a video, a frame folder or a photo)")
    if not Path(d.source).exists():
        raise InputError("source not found", d.source)
    from dancegen.io.video import video_info

    video_info(d.source)  # opens the container / the first image: a bad source fails here, before any model loads
    if not d.prompt.strip():
        raise InputError('finetune-oneshot needs --prompt, e.g. --prompt "a dancer in a purple shirt"')
    if d.poses is not None and not Path(d.poses).exists():
        raise InputError("source poses not found", d.poses)
    if d.masks == "given" and not (d.masks_path and Path(d.masks_path).is_dir()):
        raise InputError("mask folder not found", d.masks_path or "--masks")
    return cfg


def finetune_oneshot(source, prompt: str | None, out, *, target=None, video=None, resume: str = "auto",
                     allow_download: bool = False, progress=None, **options) -> dict:
    """Fine-tune on one case into ``out`` and, given ``target`` skeletons and a ``video`` path, edit it.

    Args:
        source / prompt: the source clip (or photo) and its prompt.
        out: the run folder (the case folder is ``out/model``; ``--model out`` finds it).
        target / video: target skeletons and the edited video to write after the fine-tune (both or neither).
        resume: "auto" | "never" | a checkpoint folder.
        allow_download: let hub ids download.
        progress: optional ``progress(message)``.
        **options: `build_config` keywords (poses, masks, model, controlnet, recipe, overrides, steps, frames,
            device, seed).

    Returns:
        The training report, with the edit's report under ``edit``.
    """
    from dancegen.runtime import seed_everything

    if (target is None) != (video is None):
        raise InputError("give both --target (skeletons to perform) and --video (the edited video), or neither")
    if target is not None and not Path(target).exists():
        raise InputError("target skeletons not found", target)
    if video is not None and Path(video).suffix.lower() not in (".mp4", ".mov", ".gif"):
        raise InputError(f"--video writes a video (.mp4, .mov, .gif); got {Path(video).name}", video)
    if out is None:
        raise InputError("finetune-oneshot needs -o RUN_FOLDER")
    cfg = build_config(source, prompt, **options)
    import torch  # noqa: F401  (imported first so that seed_everything seeds it)

    from dancegen.methods.edit_your_motion.train import train

    seed_everything(cfg.seed)
    report = train(cfg, out, resume=resume, progress=progress, allow_download=allow_download)
    if target is not None:
        from dancegen.methods.edit_your_motion.animate import animate
        from dancegen.requests import AnimateRequest

        request = AnimateRequest.build(ref=None, poses=target, out=video, model=str(out), method="edit-your-motion",
                                       allow_download=allow_download, preview=True)
        report["edit"] = animate(request, progress)
    return report
