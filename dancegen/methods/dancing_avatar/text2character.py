"""`dancegen text2character --poses` for Dancing Avatar: clothes / face / place text + poses -> a human video.

1. The recipe: a Dancing Avatar model folder's (``--model RUN``: the base and pose ControlNet it was trained with, its
   previous-frame module), else `--recipe` / `--set` over the defaults; with the bundled models and no recipe,
   `config.BUNDLED_OVERRIDES` (64 px) come first. Every input is checked here, before any model loads.
2. The poses: OpenPose JSON (folder / frame / .npz), fitted into the square frame (uniform scale, centred); or
   ``--motion TEXT`` through the text-to-motion model (bundled t2m-tiny), projected to 2D COCO-18.
3. The prompt (spec §2.1, §2.4): clothes and face refined to 20 words each (`prompts.refine`), composed with the place.
4. Intra-frame alignment: the character pack (reference images + clothes / face LoRAs, `character.py`), reused from
   ``--character`` or made and cached next to the output; both adapters attached to the UNet's cross-attention.
5. Person masks (spec §2.2): the drawn body of each pose (segmenter "pose"), or the pose backend's / SAM's
   segmentation of generated frames; dilated.
6. `DancingAvatarPipeline` with the three switches; frames are written atomically with provenance, plus the resolved
   recipe, the plate and a preview (pose | frame).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.methods.dancing_avatar.config import BUNDLED_OVERRIDES, DancingAvatarConfig, load_recipe

VIDEO_SUFFIXES = (".mp4", ".mov", ".gif")


def build_config(request) -> tuple[DancingAvatarConfig, Path | None]:
    """The resolved recipe of a `Text2CharacterRequest` and the Dancing Avatar model folder it names (or None)."""
    from dancegen.methods.dancing_avatar.model import LAYOUT, PREV_SUBDIR

    sets = list(request.overrides or [])
    folder = None
    if request.model is not None:
        folder = LAYOUT.find(request.model)
        name = str(request.model)
        if folder is None and not Path(name).exists() and "/" not in name:  # a bundled model's name
            folder = LAYOUT.find(LAYOUT.bundled_path(name))
    if folder is not None:
        if request.recipe is not None:
            raise InputError("--recipe and a Dancing Avatar model folder (--model) both give the recipe; pass one")
        cfg = LAYOUT.load_recipe(folder, sets, load_recipe,
                                 fixed=lambda c: (c.model.base, c.model.pose_controlnet, c.inter.condition))
        if cfg.model.prev_controlnet is None:
            cfg.model.prev_controlnet = str(folder / PREV_SUBDIR)
    else:
        bundled = request.model is None and request.recipe is None
        cfg = load_recipe(request.recipe, (list(BUNDLED_OVERRIDES) if bundled else []) + sets)
        if request.model is not None:
            cfg.model.base = str(request.model)
    if request.controlnet:
        if len(request.controlnet) > 1:
            raise InputError("Dancing Avatar takes one --controlnet (the OpenPose ControlNet); the previous-frame "
                             "module is model.prev_controlnet or the --model folder's")
        cfg.model.pose_controlnet = str(request.controlnet[0])
    p = cfg.prompt
    for name in ("clothes", "face", "place"):
        if getattr(request, name, None) is not None:
            setattr(p, name, getattr(request, name))
    if request.prompt is not None:
        p.text = request.prompt
    if request.negative_prompt is not None:
        p.negative_prompt = request.negative_prompt
    if request.steps is not None:
        cfg.sampler.steps = int(request.steps)
    if request.guidance_scale is not None:
        cfg.sampler.guidance_scale = float(request.guidance_scale)
    if request.seed is not None:
        cfg.seed = int(request.seed)
    if request.frames is not None:
        cfg.num_frames = int(request.frames)
    if request.fps is not None:
        cfg.fps = float(request.fps)
    if request.size is not None:
        w, h = request.size
        if w != h or w % 8:
            raise InputError(f"Dancing Avatar makes square frames with a side that is a multiple of 8; got --size {w}x{h}")
        cfg.size = int(w)
    character = getattr(request, "character", None)
    if character is not None:
        cfg.intra.character = str(character)
    if not (p.text or p.clothes or p.face):
        raise InputError('Dancing Avatar needs a description: --clothes "white pleated skirt" --face "short black '
                         'hair" --place "in a classroom", or one PROMPT')
    if cfg.intra.enabled and cfg.intra.character:
        from dancegen.methods.dancing_avatar.character import check_pack

        check_pack(cfg.intra.character)
    if cfg.background.segmenter == "sam" and not cfg.model.sam:
        raise InputError("background.segmenter sam needs model.sam (a transformers SamModel folder or hub id)")
    return cfg, folder


def fit_poses(seq, size: int):
    """A pose sequence fitted into a ``size`` x ``size`` frame: one uniform scale, centred (no stretching)."""
    s = size / max(seq.width, seq.height)
    k = seq.keypoints.copy()
    k[..., 0] = k[..., 0] * s + (size - seq.width * s) / 2
    k[..., 1] = k[..., 1] * s + (size - seq.height * s) / 2
    return seq.replace(keypoints=k, width=size, height=size, hands=None, face=None)


def read_poses(request, cfg: DancingAvatarConfig, say=lambda m: None):
    """The driving poses as a COCO-18 `PoseSequence` at ``cfg.size``, at most ``cfg.num_frames`` of them."""
    from dancegen.pose.sequence import PoseSequence

    if request.poses is not None:
        if isinstance(request.poses, PoseSequence):
            seq = request.poses
        else:
            from dancegen.pose.openpose_json import read_pose_input

            seq = read_pose_input(request.poses)
    elif request.motion is not None:
        seq = motion_poses(request.motion, cfg, say)
    else:
        raise InputError("Dancing Avatar needs --poses (OpenPose JSON) or --motion TEXT")
    if seq.format != "coco18":
        from dancegen.pose.convert import convert

        seq = convert(seq, "coco18")
    if seq.num_frames < 1:
        raise InputError("the pose input has no frames", request.poses)
    if cfg.num_frames is not None:
        seq = seq[: cfg.num_frames]
    return fit_poses(seq, cfg.size)


def motion_poses(text: str, cfg: DancingAvatarConfig, say=lambda m: None):
    """``--motion TEXT``: the text-to-motion model's joints (bundled t2m-tiny, 20 fps, every 2nd frame), projected
    to COCO-18 by a camera framing the whole motion from the front."""
    from dancegen.motion.t2m import TextToMotion
    from dancegen.pose.convert import humanml3d_to_coco18

    say(f"text to motion: {text!r}")
    motion = TextToMotion.load(None).generate(text, num_frames=60, seed=cfg.seed)
    joints = motion.joints[::2]
    return humanml3d_to_coco18(joints, None, cfg.size, cfg.size, fps=motion.fps / 2)


class PerFrame:
    """A read-only sequence whose item ``t`` is made when it is asked for (``make(t)``), so a long pose sequence
    never holds all its pose maps or masks at once. The last item made is kept: a frame asks for its own map or mask
    several times (the pipeline, the preview) and it is made once."""

    def __init__(self, n: int, make):
        self.n, self.make = n, make
        self._last: tuple[int, object] | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, t: int):
        if not -self.n <= t < self.n:
            raise IndexError(t)
        t %= self.n
        if self._last is None or self._last[0] != t:
            self._last = (t, self.make(t))
        return self._last[1]


def person_masks(seq, cfg: DancingAvatarConfig) -> PerFrame:
    """The ``(S, S)`` bool mask of each pose, made when its frame is: the drawn body, dilated (segmenter "pose");
    the limb thickness follows the whole sequence's body height, as if drawn at once."""
    from dancegen.pose.masks import body_height, dilate_mask, pose_masks

    height = body_height(seq.keypoints)
    return PerFrame(seq.num_frames, lambda t: dilate_mask(pose_masks(seq[t:t + 1], cfg.background.body_width,
                                                                     height=height),
                                                          cfg.background.mask_dilate_px)[0])


