"""The one-shot case of Edit-Your-Motion: source frames, person masks, source skeletons and prompt (spec §2.7, §6).

`prepare_case` reads the source (a video, a frame folder, or one photo repeated ``data.repeat`` times), takes
``num_frames`` frames from ``start`` every ``frame_stride``, centre-crops them to a square and resizes them to
``data.resolution``; the skeletons (given as OpenPose JSON / .npz, else estimated with ``data.pose_backend``) and the
masks (given PNGs, a person segmenter, or drawn from the skeleton) go through the same crop and resize. Masking is
``v^m = v * m`` in [0, 1] pixels, so the background becomes black (spec §2.7 choice).

`CaseDataset` is the training set of one item: the clip's VAE latents (whole and masked), the rendered skeleton
images and the prompt embedding, computed once with the frozen VAE / text encoder (latent means: the frozen encoder
gives the same latent every step, and the diffusion noise is drawn per step by the loss).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from dancegen.errors import InputError
from dancegen.methods.edit_your_motion.config import EditYourMotionConfig


def _crop_box(h: int, w: int) -> tuple[int, int, int]:
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side


def _square(frames: np.ndarray, size: int, resample: int) -> np.ndarray:
    from PIL import Image

    y0, x0, side = _crop_box(*frames.shape[1:3])
    out = [np.asarray(Image.fromarray(f[y0:y0 + side, x0:x0 + side]).resize((size, size), resample)) for f in frames]
    return np.stack(out)


def source_frames(cfg: EditYourMotionConfig) -> tuple[np.ndarray, float]:
    """The source frames the case uses at their original size ``(F, H, W, 3)`` uint8, and their fps."""
    from dancegen.io.video import is_image_path, read_image, read_video

    d = cfg.data
    if d.source is None:
        raise InputError("finetune-oneshot needs --source (a video, a frame folder or a photo)")
    src = Path(d.source)
    if not src.exists():
        raise InputError("source not found", src)
    if is_image_path(src):
        img = read_image(src)
        frames, fps = np.repeat(img[None], int(d.repeat or d.num_frames), axis=0), 8.0
    else:
        video = read_video(src, max_frames=d.start + d.num_frames * d.frame_stride)
        frames, fps = video.frames, float(video.fps)
    idx = np.arange(d.start, len(frames), d.frame_stride)[: (d.repeat or d.num_frames) if is_image_path(src)
                                                            else d.num_frames]
    if len(idx) < (1 if is_image_path(src) else d.num_frames):
        raise InputError(f"the source has {len(frames)} frames: from frame {d.start} every {d.frame_stride} it gives "
                         f"{len(idx)}, fewer than data.num_frames={d.num_frames}", src)
    return frames[idx], fps / d.frame_stride


def _crop_poses(seq, orig_hw: tuple[int, int], size: int):
    """A pose sequence in original pixels -> the square crop resized to ``size``."""
    y0, x0, side = _crop_box(*orig_hw)
    if (seq.height, seq.width) != tuple(orig_hw):
        seq = seq.resized(orig_hw[1], orig_hw[0])
    k = seq.keypoints.copy()
    s = size / side
    k[..., 0] = (k[..., 0] - x0) * s
    k[..., 1] = (k[..., 1] - y0) * s
    return seq.replace(keypoints=k.astype(np.float32), width=size, height=size, hands=None, face=None)


def source_poses(cfg: EditYourMotionConfig, frames: np.ndarray, fps: float, orig_hw: tuple[int, int], say):
    """The source skeletons (COCO-18) in the cropped frames' pixels: read from ``data.poses`` or estimated."""
    from dancegen.pose.convert import convert

    d = cfg.data
    if d.poses is not None:
        from dancegen.pose.openpose_json import read_pose_input

        p = Path(d.poses)
        if not p.exists():
            raise InputError("source poses not found", p)
        seq = read_pose_input(p)
        idx = np.arange(d.start, len(seq), d.frame_stride)[: len(frames)]
        if len(idx) == 1 and len(frames) > 1:  # one photo's pose, repeated with the photo
            idx = np.zeros(len(frames), dtype=int)
        if len(idx) < len(frames):
            raise InputError(f"the source poses have {len(seq)} frames, fewer than the {len(frames)} source frames", p)
        seq = _crop_poses(seq[list(idx)], orig_hw, d.resolution)
    else:
        from dancegen.pose.extract import estimate_poses

        say(f"estimating the source skeletons ({d.pose_backend})")
        seq = estimate_poses(frames, backend=d.pose_backend, fps=fps)
    seq = convert(seq, "coco18") if seq.format != "coco18" else seq
    if not (seq.conf > d.conf).any(axis=1).all():
        bad = int(np.flatnonzero(~(seq.conf > d.conf).any(axis=1))[0])
        raise InputError(f"no confident skeleton in source frame {bad}: pass --source-poses", d.source)
    return seq.replace(fps=fps)


