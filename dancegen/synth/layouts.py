"""`generate`: many synthetic clips written in one of five dataset layouts (one renderer, five writers).

Layouts (../shared/specs/prior-art.md §3.4-3.6):

* `clips` (default): `clip_00000/` with `video.mp4` (+ audio), `audio.wav`, `openpose_json/`, `pose_coco18.npy`,
  `joints3d.npy`, `smpl.npz`, `flow_forward.npz`, `flow_backward.npz`, `depth.npz`, `iuv.npz`, `masks/`,
  `beats.json`, `camera.json`, `appearance.txt`, `motion.txt`, `meta.json`.
* `tiktok` (TikTok/DisCo-like): `00001/images/0000.png`, `masks/`, `densepose/` (IUV png: R = part index,
  G = 255 u, B = 255 v), `openpose_json/`, `meta.json`; split lists `train.txt`, `test.txt` at the root.
* `aist` (AIST++-like): `videos/gBR_sBM_c01_d01_mBR0_ch01.mp4`, `wavs/mBR0.wav`, `keypoints2d/*.pkl`
  ((9, N, 17, 3) COCO-17 for nine cameras around the dancer; the video is camera c01), `keypoints3d/*.pkl`
  ((N, 17, 3), cm), `motions/*.pkl` (smpl-like `smpl_poses` (N, 72) axis-angle, `smpl_trans` in cm,
  `smpl_scaling` [100]), `cameras/setting<k>.json` + `cameras/mapping.txt`, `splits/`, `ignore_list.txt`.
  Tracks are shared as in AIST++: every clip named `m<genre><k>` plays the same music; `d<NN>` is the same dancer.
* `humanml3d`: `new_joints/000000.npy` ((T, 22, 3) at 20 fps, Y-up metres, floor at y = 0 as HumanML3D's
  motion_process does), `texts/000000.txt` (lines `caption#tokens#0.0#0.0`, tokens `lemma/POS` from a small
  built-in tagger instead of spaCy), `all.txt`, `train.txt`, `val.txt`, `test.txt`. No images are rendered.
* `edit` (motion editing with an exact target, `dancegen.synth.edit`): `case_00000/` with `source/` (seed A's
  dancer and motion), `target/` (dancer A in room A doing motion B), `reference/` (dancer B doing motion B), each
  in the `clips` layout, and `case.json` (seeds, prompt, motion texts). `motion` sets motion B.

Every clip is written atomically (a folder via `atomic_dir`, or files in an order whose last file marks the clip
finished), so `generate` resumes after a crash and skips finished clips; `shard=(k, n)` or "K/N" (1-based) takes
every n-th clip.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dancegen.errors import InputError
from dancegen.io.atomic import atomic_dir, atomic_path, save_npz, write_text

LAYOUTS = ("clips", "tiktok", "aist", "humanml3d", "edit")
CAMERA_MOTIONS = ("static", "pan", "zoom", "shake")
MIN_SIZE, MAX_SIZE = 32, 1024  # tested range is 64-512; smaller/larger render but are not checked
AIST_GENRES = ("gBR", "gPO", "gLO", "gMH", "gLH", "gHO", "gWA", "gKR", "gJS", "gJB")
HUMANML3D_FPS = 20.0
_COCO18_TO_17 = [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]  # COCO-17 order from COCO-18 indices


def clip_seed(seed: int, index: int) -> int:
    """Seed of clip `index` of a run with master `seed`."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# ------------------------------------------------------------------------------------------------- small writers
def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)


def _save_npz(path: Path, compressed: bool = True, **arrays) -> None:
    save_npz(path, compressed, **arrays)  # io.atomic's, compressed by default here


def _save_pkl(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)


def _save_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    raise TypeError(type(o))


def _png_folder(folder: Path, images: np.ndarray, digits: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:0{digits}d}.png", compress_level=1)


def _video(path: Path, clip) -> None:
    from dancegen.io.video import write_video

    write_video(path, clip.frames, clip.fps, audio=clip.audio, sample_rate=clip.sample_rate,
                metadata={"verb": "synth", "seed": getattr(clip, "seed", None)})