def drawn_pose_maps(seq) -> PerFrame:
    """The ``(S, S, 3)`` uint8 OpenPose map of each pose, drawn when its frame is made."""
    from dancegen.pose.render import render_control_maps

    return PerFrame(seq.num_frames, lambda t: render_control_maps(seq[t:t + 1])[0])


def pose_maps(drawn: PerFrame) -> PerFrame:
    """The pipeline's ``(3, S, S)`` float maps in [0, 1] of ``drawn_pose_maps``."""
    import torch

    return PerFrame(len(drawn), lambda t: torch.from_numpy(drawn[t]).permute(2, 0, 1).float() / 255)


def image_segmenter(cfg: DancingAvatarConfig, seq, allow_download: bool = False, say=lambda m: None):
    """``segment(image, t) -> mask`` for segmenter "blazepose" (the pose backend) or "sam" (prompted by pose t's
    keypoints; t = -1 is the plate's image, pose 0), dilated; None for "pose". A generated image in which BlazePose
    finds nobody gets its pose's drawn mask instead (said once, with the count at the end of the run)."""
    from dancegen.pose.masks import dilate_mask

    kind = cfg.background.segmenter
    if kind == "pose":
        return None
    if kind == "blazepose":
        from dancegen.errors import InputError
        from dancegen.pose.extract import person_mask

        drawn = person_masks(seq, cfg)
        missed: list[int] = []

        def segment(image, t):
            try:
                return dilate_mask(person_mask(image), cfg.background.mask_dilate_px)
            except InputError:  # a generated frame without a person BlazePose can see
                if not missed:
                    say(f"BlazePose found nobody in generated frame {max(t, 0)}; using the pose's drawn mask there "
                        "(and wherever it happens again)")
                missed.append(t)
                return drawn[max(t, 0)]

        segment.missed = missed
        return segment
    from dancegen.methods.dancing_avatar.segment import SamSegmenter

    sam = SamSegmenter.load(cfg.model.sam, allow_download)
    return lambda image, t: dilate_mask(sam(image, seq.keypoints[max(t, 0)]), cfg.background.mask_dilate_px)


