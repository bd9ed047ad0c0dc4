"""`dancegen text2character` for LatentMan: text -> motion -> rendered depth -> consistent character video.

1. The recipe: the request's `--recipe` / `--set` over the defaults (the paper's setting); with the bundled base and
   no recipe, `config.BUNDLED_OVERRIDES` (64 px, 20 steps) come first.
2. The motion (spec §2.1): a motion file (MDM results.npy, HumanML3D .npy, AIST++ .pkl, BVH, joints3d.npy), or text
   through the text-to-motion model (bundled `t2m-tiny`, or a folder) or the synthetic world's choreography
   ("procedural"); one prompt serves character and motion when no motion is given. Frames ``start, start + stride,
   ...`` become the video's frames.
3. The capsule body ray-cast by one fixed camera (spec §2.2): depth control images and part-UV maps; dense
   correspondences from the maps at the latent and the guidance resolution (spec §2.4).
4. `LatentManPipeline` with the recipe's base, SLA and PWG.
5. The video written atomically with its provenance, the resolved recipe (`<out>.recipe.yaml`), the rendered
   motion (`<out>.depth.mp4`), its part-UV maps (`<out>.iuv.npz`, for `dancegen evaluate -m h-mse --iuv`) and a
   side-by-side preview; the report has H_MSE of the result (Eq. 9).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.methods.latentman.config import BUNDLED_OVERRIDES, LatentManConfig, load_recipe, window_steps

VIDEO_SUFFIXES = (".mp4", ".mov", ".gif")
T2I_BUNDLED, DEPTH_BUNDLED = "t2i-tiny", "controlnet-depth-tiny"


def save_iuv(path: Path, iuv: np.ndarray) -> None:
    """The rendered part-UV maps ``(F, H, W, 3)`` (part index, u, v) as ``OUT.iuv.npz`` (key ``iuv``), atomically:
    what `dancegen evaluate -m h-mse --iuv` reads to score the video along the body's correspondences."""
    from dancegen.io.atomic import save_npz

    save_npz(path, True, iuv=np.asarray(iuv, np.float32))


def build_config(request) -> LatentManConfig:
    """The resolved recipe of a `Text2CharacterRequest` (checked before any model loads)."""
    sets = list(request.overrides or [])
    bundled = request.model is None and request.recipe is None
    cfg = load_recipe(request.recipe, (list(BUNDLED_OVERRIDES) if bundled else []) + sets)
    if request.model is not None:
        cfg.model.base = str(request.model)
    if request.controlnet:
        if len(request.controlnet) > 1:
            raise InputError("LatentMan uses one depth ControlNet; give --controlnet once")
        cfg.model.controlnet = str(request.controlnet[0])
    if request.prompt is not None:
        cfg.prompt = request.prompt
    if request.negative_prompt is not None:
        cfg.sampler.negative_prompt = request.negative_prompt
    if request.steps is not None:
        cfg.sampler.steps = int(request.steps)
    if request.guidance_scale is not None:
        cfg.sampler.guidance_scale = float(request.guidance_scale)
    if request.seed is not None:
        cfg.seed = cfg.motion.seed = int(request.seed)
    if request.frames is not None:
        cfg.num_frames = int(request.frames)
    if getattr(request, "fps", None) is not None:
        cfg.fps = float(request.fps)
    if request.size is not None:
        w, h = request.size
        if w != h or w % 8:
            raise InputError(f"LatentMan renders square frames with a side that is a multiple of 8; got --size {w}x{h}")
        cfg.render.size = int(w)
    motion = request.motion
    if motion is not None:
        if _looks_like_file(motion):
            if not Path(motion).is_file():
                raise InputError("motion file not found", motion)
            cfg.motion.source, cfg.motion.file = "file", str(motion)
        else:
            cfg.motion.text = motion
            if cfg.motion.source == "file":
                cfg.motion.source = "t2m"
    if not cfg.prompt:
        raise InputError('text2character needs a prompt, e.g. dancegen text2character "a dancer in a red shirt" '
                         '--motion "a person jumps and spins" -o out.mp4')
    if cfg.motion.source == "file" and not cfg.motion.file:
        raise InputError("motion.source is file but no motion file is given (--motion PATH)")
    return cfg


