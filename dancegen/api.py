"""One Python function per CLI verb: what the CLI and the tests call.

Functions here parse nothing from the command line and print nothing; they take paths and options, do the work
through the domain libraries and methods, write outputs atomically, and return a small report dict. Heavy imports
happen inside each function so that `import dancegen.api` is cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dancegen.errors import InputError
from dancegen.io.outputs import check_video_output

PathLike = str | os.PathLike


# ---- helpers ----------------------------------------------------------------------------------------------------


def _write_json(path: PathLike, obj) -> None:
    from dancegen.io.atomic import write_text

    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _is_pose_input(path: Path) -> bool:
    from dancegen.pose.inputs import is_pose_input

    return is_pose_input(path)


def load_poses(path: PathLike, *, fps: float | None = None, size: tuple[int, int] | None = None,
               backend: str = "blazepose", **extract_kw):
    """Poses from a pose folder/npz, a 3D motion file, or extracted from an image/video/frame folder
    (`dancegen.pose.inputs.load_poses`)."""
    from dancegen.pose.inputs import load_poses as load

    return load(path, fps=fps, size=size, backend=backend, **extract_kw)


def write_poses(seq, out: PathLike, render: bool = True) -> dict:
    """Write poses to a `.npz` or to a folder (OpenPose JSON + `pose.mp4` of the rendered maps)."""
    from dancegen.pose.openpose_json import save_npz, write_openpose_folder

    out = Path(out)
    if out.suffix.lower() == ".npz":
        save_npz(seq, out)
        return {"poses": str(out)}
    write_openpose_folder(seq, out / "openpose_json")
    report = {"poses": str(out / "openpose_json")}
    if render:
        from dancegen.io.video import write_video
        from dancegen.pose.render import render_pose_sequence

        write_video(out / "pose.mp4", render_pose_sequence(seq), fps=seq.fps, metadata={"verb": "pose render"})
        report["pose_video"] = str(out / "pose.mp4")
    return report


# ---- pose -------------------------------------------------------------------------------------------------------


def pose_convert(src: PathLike, out: PathLike, to: str = "coco18", fps: float | None = None,
                 size: tuple[int, int] | None = None) -> dict:
    """Convert a pose folder/npz, or a 3D motion file projected to COCO-18, to a 2D format (`pose.convert.FORMATS`).

    Motion files (MDM results.npy, HumanML3D new_joints/*.npy, synth joints3d.npy, AIST++ keypoints3d/*.pkl, .bvh)
    are projected through one front camera at `size` (default 512x512); see `load_poses`.
    """
    from dancegen.pose.convert import FORMATS, convert
    from dancegen.requests import positive_number

    positive_number("--fps", fps)
    if to not in FORMATS:
        raise InputError(f"cannot convert to {to!r}; 2D targets are {', '.join(FORMATS)} (3D formats such as "
                         "humanml3d22 are sources: project them with dancegen.pose.convert.humanml3d_to_coco18)")
    seq = convert(load_poses(src, fps=fps, size=size), to)
    return {"frames": seq.num_frames, "format": to, **write_poses(seq, out, render=to == "coco18")}


def pose_render(src: PathLike, out: PathLike, width: int | None = None, height: int | None = None,
                hands: bool = True, face: bool = True, threshold: float = 0.3) -> dict:
    """Render poses as ControlNet pose maps (OpenPose/controlnet_aux convention) to an mp4/gif or PNG folder.

    A 3D motion file (see `load_poses`) is projected at `width` x `height` (default 512x512) first.
    """
    from dancegen.io.video import write_video
    from dancegen.pose.render import render_pose_sequence

    check_video_output(out)
    seq = load_poses(src, size=(width, height) if width and height else None)
    frames = render_pose_sequence(seq, width, height, draw_hands=hands, draw_face=face, threshold=threshold)
    write_video(out, frames, fps=seq.fps, metadata={"verb": "pose render"})
    return {"frames": len(frames), "output": str(out)}


def pose_smooth(src: PathLike, out: PathLike, method: str = "one_euro", max_gap: int = 5,
                size: tuple[int, int] | None = None, **params) -> dict:
    """Reduce pose jitter; reports the jitter (mean |second difference|, px) before and after."""
    from dancegen.pose.smooth import jitter, smooth_poses

    if method not in ("one_euro", "savgol", "gaussian"):
        raise InputError(f"unknown smoothing method {method!r}; use one_euro, savgol or gaussian")
    seq = load_poses(src, size=size)
    try:
        smoothed = smooth_poses(seq, method=method, max_gap=max_gap, **params)
    except TypeError as e:
        raise InputError(f"bad smoothing parameter: {e}") from None
    before, after = jitter(seq.xy, seq.visible()), jitter(smoothed.xy, smoothed.visible())
    return {"frames": seq.num_frames, "jitter_before": before, "jitter_after": after, **write_poses(smoothed, out)}


def pose_retarget(driving: PathLike, ref: PathLike, out: PathLike, mode: str = "bones", root: str = "neck",
                  offset_mode: str = "first_frame", size: tuple[int, int] | None = None) -> dict:
    """Put a driving pose sequence on the body in a reference image (or reference pose).

    Args:
        driving: Pose folder/npz, or a video to extract poses from.
        ref: Reference image (its pose is extracted) or a pose file; only the first frame is used.
        out: Output folder (OpenPose JSON + pose.mp4) or `.npz`.
        mode: "bones" keeps the driving bone directions with the reference bone lengths and position
            (`dancegen.pose.retarget.retarget`); "offset" is Edit-Your-Motion's centre/scale alignment
            (Algorithm 1, `skeleton_offset`), which moves and scales the driving skeleton onto the reference's box.
    """
    from dancegen.pose.retarget import retarget, skeleton_offset

    if mode not in ("bones", "offset"):
        raise InputError(f"--mode must be 'bones' or 'offset', got {mode!r}")
    if root not in ("neck", "mid_hip"):
        raise InputError(f"--root must be 'neck' or 'mid_hip', got {root!r}")
    drv = load_poses(driving, size=size)
    reference = load_poses(ref, mode="image")
    if not (reference.conf[:1] > 0.3).any():
        raise InputError("no person found in the reference (no confident keypoint)", ref)
    try:
        if mode == "bones":
            seq = retarget(drv, reference, root=root)
        else:
            # Algorithm 1 maps the *reference* skeletons onto the *source* person: here the source is the person in
            # the reference image and the skeletons to move are the driving ones.
            seq = skeleton_offset(reference, drv, mode=offset_mode)
    except InputError as e:
        if e.path is None:  # the pose library does not know the file: name it here
            raise InputError(e.message, driving) from None
        raise
    seq.meta.update({"retarget_mode": mode, "driving": str(driving), "reference": str(ref)})
    return {"frames": seq.num_frames, "mode": mode, **write_poses(seq, out)}


# ---- batch over folders of videos --------------------------------------------------------------------------------


def video_batch(source: PathLike) -> list[Path] | None:
    """The videos of a folder that holds video files (a batch), or None when `source` is one input.

    A folder of frames or of OpenPose JSON is one input; a folder of .mp4/.mov/... files is a batch, one output
    folder per video (named by the file stem).
    """
    from dancegen.io.video import VIDEO_SUFFIXES, natural_key

    source = Path(source)
    if not source.is_dir():
        return None
    from dancegen.io.atomic import is_hidden

    videos = [p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not is_hidden(p)]
    return sorted(videos, key=lambda p: natural_key(p.name)) or None


def run_over_videos(source: PathLike, out: PathLike, fn, *, shard: str | None = None, finished=None,
                    progress=None) -> dict:
    """Run `fn(src, out_dir)` once for a single input, or per video for a folder of videos (resumable, shardable).

    Args:
        finished: `finished(out_dir) -> bool`, True when an item's output exists *and* was made with the options of
            this run; such items are skipped. None: never skip here (`fn` has its own cache).

    Raises:
        InputError: a bad --shard, or any item failing (one line per failed item; finished items are kept).
    """
    from dancegen.io.batch import LOG_NAME, BatchItem, parse_shard, run_batch

    shard_t = parse_shard(shard)  # validated even for a single input
    videos = video_batch(source)
    if videos is None:
        if shard_t is not None and shard_t[0] != 1:
            return {"batch": f"shard {shard} has no work: a single input belongs to shard 1"}
        return fn(Path(source), Path(out))
    out = Path(out)
    items = [BatchItem(id=v.stem, output=out / v.stem, inputs={"src": v}) for v in videos]
    report = run_batch(items, lambda it: fn(it.inputs["src"], it.output), shard=shard_t, log_dir=out,
                       progress=progress, skip_finished=finished is not None,
                       is_done=lambda it: finished(it.output))
    if report.failed:
        lines = [f"{len(report.failed)} of {len(report.failed) + len(report.done) + len(report.skipped)} items failed "
                 f"(finished items are kept; log: {out / LOG_NAME}):"]
        lines += [f"  {err}" for err in report.failed.values()]
        raise InputError("\n".join(lines))
    return {"batch": report.summary(), "done": report.done, "skipped": report.skipped}


# ---- flow -------------------------------------------------------------------------------------------------------


def flow(source: PathLike, out: PathLike, method: str = "pose", direction: str = "forward", size=None,
         weights: PathLike | None = None, gt: PathLike | None = None, output_format: str = "flo",
         preview: bool = True, iters: int = 12, device: str = "cpu", shard: str | None = None,
         image_size: tuple[int, int] | None = None, progress=None) -> dict:
    """Dense motion flow for every frame pair (see `dancegen.flow.compute.compute_flow`); folders of videos batch.

    Args:
        image_size: `(width, height)` for OpenPose JSON from other tools (no `pose_meta.json`).
    """
    from dancegen.flow.compute import compute_flow
    from dancegen.runtime import resolve_device

    dev = resolve_device(device) if method == "raft" else "cpu"

    def one(src: Path, out_dir: Path) -> dict:
        if image_size and _is_pose_input(src):
            src = load_poses(src, size=image_size)
        return compute_flow(src, out_dir, method=method, direction=direction, size=size, weights=weights, gt=gt,
                            output_format=output_format, preview=preview, iters=iters, device=dev)

    def finished(out_dir: Path) -> bool:
        try:
            rep = json.loads((out_dir / "report.json").read_text())
        except (OSError, ValueError):
            return False
        same = rep.get("method") == method and rep.get("direction") == direction and (gt is None) == ("gt" not in rep)
        if isinstance(size, tuple):
            same = same and (rep.get("height"), rep.get("width")) == size
        elif size is not None:
            same = same and max(rep.get("height", 0), rep.get("width", 0)) == size
        return same and output_format in rep.get("outputs", {})

    return run_over_videos(source, out, one, shard=shard, finished=finished, progress=progress)


# ---- extract-pose -----------------------------------------------------------------------------------------------


def extract_pose(source: PathLike, out: PathLike, backend: str = "blazepose", fmt: str = "coco18", size=None,
                 smooth: str | None = None, mode: str = "auto", maps: bool = True, video: bool = True,
                 masks: bool = True, cache: bool = True, model_dir: PathLike | None = None,
                 weights_dir: PathLike | None = None, max_frames: int | None = None, shard: str | None = None,
                 image_size: tuple[int, int] | None = None, progress=None) -> dict:
    """Poses of the dancer in a video / frame folder / image (or each video of a folder), written as OpenPose JSON,
    pose maps, a pose video and person masks (see `dancegen.pose.extract.extract_poses`)."""
    from dancegen.pose.extract import extract_poses

    def one(src: Path, out_dir: Path) -> dict:
        return extract_poses(src, out_dir, backend=backend, fmt=fmt, size=size, smooth=smooth, write_maps=maps,
                             write_video=video, write_masks=masks, cache=cache, mode=mode, model_dir=model_dir,
                             weights_dir=weights_dir, max_frames=max_frames, image_size=image_size,
                             progress=progress)

    # extract_poses keeps a cache key of input + options in meta.json: it returns at once for a finished item made
    # with the same options and recomputes otherwise, so the batch never skips on its own.
    return run_over_videos(source, out, one, shard=shard)


# ---- synth ------------------------------------------------------------------------------------------------------


def synth(out: PathLike, num_clips: int = 1, layout: str = "clips", size=256, seconds: float | None = None,
          num_frames: int | None = None, fps: float = 24.0, motion: str | None = None, seed: int = 0,
          workers: int = 1, shard: str | None = None, overwrite: bool = False, flow: bool = True,
          camera: str | None = None, progress=None) -> dict:
    """Render synthetic dance clips with all their ground truth (see `dancegen.synth.layouts.generate`).

    `layout="edit"` writes `num_clips` motion-editing cases instead (source, exact target and reference clips; see
    `dancegen.synth.edit`), with `motion` as the edited motion.
    """
    from dancegen.synth import generate

    if num_clips < 1:
        raise InputError(f"--num-clips must be at least 1, got {num_clips}")
    return generate(out, num_clips=num_clips, layout=layout, seed=seed, size=size, seconds=seconds,
                    num_frames=num_frames, fps=fps, motion=motion, workers=workers, overwrite=overwrite,
                    shard=shard, progress=progress, flow=flow, camera_motion=camera)


# ---- demo -------------------------------------------------------------------------------------------------------


DEMO_AVATAR_FRAMES = 12  # Dancing Avatar makes frames one at a time (about 1.3 s each on 2 CPU cores)


def demo(out: PathLike, seed: int = 0, size: int = 256, seconds: float = 2.0, fps: float = 24.0,
         progress=None) -> dict:
    """The main job on the embedded default, end to end, with numbers against ground truth.

    1. `synth`: two clips with different dancers (A dances; B's first frame is the reference photo).
    2. `extract-pose` on A's video with the default backend; PCK against A's true joints.
    3. `pose retarget`: A's extracted motion onto B's body (B's pose is extracted from the reference photo).
    4. `flow --method pose` on the retargeted poses; and, on clip A, pose flow and DIS against the true flow.
    5. `animate` with the bundled Dance-Your-Latents model: B's photo dances A's retargeted motion (skipped while
       that model is not installed).
    6. `music2dance` with the bundled Dance Any Beat model: B's photo dances to A's music.
    7. `text2character` with the bundled LatentMan models: B's clothes in words perform A's motion text; and with
       `poses` (Dancing Avatar): B's clothes, hair and room in words dance A's retargeted poses (the first
       `DEMO_AVATAR_FRAMES`).
    8. `summary.png` (one row per sampled time), `summary.mp4` and `report.json`.
    """
    from dancegen.io.atomic import atomic_dir

    final = Path(out)
    step = progress or (lambda name: None)
    # refuses a folder with the user's files before any work; the whole folder appears at the end, or nothing does
    with atomic_dir(final) as tmp:
        report = _demo_in(tmp, seed, size, seconds, fps, step)
        report = json.loads(json.dumps(report).replace(str(tmp), str(final)))
        _write_json(tmp / "report.json", report)
    return report


def _demo_in(out: Path, seed: int, size: int, seconds: float, fps: float, step) -> dict:
    """`demo`'s work, written into ``out`` (a temporary folder that becomes the output when everything worked)."""
    import numpy as np

    from dancegen.flow.compute import compute_flow
    from dancegen.flow.estimators import estimate_flow
    from dancegen.flow.io import load_flow_npz, read_flow_folder
    from dancegen.flow.pose_flow import pose_sequence_flow
    from dancegen.flow.vis import flows_to_colors
    from dancegen.flow.warp import flow_stats
    from dancegen.io import montage
    from dancegen.io.video import read_video, write_image, write_video
    from dancegen.pose.backends.eval import pck
    from dancegen.pose.extract import estimate_poses, extract_poses
    from dancegen.pose.openpose_json import read_openpose_folder
    from dancegen.pose.render import render_pose_sequence
    from dancegen.pose.retarget import retarget

    step("synth: two dancers")
    synth(out / "synth", num_clips=2, size=size, seconds=seconds, fps=fps, seed=seed, camera="static")
    clip_a, clip_b = out / "synth" / "clip_00000", out / "synth" / "clip_00001"
    video_a = read_video(clip_a / "video.mp4")
    ref_img = read_video(clip_b / "video.mp4", max_frames=1).frames[0]
    write_image(out / "reference.png", ref_img)

    step("extract-pose: dancer A")
    backend = "blazepose"
    ext = extract_poses(clip_a / "video.mp4", out / "poses_A", smooth="one_euro")
    if ext["detection_rate"] < 0.5:  # BlazePose misses small synthetic dancers (64 px demos)
        backend = "synthpose"
        step(f"extract-pose: the default detector found dancer A in {ext['detection_rate']:.0%} of the frames; "
             "using the bundled SynthPose estimator (made for the synthetic world)")
        ext = extract_poses(clip_a / "video.mp4", out / "poses_A", backend=backend, smooth="one_euro")
    poses_a = read_openpose_folder(out / "poses_A" / "openpose_json")
    gt_a = read_openpose_folder(clip_a / "openpose_json")
    acc = pck(poses_a, gt_a, threshold=0.2, normalise="torso")

    step("retarget: A's motion onto B")
    ref_pose = estimate_poses(out / "reference.png", mode="image", backend=backend)
    if ref_pose.meta.get("detection_rate", 0) == 0 and backend != "synthpose":
        backend = "synthpose"
        ref_pose = estimate_poses(out / "reference.png", mode="image", backend=backend)
    if ref_pose.meta.get("detection_rate", 0) == 0:
        raise InputError("the pose detector found no person in the reference frame; try another --seed",
                         out / "reference.png")
    moved = retarget(poses_a, ref_pose)
    write_poses(moved, out / "retargeted")

    step("flow: pose flow of the retargeted motion")
    flow_rep = compute_flow(moved, out / "flow", method="pose")
    moved_flow = read_flow_folder(out / "flow" / "flo").flow  # what was just computed, not a second computation

    step("flow accuracy on clip A")
    gt_flow = load_flow_npz(clip_a / "flow_forward.npz").flow
    body = read_video(clip_a / "masks").frames[:-1, ..., 0] > 127
    pose_fw = pose_sequence_flow(gt_a, "forward")
    dis_fw = estimate_flow(video_a.frames, method="dis")
    epe = {name: flow_stats(f, gt_flow, mask=body)["epe"] for name, f in (("pose", pose_fw), ("dis", dis_fw),
                                                                            ("zero", np.zeros_like(gt_flow)))}

    import cv2

    from dancegen.methods.dance_your_latents.model import bundled_model_path, model_folder

    if model_folder(bundled_model_path()) is not None:
        step("animate: B dances A's motion (bundled dyl-tiny)")
        anim = animate(out / "reference.png", out / "retargeted" / "openpose_json", out / "animated.mp4",
                       retarget=False, preview=False, device="cpu", seed=seed)
        animated = read_video(out / "animated.mp4").frames
    else:  # issue 4: the bundled Dance-Your-Latents model is not trained to a usable quality yet
        step("animate: skipped, the bundled Dance-Your-Latents model is not installed (README, Methods)")
        anim, animated = {"skipped": "bundled dyl-tiny not installed"}, None

    step("music2dance: B dances to A's music (bundled dab-tiny)")
    m2d = music2dance(clip_a / "audio.wav", out / "reference.png", out / "music_dance.mp4", device="cpu", seed=seed)
    music_video = read_video(out / "music_dance.mp4")

    from dancegen.synth.appearance import Appearance, place_text

    meta_a, meta_b = (json.loads((c / "meta.json").read_text()) for c in (clip_a, clip_b))
    clothes_b, face_b = Appearance.from_dict(meta_b["appearance"]).prompt_parts()
    step("text2character: B's description performs A's motion text (bundled LatentMan models)")
    latentman = text2character(f"a dancer in {clothes_b}", out / "character.mp4", motion=meta_a["motion_text"],
                               preview=False, device="cpu", seed=seed)
    character_video = read_video(out / "character.mp4")
    step("text2character --poses: B's description dances A's retargeted poses (bundled Dancing Avatar)")
    avatar = text2character(None, out / "avatar.mp4", poses=out / "retargeted" / "openpose_json", clothes=clothes_b,
                            face=face_b, place=place_text(meta_b["scene_text"]),
                            frames=min(DEMO_AVATAR_FRAMES, moved.num_frames), preview=False, device="cpu", seed=seed)
    avatar_frames = read_video(out / "avatar.mp4").frames

    step("summary picture and video")
    maps_a = render_pose_sequence(poses_a)
    maps_moved = render_pose_sequence(moved)
    flow_rgb = flows_to_colors(moved_flow)
    n = video_a.num_frames
    refs = np.repeat(ref_img[None], n, axis=0)

    def big(img: np.ndarray) -> np.ndarray:  # the bundled models work at 64 px
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST) if img.shape[0] != size else img

    def panel(t: int) -> list:
        ft = min(t, n - 2)
        mt = min(int(t / video_a.fps * music_video.fps), music_video.num_frames - 1)
        ct = min(int(t / video_a.fps * character_video.fps), character_video.num_frames - 1)
        return [montage.label(video_a.frames[t], f"A t={t}"),
                montage.label(montage.overlay(video_a.frames[t], maps_a[t]), "extracted pose"),
                montage.label(montage.overlay(refs[t], maps_moved[t]), "retargeted onto B"),
                montage.label(flow_rgb[ft], "pose flow"),
                *([montage.label(big(animated[min(t, len(animated) - 1)]), "animate (dyl-tiny)")]
                  if animated is not None else []),
                montage.label(big(music_video.frames[mt]), "music2dance (dab-tiny)"),
                montage.label(big(character_video.frames[ct]), "text2character (LatentMan)"),
                montage.label(big(avatar_frames[min(t, len(avatar_frames) - 1)]), "--poses (Dancing Avatar)")]

    rows = [panel(t) for t in np.linspace(0, n - 1, 4).round().astype(int)]
    write_image(out / "summary.png", montage.grid(rows, height=min(size, 192)))
    write_video(out / "summary.mp4", np.stack([montage.grid([panel(t)], height=min(size, 192)) for t in range(n)]),
                fps=video_a.fps, audio=video_a.audio, sample_rate=video_a.sample_rate,
                metadata={"verb": "demo", "model": "bundled:dyl-tiny,dab-tiny,t2i-tiny,t2m-tiny,controlnet-depth-tiny,"
                                                   "controlnet-openpose-tiny,dancing-avatar-tiny", "seed": seed})

    report = {
        "seed": seed,
        "clips": [str(clip_a), str(clip_b)],
        "pose_backend": backend,
        "pose_detection_rate_A": ext["detection_rate"],
        "pck@0.2_torso_A": acc["pck"],
        "retargeted_frames": moved.num_frames,
        "flow_ms_per_pair": flow_rep.get("ms_per_pair"),
        "flow_epe_on_body_A": epe,
        "animate": {k: anim.get(k) for k in ("output", "frames", "seconds", "model", "skipped") if k in anim},
        "music2dance": {k: m2d.get(k) for k in ("output", "frames", "fps", "clips", "generate_s", "model")},
        "text2character": {k: latentman.get(k) for k in ("output", "frames", "fps", "seconds", "h_mse", "prompt")},
        "dancing_avatar": {k: avatar.get(k) for k in ("output", "frames", "fps", "seconds", "prompt", "character")},
        "outputs": {"summary": str(out / "summary.png"), "summary_video": str(out / "summary.mp4"),
                    "music_dance": str(out / "music_dance.mp4"), "character": str(out / "character.mp4"),
                    "avatar": str(out / "avatar.mp4"),
                    "poses_A": str(out / "poses_A"), "retargeted": str(out / "retargeted"),
                    "flow": str(out / "flow")},
    }
    return report


# ---- evaluate ---------------------------------------------------------------------------------------------------


def evaluate(metrics: str | list[str], pred: PathLike, gt: PathLike | None = None, out: PathLike | None = None,
             **kwargs) -> dict:
    """Score generated videos with the papers' metrics; writes JSON + CSV with the protocol next to every score
    (see `dancegen.metrics.evaluate.evaluate` for every option)."""
    from dancegen.metrics.evaluate import evaluate as run

    return run(metrics, pred, gt=gt, out=out, **kwargs)


# ---- generating verbs and train (methods through the registry) ---------------------------------------------------


def generate(verb: str, request, progress=None) -> dict:
    """Run a generating verb: pick the method (`registry.choose_method`), seed, and call it with the request.

    Args:
        verb: "animate" | "music2dance" | "text2character".
        request: the verb's request (`dancegen.requests.VERB_REQUESTS[verb]`, e.g. from `Request.build(**kw)`).
        progress: optional ``progress(message)`` (or the verb's own progress callback).

    Returns:
        The method's report, with ``method`` added.
    """
    from dancegen.registry import choose_method

    spec = choose_method(verb, request.method, request.model, request)
    if request.seed is not None:
        from dancegen.runtime import seed_everything

        seed_everything(request.seed)
    report = spec.load(verb)(request, progress=progress)
    return {"method": spec.id, **report}


def animate(ref: PathLike | None, poses, out: PathLike, *, progress=None, **options) -> dict:
    """Make the person in a reference photo dance the driving poses (Dance-Your-Latents unless `method` or the
    `model` folder says otherwise).

    Args:
        ref / poses / out: reference photo, driving poses, output video.
        progress: optional ``progress(message)``.
        **options: any field of `dancegen.requests.AnimateRequest` (model, method, recipe, overrides, background,
            ref_mask, retarget, frames, steps, guidance_scale, size, device, dtype, cpu_offload, vae_slicing,
            vae_tiling, lora, allow_download, seed, dry_run, preview).
    """
    from dancegen.requests import AnimateRequest

    request = AnimateRequest.build(ref=ref, poses=poses, out=out, **options)
    return generate("animate", request, progress)


def music2dance(song: PathLike, ref: PathLike, out: PathLike, *, progress=None, **options) -> dict:
    """A dance video of the person in `ref` for the music in `song`, with the music as its audio track (Dance Any
    Beat unless `method` or the `model` folder says otherwise).

    Args:
        song / ref / out: music file, photo, output .mp4.
        progress: optional ``progress(done, total)`` over all denoising steps.
        **options: any field of `dancegen.requests.Music2DanceRequest` (seconds, start, fps, model, steps, sampler,
            overrides, seed, scene, ref_mask, scene_mask, device, dtype, guidance_scale, method).
    """
    from dancegen.requests import Music2DanceRequest

    request = Music2DanceRequest.build(song=song, ref=ref, out=out, **options)
    return generate("music2dance", request, progress)


def text2character(prompt: str | None, out: PathLike, *, motion: str | None = None, progress=None,
                   **options) -> dict:
    """A video of the character described by `prompt` performing `motion` (words or a motion file; default: the
    prompt). LatentMan unless `method`, `poses` (Dancing Avatar) or the `model` folder says otherwise.

    Args:
        prompt / out / motion: character prompt, output video, motion text or file.
        progress: optional ``progress(message)``.
        **options: any field of `dancegen.requests.Text2CharacterRequest` (negative_prompt, poses, clothes, face,
            place, background, character, controlnet, frames,
            fps, steps, guidance_scale, size, seed, model, method, recipe, overrides, device, dtype, allow_download,
            preview, dry_run).
    """
    from dancegen.requests import Text2CharacterRequest

    request = Text2CharacterRequest.build(prompt=prompt, out=out, motion=motion, **options)
    return generate("text2character", request, progress)


def finetune_oneshot(source: PathLike, prompt: str | None, out: PathLike, *, method: str = "edit-your-motion",
                     progress=None, **options) -> dict:
    """Fine-tune a one-shot editing method (Edit-Your-Motion) on one source clip; its case folder is `out/model`.

    Args:
        source / prompt / out: the clip (or photo), its prompt, the run folder.
        method: the method (one with a `finetune-oneshot` verb).
        progress: optional ``progress(message)``.
        **options: the method's options (edit-your-motion: poses, masks, target, video, model, controlnet, recipe,
            overrides, steps, frames, resume, device, seed, allow_download).
    """
    from dancegen.registry import get_method

    fn = get_method(method).load("finetune-oneshot")
    report = fn(source, prompt, out, progress=progress, **options)
    return {"method": get_method(method).id, **report}


def train(recipe: PathLike, overrides: list[str] | None = None, out: PathLike | None = None, resume: str = "auto",
          device: str | None = None, progress=None) -> dict:
    """Train a method from a recipe: the recipe's `method:` picks the method in the registry.

    Args:
        recipe: YAML recipe (may overlay another with `base:`).
        overrides: `key=value` overrides.
        out: run folder (default `runs/<recipe stem>`).
        resume: "auto" | "never" | PATH of a checkpoint.
        device: overrides the recipe's `train.device` when given.
    """
    from dancegen.registry import recipe_method, trainer_of
    from dancegen.runtime import seed_everything

    recipe = Path(recipe)
    method = recipe_method(recipe)
    if not method:
        raise InputError("the recipe has no `method:` key naming the method to train", recipe)
    load_config, train_fn = trainer_of(method)
    sets = list(overrides or []) + ([f"train.device={device}"] if device and device != "auto" else [])
    cfg = load_config(recipe, sets)
    import torch  # noqa: F401  (imported first so that seed_everything seeds it: model initialisation draws from it)

    seed_everything(cfg.seed)
    out = Path(out) if out is not None else Path("runs") / recipe.stem
    return train_fn(cfg, out, resume=resume, progress=progress)