def load_models(cfg: DancingAvatarConfig, allow_download: bool = False, plan=None, say=lambda m: None):
    """``(SD15Components, ControlNetSet, prev_note)``: the base, the ``pose`` and ``prev`` ControlNets; ``prev`` is
    None (and ``prev_note`` says why in one line) when no previous-frame module exists for this base."""
    import torch

    from dancegen.methods.dancing_avatar.model import bundled_prev_folder, load_base, load_controlnets

    dtype = plan.dtype if plan is not None else torch.float32
    comps = load_base(cfg.model.base, allow_download, dtype)
    prev, note = cfg.model.prev_controlnet, None
    if prev is None and cfg.inter.enabled:
        bundled = bundled_prev_folder()
        if cfg.model.base is None and bundled is not None:
            prev = str(bundled)
        else:
            note = ("inter-frame alignment is off: no previous-frame module for this base (train one with "
                    "`dancegen train --recipe recipes/dancing_avatar/prev_frame_tiny.yaml`, then pass --model RUN)")
    nets = load_controlnets(cfg.model.pose_controlnet, prev if cfg.inter.enabled else None, allow_download, dtype)
    return comps, nets, note


def read_plate(path, size: int) -> np.ndarray:
    """``--background IMAGE``: the shared plate, centre-cropped to a square and resized to ``size``."""
    import cv2

    from dancegen.io.video import read_image

    img = read_image(path)
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def generate(cfg: DancingAvatarConfig, seq, comps, nets, masks=None, segment=None, plate=None, on_frame=None,
             callback=None, drawn=None, inpaint_unet=None):
    """Run the pipeline on prepared inputs; the `DancingAvatarPipelineOutput`. With ``on_frame(t, frame)`` each
    frame is handed over as it is made and none is kept (constant memory); ``drawn`` (`drawn_pose_maps`) lets the
    caller reuse the map of the frame being handed over; ``inpaint_unet`` (`model.load_inpaint_unet`) makes the
    plate."""
    import torch

    from dancegen.methods.dancing_avatar.model import make_scheduler
    from dancegen.methods.dancing_avatar.pipeline import DancingAvatarPipeline
    from dancegen.methods.dancing_avatar.prompts import compose, plate_prompt, refine

    p = cfg.prompt
    prompt = compose(p, refine("clothes", p.clothes, p), refine("face", p.face, p))
    pipe = DancingAvatarPipeline(comps.unet, comps.vae, comps.text_encoder, comps.tokenizer,
                                 make_scheduler(cfg, comps.scheduler), nets)
    pipe.inpaint_unet = inpaint_unet
    maps = pose_maps(drawn if drawn is not None else drawn_pose_maps(seq))
    use_inter = cfg.inter.enabled and ("prev" in nets and nets["prev"] is not None)
    return prompt, pipe(
        prompt, maps, masks=masks, segment=segment, negative_prompt=p.negative_prompt,
        plate_prompt=plate_prompt(p), plate_negative_prompt=p.plate_negative_prompt,
        use_background=cfg.background.enabled, use_inter=use_inter, paste_back=cfg.background.paste_back,
        feather_px=cfg.background.feather_px, inter_condition=cfg.inter.condition, pose_scale=cfg.sampler.pose_scale,
        inter_scale=cfg.inter.scale, num_inference_steps=cfg.sampler.steps, plate_steps=cfg.background.plate_steps,
        guidance_scale=cfg.sampler.guidance_scale, shared_noise=not cfg.sampler.seed_per_frame,
        generator=torch.Generator().manual_seed(int(cfg.seed)), plate=plate, frame_callback=on_frame,
        callback=callback)