def _looks_like_file(motion: str) -> bool:
    from dancegen.motion.io import MOTION_SUFFIXES

    return Path(motion).suffix.lower() in MOTION_SUFFIXES or Path(motion).exists()


def motion_joints(cfg: LatentManConfig, progress=None):
    """The motion's video frames ``(N, 22, 3)`` and the motion itself (spec §2.1)."""
    from dancegen.motion.io import Motion, read_motion

    say = progress or (lambda msg: None)
    mc = cfg.motion
    text = mc.text or cfg.prompt
    if mc.source == "file":
        motion = read_motion(mc.file)
    elif mc.source == "procedural":
        from dancegen.motion.t2m.data import synth_motion
        from dancegen.synth.motion import parse_motion_text

        prims, _ = parse_motion_text(text)
        motion = Motion(synth_motion(mc.seed, prims, mc.num_frames, mc.fps), mc.fps, "synth",
                        {"text": text, "seed": mc.seed, "source": "procedural"})
    else:
        from dancegen.motion.t2m import TextToMotion

        say(f"text to motion: {text!r}")
        model = TextToMotion.load(mc.model)
        motion = model.generate(text, num_frames=mc.num_frames, seed=mc.seed, guidance=mc.guidance)
    idx = np.arange(mc.start, motion.num_frames, mc.stride)[: cfg.num_frames]
    if len(idx) < cfg.num_frames:
        raise InputError(f"the motion has {motion.num_frames} frames: from frame {mc.start} with stride {mc.stride} "
                         f"it gives {len(idx)} video frames, fewer than the {cfg.num_frames} asked (lower --frames "
                         "or motion.stride)")
    return motion.joints[idx], motion


def render_conditions(joints: np.ndarray, cfg: LatentManConfig, latent_res: int, say=lambda m: None, smpl=None):
    """Depth control images, the render and correspondences at the latent and the guidance resolution (``smpl``:
    the loaded SMPL model for ``render.body: smpl``, else it is read from ``render.smpl_model``)."""
    from dancegen.motion.correspondence import chain_correspondences
    from dancegen.motion.render import depth_control, fixed_camera, render_body

    r = cfg.render
    if r.body == "smpl":
        render = smpl_render(joints, cfg, smpl, say)
    else:
        cam = fixed_camera(joints, r.size, yfov_deg=r.yfov_deg, margin=r.margin, shift_px=tuple(r.shift_px))
        render = render_body(joints, camera=cam)
    depth = depth_control(render, r.depth_encoding)
    kw = dict(chain=cfg.correspondence.chain, features=cfg.correspondence.features, solver=cfg.correspondence.solver,
              max_part_pixels=cfg.correspondence.max_part_pixels)
    latent_pairs = chain_correspondences(render.iuv, latent_res, **kw) if cfg.sla.enabled else None
    pixel_pairs = (chain_correspondences(render.iuv, min(cfg.pwg.res, r.size), **kw)
                   if cfg.pwg.enabled else None)
    return depth, render, latent_pairs, pixel_pairs


def smpl_render(joints: np.ndarray, cfg: LatentManConfig, model=None, say=lambda m: None):
    """The user's SMPL model fitted to the joints and rasterised (`dancegen.motion.smpl`), framed like the capsules."""
    from dancegen.motion.render import framing_camera
    from dancegen.motion.smpl import fit_smpl, load_smpl, mesh_bounds, render_mesh, vertex_codes

    r = cfg.render
    model = model if model is not None else load_smpl(r.smpl_model, say)
    say(f"fitting SMPL to {len(joints)} frames ({r.smpl_iters} iterations)")
    verts, _, err = fit_smpl(model, joints, iters=r.smpl_iters)
    say(f"SMPL fit: mean joint error {100 * err:.1f} cm")
    cam = framing_camera(*mesh_bounds(verts), size=r.size, yfov_deg=r.yfov_deg, margin=r.margin,
                         shift_px=tuple(r.shift_px))
    return render_mesh(verts, model.faces, vertex_codes(model), cam)