def source_masks(cfg: EditYourMotionConfig, frames: np.ndarray, poses, orig_hw: tuple[int, int], say,
                 full: np.ndarray) -> np.ndarray:
    """``(F, S, S)`` bool person masks (spec Eq. 10); ``full``: the source frames at their original size (`auto`
    segments them)."""
    from PIL import Image

    from dancegen.pose.masks import pose_masks

    d = cfg.data
    if d.masks == "none":
        return np.ones(frames.shape[:3], dtype=bool)
    if d.masks == "given":
        if not d.masks_path:
            raise InputError("data.masks is given but no mask folder is named (--masks DIR)")
        from dancegen.io.video import read_image

        folder = Path(d.masks_path)
        files = sorted(p for p in folder.glob("*.png")) if folder.is_dir() else []
        idx = np.arange(d.start, len(files), d.frame_stride)[: len(frames)]
        if len(idx) < len(frames):
            raise InputError(f"{len(files)} PNG masks, fewer than the {len(frames)} source frames need", folder)
        raw = np.stack([read_image(files[i]).max(-1) for i in idx])
        if raw.shape[1:] != tuple(orig_hw):
            raise InputError(f"masks are {raw.shape[2]}x{raw.shape[1]}, the source {orig_hw[1]}x{orig_hw[0]}", folder)
        sq = _square(np.repeat(raw[..., None], 3, -1), d.resolution, Image.BILINEAR)[..., 0]
        return sq > int(255 * d.mask_threshold)
    drawn = pose_masks(poses, threshold=d.conf)
    if d.masks == "auto":
        return auto_masks(cfg, drawn, say, full)
    return drawn


def auto_masks(cfg: EditYourMotionConfig, drawn: np.ndarray, say, full: np.ndarray) -> np.ndarray:
    """Person masks by the pose backend's segmentation of the source frames at their original size (a small dancer
    in the resized frames is easily missed), squared and resized like the frames; a frame where nobody is found keeps
    its skeleton's drawn mask (``drawn``), and without the segmentation model every frame does (said in one line)."""
    from PIL import Image

    from dancegen.errors import MissingWeightsError
    from dancegen.pose.extract import person_mask

    out, missed = drawn.copy(), []
    for t, frame in enumerate(full):
        try:
            m = person_mask(frame, threshold=cfg.data.mask_threshold)
        except InputError:
            missed.append(t)
            continue
        except (MissingWeightsError, ImportError) as err:
            say(f"person segmentation unavailable ({str(err).splitlines()[0]}); masks drawn from the skeletons")
            return drawn
        sq = _square(np.repeat((m * 255).astype(np.uint8)[None, ..., None], 3, -1), cfg.data.resolution,
                     Image.BILINEAR)[0, ..., 0]
        out[t] = sq > 127
    if missed:
        say(f"the segmentation found nobody in source frame(s) {missed}; their masks are drawn from the skeletons")
    return out


def prepare_case(cfg: EditYourMotionConfig, say=lambda m: None) -> dict:
    """The case arrays stored in the model folder (``case.npz``): frames, masks, keypoints, prompt, fps."""
    from PIL import Image

    full, fps = source_frames(cfg)  # original size: the auto masks segment these
    frames, orig = _square(full, cfg.data.resolution, Image.BICUBIC), full.shape[1:3]
    poses = source_poses(cfg, frames, fps, orig, say)
    masks = source_masks(cfg, frames, poses, orig, say, full)
    return {"frames": frames, "masks": masks.astype(bool), "keypoints": poses.keypoints.astype(np.float32),
            "prompt": np.array(cfg.data.prompt), "fps": np.array(float(fps))}


def pose_sequence(keypoints: np.ndarray, size: int, fps: float = 8.0):
    from dancegen.pose.sequence import PoseSequence

    return PoseSequence(np.asarray(keypoints, dtype=np.float32), format="coco18", width=size, height=size, fps=fps)


def pose_images(keypoints: np.ndarray, size: int):
    """``(1, 3, F, S, S)`` float skeleton images in [0, 1] (the ControlNets' drawing, `render_control_maps`)."""
    import torch

    from dancegen.pose.render import render_control_maps

    maps = render_control_maps(pose_sequence(keypoints, size))
    return torch.from_numpy(maps).float().div(255.0).permute(3, 0, 1, 2)[None]


def frames_to_tensor(frames: np.ndarray, masks: np.ndarray | None = None):
    """``(F, S, S, 3)`` uint8 (times the masks in [0, 1] pixel space) -> ``(1, 3, F, S, S)`` in [-1, 1]."""
    import torch

    x = torch.from_numpy(frames).float().div(255.0)
    if masks is not None:
        x = x * torch.from_numpy(masks.astype(np.float32))[..., None]
    return (x * 2 - 1).permute(3, 0, 1, 2)[None]


class CaseDataset(Dataset):
    """One training item: ``latents`` / ``masked_latents`` (C, F, h, w), ``pose_images`` (3, F, S, S), ``context``
    (L, D)."""

    def __init__(self, model, case: dict):
        import torch

        from dancegen.core.latents import encode_video

        size = case["frames"].shape[1]
        with torch.no_grad():
            p = next(model.vae.parameters())
            self.item = {
                "latents": encode_video(model.vae, frames_to_tensor(case["frames"]).to(p))[0].float(),
                "masked_latents": encode_video(model.vae, frames_to_tensor(case["frames"], case["masks"]).to(p),
                                               )[0].float(),
                "pose_images": pose_images(case["keypoints"], size)[0],
                "context": encode_prompt(model, str(case["prompt"]))[0].float(),
            }

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        return self.item


def encode_prompt(model, prompt: str):
    from dancegen.core.text import PromptEncoder

    return PromptEncoder(model.text_encoder, model.tokenizer).encode(prompt, guidance=False).cond