def text2character(request, progress=None) -> dict:
    """Generate a video of the described character performing the poses (module docstring).

    Args:
        request: a `dancegen.requests.Text2CharacterRequest`: poses (or motion), clothes / face / place (or prompt),
            out (.mp4 / .mov / .gif), background (a plate image), character (a pack folder), model (a Dancing Avatar
            model folder or an SD-1.5 base), controlnet (the OpenPose ControlNet), recipe / overrides, steps,
            guidance_scale, seed, frames, fps, size, device, dtype, allow_download, preview, dry_run.
        progress: optional ``progress(message)``.

    Returns:
        Report dict (model, switches, frames, size, seconds per frame, outputs).
    """
    import contextlib

    from dancegen.config import save_config
    from dancegen.console import progress_bar
    from dancegen.io.video import VideoWriter

    say = progress or (lambda msg: None)
    out = Path(request.out) if request.out is not None else None
    if out is None and not request.dry_run:
        raise InputError("text2character needs -o OUT.mp4")
    if out is not None and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"text2character writes a video ({', '.join(VIDEO_SUFFIXES)}); got {out.name}", out)
    cfg, folder = build_config(request)
    plan = request.runtime(cfg.model.device, cfg.model.dtype)
    seq = None if request.dry_run and request.poses is None else read_poses(request, cfg, say)
    plate = read_plate(request.background, cfg.size) if request.background is not None else None
    say("loading the text-to-image model and its ControlNets")
    comps, nets, note = load_models(cfg, request.downloads_allowed(), plan, say)
    if note:
        say(note)
    if comps.vae_scale_factor > 1 and cfg.size % (comps.vae_scale_factor * 2):
        raise InputError(f"size {cfg.size} must be a multiple of {comps.vae_scale_factor * 2} for this model")
    report = {"model": str(folder) if folder else cfg.model.base or "bundled:t2i-tiny",
              "intra": cfg.intra.enabled, "background": cfg.background.enabled,
              "inter": cfg.inter.enabled and ("prev" in nets and nets["prev"] is not None), "size": [cfg.size] * 2,
              "runtime": plan.as_dict()}
    if note:
        report["note"] = note
    if request.dry_run:
        report["dry_run"] = True
        return report
    inpaint = None
    if cfg.model.inpaint and cfg.background.enabled and plate is None:
        from dancegen.methods.dancing_avatar.model import load_inpaint_unet

        say(f"loading the inpainting model {cfg.model.inpaint} for the background plate")
        inpaint = load_inpaint_unet(cfg.model.inpaint, comps.unet, request.downloads_allowed(), plan.dtype)
        report["inpaint"] = cfg.model.inpaint
    for m in (comps.unet, comps.vae, comps.text_encoder, nets, inpaint):
        if m is not None:
            m.to(plan.device)
    pack = None
    if cfg.intra.enabled:
        from dancegen.methods.dancing_avatar.character import attach_pack, ensure_pack

        pack = ensure_pack(cfg, comps, nets, out.with_name(out.stem + ".character"), say)
        attach_pack(comps.unet, pack, cfg.intra.clothes_weight, cfg.intra.face_weight)
        cfg.prompt.refiner, cfg.prompt.clothes_words, cfg.prompt.face_words = "cached", pack.clothes_words, \
            pack.face_words
    masks = person_masks(seq, cfg) if cfg.background.enabled and cfg.background.segmenter == "pose" else None
    segment = image_segmenter(cfg, seq, request.downloads_allowed(), say) if cfg.background.enabled else None
    say(f"generating {seq.num_frames} frames at {cfg.size}px, {cfg.sampler.steps} steps each")
    fps = cfg.fps or seq.fps
    meta = {"method": "dancing-avatar", "model": report["model"], "seed": cfg.seed,
            "switches": f"intra={int(report['intra'])},background={int(report['background'])},"
                        f"inter={int(report['inter'])}"}
    prev = out.with_name(out.stem + ".preview" + out.suffix)
    t0 = time.perf_counter()
    # frames go to the encoder as they are made (and the preview's rows with them): memory does not grow with the
    # number of poses; both files appear only when every frame is done
    with progress_bar(seq.num_frames, "dancing-avatar frames") as bar, \
            VideoWriter(out, fps, metadata=meta) as video, \
            (VideoWriter(prev, fps, metadata=meta) if request.preview else contextlib.nullcontext()) as preview:
        def callback(stage, done, total):
            if stage == "frames":
                bar.update(completed=done, total=total)

        drawn = drawn_pose_maps(seq)

        def on_frame(t, frame):
            video.write(frame)
            if preview is not None:
                from dancegen.io import montage

                preview.write(montage.grid([[montage.label(drawn[t], "pose"), montage.label(frame, f"t={t}")]],
                                           height=cfg.size))

        prompt, result = generate(cfg, seq, comps, nets, masks, segment, plate, on_frame=on_frame,
                                  callback=callback, drawn=drawn, inpaint_unet=inpaint)
    seconds = time.perf_counter() - t0
    recipe_path = out.with_name(out.stem + ".recipe.yaml")
    save_config(cfg, recipe_path)
    report.update({"frames": video.count, "fps": fps, "prompt": prompt,
                   "seconds": round(seconds, 3), "seconds_per_frame": round(seconds / max(1, seq.num_frames), 3),
                   "output": str(out), "recipe": str(recipe_path)})
    if getattr(segment, "missed", None):
        report["pose_mask_frames"] = sorted({max(t, 0) for t in segment.missed})  # where BlazePose saw nobody
    if pack is not None:
        report["character"] = str(pack.folder)
    if result.plate is not None:
        from dancegen.io.video import write_image

        plate_path = out.with_name(out.stem + ".plate.png")
        write_image(plate_path, result.plate, metadata=meta)
        report["plate"] = str(plate_path)
    if request.preview:
        report["preview"] = str(prev)
    return report