def load_models(cfg: LatentManConfig, allow_download: bool = False, plan=None):
    """``(SD15Components, ControlNetSet)`` of the recipe's base and depth ControlNet."""
    import torch

    from dancegen.core.controlnet import ControlNetSet
    from dancegen.core.weights import load_sd15_components, resolve_model

    dtype = plan.dtype if plan is not None else torch.float32
    base = resolve_model(cfg.model.base or T2I_BUNDLED, kind="sd15", allow_download=allow_download)
    # bundled weights are stored in fp16: load them in the run's precision (fp32 on the CPU)
    comps = load_sd15_components(base, dtype=dtype)
    if comps.text_encoder is None:
        raise InputError(f"{cfg.model.base}: LatentMan needs a text-to-image model with text_encoder/ and tokenizer/")
    cn = resolve_model(cfg.model.controlnet or DEPTH_BUNDLED, kind="any", allow_download=allow_download)
    nets = ControlNetSet.from_pretrained_folders({"depth": cn.location if cn.is_local else cn.ref},
                                                 dtype=dtype)
    nets.eval().requires_grad_(False)
    return comps, nets


def generate(cfg: LatentManConfig, depth: np.ndarray, latent_pairs, pixel_pairs, comps, nets,
             callback=None) -> np.ndarray:
    """Run the pipeline on prepared conditions; ``(F, H, W, 3)`` uint8."""
    import torch

    from dancegen.methods.latentman.pipeline import LatentManPipeline

    pipe = LatentManPipeline(comps.unet, comps.vae, comps.text_encoder, comps.tokenizer, comps.scheduler, nets)
    s, T = cfg.sampler, cfg.sampler.steps
    d = torch.from_numpy(depth).float().div(255.0)[:, None].repeat(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    out = pipe(cfg.prompt + s.prompt_suffix, d, negative_prompt=s.negative_prompt, num_inference_steps=T,
               guidance_scale=s.guidance_scale, controlnet_scale=s.controlnet_scale, eta=s.eta,
               shared_noise=s.shared_noise, base=cfg.attention.kind,
               cross_frame_modules=cfg.attention.cross_frame_modules,
               masactrl_start_step=cfg.attention.masactrl_start_step,
               masactrl_start_layer=cfg.attention.masactrl_start_layer,
               latent_pairs=latent_pairs, sla_steps=window_steps(cfg.sla.window, T) if cfg.sla.enabled else (),
               pixel_pairs=pixel_pairs, pwg_steps=window_steps(cfg.pwg.window, T) if cfg.pwg.enabled else (),
               pwg_res=min(cfg.pwg.res, cfg.render.size), pwg_delta=cfg.pwg.delta,
               pwg_pixel_scale=cfg.pwg.pixel_scale, pwg_loss=cfg.pwg.loss, pwg_grad_mode=cfg.pwg.grad_mode,
               generator=gen, callback=callback).frames
    return (out.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def text2character(request, progress=None) -> dict:
    """Generate a video of the character in `request.prompt` performing `request.motion` (module docstring).

    Args:
        request: a `dancegen.requests.Text2CharacterRequest`: prompt, motion (text or a motion file), out
            (.mp4 / .mov / .gif), model (SD-1.5 base), controlnet (one depth ControlNet), recipe / overrides,
            negative_prompt, frames, fps, steps, guidance_scale, seed, size, device, dtype, allow_download,
            dry_run, preview.
        progress: optional ``progress(message)``.

    Returns:
        Report dict (model, frames, size, seconds, H_MSE, outputs).
    """
    from dancegen.config import save_config
    from dancegen.io.video import write_video
    from dancegen.metrics.consistency import h_mse

    say = progress or (lambda msg: None)
    out = Path(request.out) if request.out is not None else None
    if out is None and not request.dry_run:
        raise InputError("text2character needs -o OUT.mp4")
    if out is not None and out.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"text2character writes a video ({', '.join(VIDEO_SUFFIXES)}); got {out.name}", out)
    cfg = build_config(request)
    plan = request.runtime(cfg.model.device, cfg.model.dtype)
    joints, motion = (None, None) if request.dry_run else motion_joints(cfg, say)  # a bad motion file fails here
    smpl = None
    if cfg.render.body == "smpl":  # a missing or bad SMPL file fails here too, before any model loads
        from dancegen.motion.smpl import load_smpl

        smpl = load_smpl(cfg.render.smpl_model, say)
    say("loading the text-to-image model and the depth ControlNet")
    comps, nets = load_models(cfg, request.downloads_allowed(), plan)
    latent_res = cfg.render.size // comps.vae_scale_factor
    report = {"model": cfg.model.base or f"bundled:{T2I_BUNDLED}",
              "controlnet": cfg.model.controlnet or f"bundled:{DEPTH_BUNDLED}", "base": cfg.attention.kind,
              "sla": cfg.sla.enabled, "pwg": cfg.pwg.enabled, "size": [cfg.render.size] * 2,
              "runtime": plan.as_dict()}
    if request.dry_run:
        report["dry_run"] = True
        return report
    comps.unet.to(plan.device)
    comps.vae.to(plan.device)
    comps.text_encoder.to(plan.device)
    nets.to(plan.device)
    say(f"rendering {len(joints)} frames of the motion and matching them")
    depth, render, latent_pairs, pixel_pairs = render_conditions(joints, cfg, latent_res, say, smpl)
    say(f"generating {len(joints)} frames at {cfg.render.size}px, {cfg.sampler.steps} steps")
    t0 = time.perf_counter()
    video = generate(cfg, depth, latent_pairs, pixel_pairs, comps, nets)
    seconds = time.perf_counter() - t0
    res = min(cfg.eval.h_mse_res, cfg.render.size)
    score = h_mse(video, render.iuv, size=res)
    fps = cfg.video_fps
    meta = {"method": "latentman", "model": report["model"], "seed": cfg.seed}
    write_video(out, video, fps=fps, metadata=meta)
    recipe_path = out.with_name(out.stem + ".recipe.yaml")
    save_config(cfg, recipe_path)
    depth_path = out.with_name(out.stem + ".depth" + out.suffix)
    write_video(depth_path, np.repeat(depth[..., None], 3, -1), fps=fps, metadata=meta)
    iuv_path = out.with_name(out.stem + ".iuv.npz")
    save_iuv(iuv_path, render.iuv)
    report.update({"frames": int(video.shape[0]), "fps": fps, "seconds": round(seconds, 3), "h_mse": round(score, 3),
                   "motion": {"format": motion.format, **{k: v for k, v in motion.meta.items()
                                                          if isinstance(v, (str, int, float))}},
                   "output": str(out), "recipe": str(recipe_path), "depth": str(depth_path), "iuv": str(iuv_path),
                   "prompt": cfg.prompt})
    if request.preview:
        from dancegen.io import montage

        prev = out.with_name(out.stem + ".preview" + out.suffix)
        h = video.shape[1]
        rows = [montage.grid([[montage.label(np.repeat(depth[t][..., None], 3, -1), "depth"),
                               montage.label(video[t], f"t={t}")]], height=h) for t in range(len(video))]
        write_video(prev, np.stack(rows), fps=fps, metadata=meta)
        report["preview"] = str(prev)
    return report