def _audio(path: Path, clip) -> None:
    from dancegen.io.audio import write_audio

    write_audio(path, clip.audio, clip.sample_rate)


def _openpose(folder: Path, clip) -> None:
    from dancegen.pose.openpose_json import write_openpose_folder

    write_openpose_folder(clip.pose_sequence(), folder)


def iuv_image(parts: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """DensePose-style IUV image `(..., 3)` uint8: part index, 255 u, 255 v."""
    u = np.round(uv[..., 0].astype(np.float32) * 255)
    v = np.round(uv[..., 1].astype(np.float32) * 255)
    return np.stack([parts, u, v], -1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- layout writers
def write_clip_folder(clip, folder: str | os.PathLike) -> None:
    """Write one clip in the `clips` layout into `folder` (expected to be empty, e.g. an `atomic_dir`)."""
    d = Path(folder)
    _video(d / "video.mp4", clip)
    _audio(d / "audio.wav", clip)
    _openpose(d / "openpose_json", clip)
    _save_npy(d / "pose_coco18.npy", clip.keypoints)
    _save_npy(d / "joints3d.npy", clip.joints3d)
    _save_npz(d / "smpl.npz", rotations=clip.rotations, root=clip.root)
    if clip.flow_forward is not None:
        from dancegen.flow.io import save_flow_npz  # the flow library's layout, with the direction recorded

        meta = {"source": "dancegen synth (exact)", "seed": clip.seeds["seed"]}
        save_flow_npz(d / "flow_forward.npz", clip.flow_forward, "forward", meta)
        save_flow_npz(d / "flow_backward.npz", clip.flow_backward, "backward", meta)
    _save_npz(d / "depth.npz", depth=clip.depth.astype(np.float16))
    _save_npz(d / "iuv.npz", parts=clip.parts, uv=clip.uv)
    _png_folder(d / "masks", clip.masks.astype(np.uint8) * 255, 5)
    _save_json(d / "beats.json", clip.beats_dict())
    _save_json(d / "camera.json", clip.camera.to_dict())
    write_text(d / "appearance.txt", clip.appearance_text + "\n")
    write_text(d / "motion.txt", clip.motion_text + "\n")
    _save_json(d / "meta.json", clip.meta_dict())


def write_edit_case(clips: dict, folder: str | os.PathLike) -> None:
    """Write one motion-editing case (`synth.edit.edit_clips`) into `folder`: source/, target/ and reference/ in
    the `clips` layout, and case.json."""
    from dancegen.synth.edit import ROLES, case_record

    d = Path(folder)
    for role in ROLES:
        write_clip_folder(clips[role], d / role)
    _save_json(d / "case.json", case_record(clips))


def render_edit_case(
    out_dir: str | os.PathLike,
    seed_a: int,
    seed_b: int,
    size: int | tuple[int, int] = 256,
    num_frames: int = 48,
    fps: float = 24.0,
    **kwargs,
) -> dict:
    """Render one motion-editing case and write it to the folder `out_dir` atomically (replacing an older one).

    Args:
        out_dir: The case folder (layout: `dancegen.synth.edit`).
        seed_a: Dancer, room and camera of source and target; motion of the source.
        seed_b: Motion (and music) of target and reference; dancer and room of the reference.
        size, num_frames, fps, **kwargs: As in `synth.edit.edit_clips` (motion, source_motion, camera_motion,
            bpm_range, flow).

    Returns:
        The case record written to `case.json`.
    """
    from dancegen.synth.edit import case_record, edit_clips

    clips = edit_clips(seed_a, seed_b, size, num_frames, fps, **kwargs)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        write_edit_case(clips, tmp)
    return case_record(clips)


def write_tiktok_folder(clip, folder: str | os.PathLike) -> None:
    """Write one clip in the TikTok/DisCo-like layout into `folder`."""
    d = Path(folder)
    _png_folder(d / "images", clip.frames, 4)
    _png_folder(d / "masks", clip.masks.astype(np.uint8) * 255, 4)
    _png_folder(d / "densepose", iuv_image(clip.parts, clip.uv), 4)
    _openpose(d / "openpose_json", clip)
    _save_json(d / "meta.json", clip.meta_dict())


def aist_names(index: int) -> dict:
    """AIST++-style names of clip `index`: genre, music id, dancer, sequence name (cAll) and video name (c01)."""
    g = AIST_GENRES[index % 10]
    k = (index // 10) % 6
    ch = index // 60 + 1
    dancer = 3 * (index % 10) + (index // 10) % 3 + 1
    situation = "sBM" if (index // 60) % 2 == 0 else "sFM"
    music = f"m{g[1:]}{k}"
    seq = f"{g}_{situation}_cAll_d{dancer:02d}_{music}_ch{ch:02d}"
    return {
        "genre": g,
        "music": music,
        "music_index": (index % 10) * 6 + k,
        "dancer": dancer,
        "seq": seq,
        "video": seq.replace("_cAll_", "_c01_"),
        "setting": f"setting{index + 1}",
    }


def _aist_cameras(clip, n_views: int = 9) -> tuple[list[dict], list[tuple]]:
    """Nine static cameras on a circle around the dancer; c01 is the clip's own (static) camera."""
    from scipy.spatial.transform import Rotation

    cam = clip.camera
    K, R0, t0 = cam.K[0], cam.R[0], cam.t[0]
    c0 = -R0.T @ t0
    pivot = clip.joints3d[:, 0].mean(0).astype(np.float64)
    pivot[1] = c0[1]
    out, mats = [], []
    for v in range(n_views):
        q = Rotation.from_euler("y", 40.0 * v, degrees=True).as_matrix()
        c = pivot + q @ (c0 - pivot)
        R = R0 @ q.T
        t = -R @ c
        mats.append((K, R, t))
        out.append(
            {
                "name": f"c{v + 1:02d}",
                "size": [clip.width, clip.height],
                "matrix": K.tolist(),
                "distortions": [0.0] * 5,
                "rotation": Rotation.from_matrix(R).as_rotvec().tolist(),
                "translation": (100.0 * t).tolist(),
            }
        )
    return out, mats


def write_aist_clip(clip, root: str | os.PathLike, names: dict) -> Path:
    """Write one clip into an AIST++-like tree; the keypoints3d file, written last, marks it finished."""
    root = Path(root)
    seq = names["seq"]
    wav = root / "wavs" / f"{names['music']}.wav"
    if not wav.exists():
        _audio(wav, clip)
    _video(root / "videos" / f"{names['video']}.mp4", clip)
    cams, mats = _aist_cameras(clip)
    _save_json(root / "cameras" / f"{names['setting']}.json", cams)
    k3d = coco17_3d(clip)
    views = [_project(k3d, K, R, t, clip.width, clip.height) for K, R, t in mats]
    views[0] = clip.keypoints[:, _COCO18_TO_17]  # the rendered view, with the face-visibility confidences
    kp2d = np.stack(views).astype(np.float32)
    n = clip.num_frames
    _save_pkl(
        root / "keypoints2d" / f"{seq}.pkl",
        {
            "keypoints2d": kp2d,
            "det_scores": kp2d[..., 2].mean(-1).astype(np.float32),
            "timestamps": np.round(np.arange(n) / clip.fps * 1e6).astype(np.int64),  # microseconds
        },
    )
    poses = np.zeros((n, 24, 3), np.float32)
    poses[:, :22] = clip.rotations
    _save_pkl(
        root / "motions" / f"{seq}.pkl",
        {
            "smpl_poses": poses.reshape(n, 72),
            "smpl_trans": (100.0 * clip.root).astype(np.float32),
            "smpl_scaling": np.array([100.0], np.float32),
        },
    )
    marker = root / "keypoints3d" / f"{seq}.pkl"
    k3d_cm = (100.0 * k3d).astype(np.float32)
    _save_pkl(marker, {"keypoints3d": k3d_cm, "keypoints3d_optim": k3d_cm})
    return marker


def coco17_3d(clip) -> np.ndarray:
    """`(F, 17, 3)` world COCO-17 joints of a clip in metres (face points on the head sphere)."""
    from dancegen.pose.skeletons import COCO17
    from dancegen.synth.body import J

    out = np.zeros((clip.num_frames, 17, 3))
    for i, name in enumerate(COCO17.joints):
        out[:, i] = clip.face3d[name] if name in clip.face3d else clip.joints3d[:, J[name]]
    return out


def _project(pts: np.ndarray, K, R, t, width: int, height: int) -> np.ndarray:
    """`(F, N, 3)` world points -> `(F, N, 3)` (x, y, 1) in pixels, 0, 0, 0 when off-image or behind the camera."""
    xc = pts @ R.T + t
    uvw = xc @ K.T
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = uvw[..., :2] / uvw[..., 2:3]
    ok = (
        (xc[..., 2] > 0.05)
        & (xy[..., 0] >= 0)
        & (xy[..., 0] <= width - 1)
        & (xy[..., 1] >= 0)
        & (xy[..., 1] <= height - 1)
    )
    out = np.zeros(pts.shape[:2] + (3,))
    out[..., :2] = np.where(ok[..., None], xy, 0)
    out[..., 2] = ok
    return out


# ---------------------------------------------------------------------------------------------- HumanML3D texts
_POS = {
    "a": "DET",
    "an": "DET",
    "the": "DET",
    "both": "DET",
    "his": "DET",
    "her": "DET",
    "their": "DET",
    "person": "NOUN",
    "dancer": "NOUN",
    "arm": "NOUN",
    "arms": "NOUN",
    "side": "NOUN",
    "someone": "PRON",
    "and": "CCONJ",
    "then": "ADV",
    "around": "ADV",
    "forward": "ADV",
    "again": "ADV",
    "to": "ADP",
    "from": "ADP",
    "left": "ADJ",
    "right": "ADJ",
}
_LEMMA = {
    "arms": "arm",
    "jumps": "jump",
    "spins": "spin",
    "waves": "wave",
    "raises": "raise",
    "claps": "clap",
    "kicks": "kick",
    "squats": "squat",
    "steps": "step",
    "bounces": "bounce",
    "turns": "turn",
    "walks": "walk",
    "dances": "dance",
}


def tag_tokens(caption: str) -> str:
    """HumanML3D-style `lemma/POS` tokens for a caption of the synthetic vocabulary (a tiny rule tagger)."""
    import re

    toks = []
    for w in re.findall(r"[a-z]+", caption.lower()):
        pos = "VERB" if w in _LEMMA and w not in ("arms",) else _POS.get(w, "NOUN")
        toks.append(f"{_LEMMA.get(w, w)}/{pos}")
    return " ".join(toks)


def humanml3d_captions(clip) -> list[str]:
    """Three captions of the clip's motion, each a HumanML3D line `caption#tokens#0.0#0.0`."""
    from dancegen.synth.motion import PRIMITIVES

    phrases = [PRIMITIVES[p] for p in clip.choreography.primitives]
    phrases = [p for i, p in enumerate(phrases) if i == 0 or p != phrases[i - 1]]
    caps = [clip.motion_text, "someone " + " and ".join(phrases), "the dancer " + " then ".join(phrases)]
    return [f"{c}#{tag_tokens(c)}#0.0#0.0" for c in caps]


def write_humanml3d_clip(clip, root: str | os.PathLike, name: str) -> Path:
    """Write `new_joints/<name>.npy` and `texts/<name>.txt` (the text, written last, marks the clip finished)."""
    root = Path(root)
    j = clip.joints3d.copy()
    j[..., 1] -= j[..., 1].min()  # HumanML3D motion_process: floor at y = 0
    _save_npy(root / "new_joints" / f"{name}.npy", j.astype(np.float32))
    marker = root / "texts" / f"{name}.txt"
    write_text(marker, "\n".join(humanml3d_captions(clip)) + "\n")
    return marker


# ----------------------------------------------------------------------------------------------------- generate
def _parse_shard(shard) -> tuple[int, int] | None:
    if shard is None or isinstance(shard, tuple):
        if shard is not None and (shard[1] < 1 or not 1 <= shard[0] <= shard[1]):
            raise InputError(f"shard K/N needs 1 <= K <= N, got {shard}")
        return shard
    from dancegen.io.batch import parse_shard

    return parse_shard(str(shard))


def _job_list(num_clips: int, layout: str, seed: int) -> list[dict]:
    jobs = []
    for i in range(num_clips):
        job = {"index": i, "seed": clip_seed(seed, i)}
        if layout == "clips":
            job["name"] = f"clip_{i:05d}"
        elif layout == "tiktok":
            job["name"] = f"{i + 1:05d}"
        elif layout == "edit":
            from dancegen.synth.edit import motion_seed_of_case

            job.update(name=f"case_{i:05d}", motion_seed=motion_seed_of_case(seed, i))
        elif layout == "aist":
            names = aist_names(i)
            job.update(
                name=names["seq"],
                aist=names,
                appearance_seed=int(
                    np.random.SeedSequence([int(seed), 10_000 + names["dancer"]]).generate_state(1)[0]
                ),
                music_seed=int(
                    np.random.SeedSequence([int(seed), 20_000 + names["music_index"]]).generate_state(1)[0]
                ),
            )
        else:
            job["name"] = f"{i:06d}"
        jobs.append(job)
    return jobs


def _remove_stale_clips(out: Path, previous: dict, keep: set[str]) -> list[str]:
    """`--overwrite` with fewer clips (or another layout): remove the clips the previous run in `out` wrote (its
    `synth.json` names layout, clip count and seed) that this run will not write. Only those clips' own folders
    (clips / TikTok layouts) or files named after them one level down (AIST++ / HumanML3D layouts) go."""
    import shutil

    try:
        old_jobs = _job_list(int(previous["num_clips"]), str(previous["layout"]), int(previous["seed"]))
    except (KeyError, TypeError, ValueError, InputError):
        return []  # a synth.json this version did not write: leave everything as it is
    stale = [j["name"] for j in old_jobs if j["name"] not in keep]
    for name in stale:
        if previous["layout"] in ("clips", "tiktok", "edit"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            continue
        for sub in [out, *(d for d in out.iterdir() if d.is_dir())]:
            for f in sub.glob(f"{name}.*"):
                if f.is_file():
                    f.unlink()
    return stale


def _marker(out: Path, layout: str, job: dict) -> Path:
    if layout in ("clips", "tiktok", "edit"):
        return out / job["name"]
    if layout == "aist":
        return out / "keypoints3d" / f"{job['name']}.pkl"
    return out / "texts" / f"{job['name']}.txt"


def _make_clip(args: tuple) -> dict:
    """Render and write one clip (runs in a worker process when `workers > 1`)."""
    from dancegen.synth.clip import render_clip

    out, layout, job, opts = args
    out = Path(out)
    t0 = time.process_time()
    if layout == "edit":
        render_edit_case(out / job["name"], job["seed"], job["motion_seed"], opts["size"], opts["num_frames"],
                         opts["fps"], motion=opts["motion"], camera_motion=opts["camera_motion"],
                         bpm_range=opts["bpm_range"], flow=opts["flow"])
        return {"name": job["name"], "frames": 3 * opts["num_frames"], "cpu_seconds": time.process_time() - t0}
    kw = dict(
        seed=job["seed"],
        size=opts["size"],
        num_frames=opts["num_frames"],
        fps=opts["fps"],
        motion_text=opts["motion"],
        bpm_range=opts["bpm_range"],
        camera_motion=opts["camera_motion"],
    )
    if layout == "aist":
        kw.update(appearance_seed=job["appearance_seed"], music_seed=job["music_seed"], camera_motion="static")
    if layout == "humanml3d":
        kw.update(
            fps=HUMANML3D_FPS, num_frames=int(round(opts["num_frames"] / opts["fps"] * HUMANML3D_FPS)), render=False
        )
    clip = render_clip(**kw, flow=opts["flow"] and layout == "clips")
    if layout in ("clips", "tiktok"):
        writer = write_clip_folder if layout == "clips" else write_tiktok_folder
        with atomic_dir(out / job["name"], overwrite=True) as tmp:
            writer(clip, tmp)
    elif layout == "aist":
        write_aist_clip(clip, out, job["aist"])
    else:
        write_humanml3d_clip(clip, out, job["name"])
    return {"name": job["name"], "frames": clip.num_frames, "cpu_seconds": time.process_time() - t0}


def _write_index_files(out: Path, layout: str, jobs: list[dict]) -> None:
    """Split lists and mappings over all clips of the run (same content from every shard)."""
    names = [j["name"] for j in jobs]
    if layout == "tiktok":
        write_text(
            out / "train.txt", "".join(f"{n}\n" for j, n in zip(jobs, names, strict=True) if j["index"] % 10 != 9)
        )
        write_text(
            out / "test.txt", "".join(f"{n}\n" for j, n in zip(jobs, names, strict=True) if j["index"] % 10 == 9)
        )
    elif layout == "aist":
        write_text(out / "cameras" / "mapping.txt", "".join(f"{j['name']} {j['aist']['setting']}\n" for j in jobs))
        split = {"train": [], "val": [], "test": []}
        for j in jobs:
            k = int(j["aist"]["music"][-1])
            split["test" if k == 5 else "val" if k == 4 else "train"].append(j["name"])
        for part, items in split.items():
            write_text(out / "splits" / f"crossmodal_{part}.txt", "".join(f"{n}\n" for n in items))
        write_text(out / "splits" / "all.txt", "".join(f"{n}\n" for n in names))
        if not (out / "ignore_list.txt").exists():
            write_text(out / "ignore_list.txt", "")
    elif layout == "humanml3d":
        write_text(out / "all.txt", "".join(f"{n}\n" for n in names))
        for part, r in (("train", range(0, 8)), ("val", (8,)), ("test", (9,))):
            write_text(out / f"{part}.txt", "".join(f"{j['name']}\n" for j in jobs if j["index"] % 10 in r))


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def generate(
    out_dir: str | os.PathLike,
    num_clips: int = 8,
    layout: str = "clips",
    seed: int = 0,
    size: int | tuple[int, int] = 256,
    seconds: float | None = None,
    num_frames: int | None = None,
    fps: float = 24.0,
    motion: str | None = None,
    workers: int = 1,
    overwrite: bool = False,
    shard: tuple[int, int] | str | None = None,
    progress: Callable[[int, int, str, str], None] | None = None,
    *,
    flow: bool = True,
    camera_motion: str | None = None,
    bpm_range: tuple[float, float] = (90.0, 150.0),
    only: list[int] | None = None,
) -> dict:
    """Render `num_clips` synthetic clips into `out_dir` in a dataset layout; resumable and shardable.

    Args:
        out_dir: Output root.
        num_clips: Clips (cases, for `edit`) in the whole run (a shard writes its share).
        layout: "clips", "tiktok", "aist", "humanml3d" or "edit" (see the module docstring).
        seed: Master seed; clip i uses `clip_seed(seed, i)`.
        size: `W` or `(W, H)` pixels.
        seconds: Clip length (default 4 s when `num_frames` is not given).
        num_frames: Clip length in frames (wins over `seconds`).
        fps: Frame rate (HumanML3D is always written at 20 fps).
        motion: Text motion for every clip (e.g. "a person jumps and spins"; `edit`: the edited motion B of every
            case); None: random beat-synced dances.
        workers: Processes rendering clips in parallel.
        overwrite: Re-render clips that are already finished.
        shard: `(k, n)` or "K/N", 1-based: this process writes clips k-1, k-1+n, ...
        progress: Called as `progress(i_done, total, name, status)` with status "done" or "skipped".
        flow: Write the dense flow files (clips and edit layouts; the largest files).
        camera_motion: Force "static", "pan", "zoom" or "shake" for every clip.
        bpm_range: Music tempo range.
        only: Render only these clip indices of the run (e.g. its held-out split: the same clips, the same split
            files, without rendering the training clips).

    Returns:
        Summary dict: layout, out_dir, total, done, skipped (names), frames, seconds (wall), cpu_seconds,
        frames_per_second.

    Raises:
        InputError: unknown layout, bad shard, or a motion text with no known motion.
    """
    from dancegen.synth.clip import _parse_size
    from dancegen.synth.motion import parse_motion_text

    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if num_clips < 0:
        raise InputError(f"num_clips must be >= 0, got {num_clips}")
    if motion is not None:
        parse_motion_text(motion)  # fail before any work
    if camera_motion is not None and camera_motion not in CAMERA_MOTIONS:
        raise InputError(f"unknown camera motion {camera_motion!r}; choose one of {', '.join(CAMERA_MOTIONS)}")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be a positive number, got {fps}")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise InputError(f"--seconds must be a positive number, got {seconds}")
    try:
        w, h = _parse_size(size)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not (MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE):
        raise InputError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} px per side, got {w}x{h}")
    if num_frames is None:
        num_frames = int(round((4.0 if seconds is None else seconds) * fps))
    if num_frames < 2:
        raise InputError(f"a clip needs at least 2 frames, got {num_frames} (--frames, or --seconds x --fps)")
    shard_t = _parse_shard(shard)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = _job_list(num_clips, layout, seed)
    mine = jobs if shard_t is None else jobs[shard_t[0] - 1 :: shard_t[1]]
    if only is not None:
        keep = {int(i) for i in only}
        mine = [j for j in mine if j["index"] in keep]
    opts = {
        "size": (w, h),
        "num_frames": num_frames,
        "fps": float(fps),
        "motion": motion,
        "flow": flow,
        "camera_motion": camera_motion,
        "bpm_range": tuple(bpm_range),
    }
    record = {"layout": layout, "num_clips": num_clips, "seed": seed, **opts}
    previous = _read_json(out / "synth.json")
    if previous is not None and not overwrite:
        # Finished clips are skipped on a rerun, so a rerun must ask for the same clips: never mix options.
        now = json.loads(json.dumps(record))
        changed = sorted(k for k in now if k != "num_clips" and previous.get(k) != now[k])
        if changed:
            raise InputError(f"folder holds clips made with other options ({', '.join(changed)}: "
                             f"{', '.join(repr(previous.get(k)) for k in changed)}); use another folder or --overwrite",
                             out)
    if previous is not None and overwrite:
        _remove_stale_clips(out, previous, {j["name"] for j in jobs})
    _save_json(out / "synth.json", record)

    todo, skipped = [], []
    for job in mine:
        if not overwrite and _marker(out, layout, job).exists():
            skipped.append(job["name"])
            if progress:
                progress(len(skipped), len(mine), job["name"], "skipped")
        else:
            todo.append(job)
    t0 = time.time()
    results = []
    args = [(str(out), layout, job, opts) for job in todo]
    if workers > 1 and len(args) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            max_workers=workers, mp_context=mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        ) as ex:
            for res in ex.map(_make_clip, args):
                results.append(res)
                if progress:
                    progress(len(skipped) + len(results), len(mine), res["name"], "done")
    else:
        for a in args:
            results.append(_make_clip(a))
            if progress:
                progress(len(skipped) + len(results), len(mine), results[-1]["name"], "done")
    _write_index_files(out, layout, jobs)
    wall = time.time() - t0
    frames = sum(r["frames"] for r in results)
    return {
        "layout": layout,
        "out_dir": str(out),
        "total": len(mine),
        "done": [r["name"] for r in results],
        "skipped": skipped,
        "frames": frames,
        "seconds": wall,
        "cpu_seconds": sum(r["cpu_seconds"] for r in results),
        "frames_per_second": frames / wall if wall > 0 and frames else 0.0,
    }
