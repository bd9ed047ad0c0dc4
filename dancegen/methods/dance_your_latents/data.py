"""Training clips in the TikTok / DisCo layout for Dance-Your-Latents (spec §1, §3; DisCo's TikTok preprocessing).

Expected layout (HDNet's TikTok release plus OpenPose JSON; exactly what `dancegen synth --layout tiktok` writes)::

    <root>/train.txt, test.txt         one video folder name per line (optional: else every sub-folder)
    <root>/<video>/images/0000.png     RGB frames (natural sort order; any common image suffix)
    <root>/<video>/masks/0000.png      person masks, white = person (same names or same order as images/)
    <root>/<video>/openpose_json/      OpenPose JSON per frame (COCO-18 / BODY_25); for real videos run
                                       `dancegen extract-pose <video>/images -o <video>/pose --no-masks` and set
                                       data.pose_dir to pose/openpose_json
    <root>/<video>/densepose/0000.png  DensePose IUV renders (only for flow.source raft, raft_input densepose)

A sample is `num_frames` frames `stride` apart. Following DisCo, the reference is the video's first frame, split
with its mask into the foreground (person on black) for the CLIP context and the background (person blacked out)
for the background ControlNet. Frames are resized to `resolution` (aspect not kept, DisCo's 256x256 choice).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dancegen.errors import InputError
from dancegen.pose.render import render_control_maps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_videos(root: str | os.PathLike, split: str | None, image_dir: str = "images") -> list[Path]:
    """Video folders of a split: `<root>/<split>.txt` when present, else every folder with an `image_dir`.

    Raises:
        InputError: the root is missing, a listed folder is missing, or nothing is found.
    """
    from dancegen.io.video import natural_key

    root = Path(root)
    if not root.is_dir():
        raise InputError("dataset root not found", root)
    listing = root / f"{split}.txt" if split else None
    if listing is not None and listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        videos = [root / n for n in names]
        missing = [v for v in videos if not (v / image_dir).is_dir()]
        if missing:
            raise InputError(f"{len(missing)} video folder(s) listed in {listing.name} have no {image_dir}/, e.g. "
                             f"{missing[0].name}", root)
    else:
        videos = sorted((p for p in root.iterdir() if (p / image_dir).is_dir()), key=lambda p: natural_key(p.name))
    if not videos:
        raise InputError(f"no video folders with {image_dir}/ found", root)
    return videos


def _images(folder: Path) -> list[Path]:
    from dancegen.io.video import natural_key

    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: natural_key(p.name))


def read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """`(H, W, 3)` uint8 RGB resized to `size = (H, W)` (area interpolation)."""
    import cv2

    from dancegen.io.video import read_image

    img = read_image(path)
    if img.shape[:2] != tuple(size):
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return img


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """`(H, W)` bool person mask (any channel > 127) at `size = (H, W)`."""
    import cv2

    from dancegen.io.video import read_image

    m = read_image(path).max(-1)
    if m.shape != tuple(size):
        m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127


def split_reference(image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """DisCo's reference split: foreground = person on black, background = the frame with the person blacked out.

    Args:
        image: `(H, W, 3)` uint8.
        mask: `(H, W)` bool (True = person), or None (no mask: both are the whole image).

    Returns:
        `(foreground, background)`, both `(H, W, 3)` uint8.
    """
    if mask is None:
        return image, image
    m = mask[..., None].astype(image.dtype)
    return image * m, image * (1 - m)


def to_model_range(img: np.ndarray) -> np.ndarray:
    """uint8 `(..., H, W, 3)` -> float32 `(..., 3, H, W)` in [-1, 1]."""
    x = img.astype(np.float32) / 127.5 - 1.0
    return np.moveaxis(x, -1, -3)


class TikTokClips(Dataset):
    """Map-style torch dataset of training clips.

    Args:
        root: dataset root (see the module docstring).
        split: split list name ("train" reads train.txt); None: all folders.
        num_frames / stride: clip length and frame step.
        resolution: `(H, W)` of the model input.
        reference: "first_frame" (the video's first frame, DisCo), "clip_first" or "random" (a random frame of the
            video, seeded per sample index).
        image_dir / mask_dir / pose_dir / densepose_dir: sub-folder names inside each video folder.
        flow: None, or a dict with `s_f`, `shift`, `latent_hw`, `source`, `raft_input`, `raft_weights`, `raft_iters`,
            `downsample` to add MF flows (`flows.reference_flows`) to every sample.

    Each item is a dict:
        frames `(3, F, H, W)` float32 in [-1, 1]; pose_maps `(3, F, H, W)` float32 in [0, 1] (ControlNet
        convention); reference `(3, H, W)` foreground in [-1, 1]; background `(3, H, W)` in [-1, 1];
        masks `(1, F, H, W)` float32 {0, 1}; keypoints `(F, 18, 3)` float32 (pixels of `resolution`);
        flows `{offset: (F, 2, h, w)}` when `flow` is set; index (int).
    """

    def __init__(self, root, split: str | None = "train", num_frames: int = 16, stride: int = 1,
                 resolution: tuple[int, int] = (256, 256), reference: str = "first_frame", image_dir: str = "images",
                 mask_dir: str = "masks", pose_dir: str = "openpose_json", densepose_dir: str = "densepose",
                 flow: dict | None = None):
        from dancegen.pose.openpose_json import read_openpose_folder

        self.num_frames, self.stride = int(num_frames), int(stride)
        self.size = (int(resolution[0]), int(resolution[1]))
        self.reference, self.flow = reference, flow
        self.mask_dir, self.densepose_dir = mask_dir, densepose_dir
        span = (self.num_frames - 1) * self.stride + 1
        self.videos: list[dict] = []
        self.index: list[tuple[int, int]] = []
        for v in list_videos(root, split, image_dir):
            frames = _images(v / image_dir)
            if len(frames) < span:
                continue
            if not (v / pose_dir).is_dir():
                raise InputError(f"no {pose_dir}/ poses; run `dancegen extract-pose` on the frames first", v)
            h0, w0 = _image_size(frames[0])
            poses = read_openpose_folder(v / pose_dir, width=w0, height=h0)
            if poses.num_frames < len(frames):
                raise InputError(f"{pose_dir}/ has {poses.num_frames} frames but {image_dir}/ has {len(frames)}", v)
            masks = _images(v / mask_dir) if (v / mask_dir).is_dir() else []
            if masks and len(masks) < len(frames):
                raise InputError(f"{mask_dir}/ has {len(masks)} masks for {len(frames)} frames", v)
            self.videos.append({"dir": v, "frames": frames, "masks": masks,
                                "poses": poses.resized(self.size[1], self.size[0])})
            vi = len(self.videos) - 1
            self.index.extend((vi, s) for s in range(len(frames) - span + 1))
        if not self.index:
            raise InputError(f"no video with at least {span} frames (num_frames {num_frames}, stride {stride})", root)

    def __len__(self) -> int:
        return len(self.index)

    def _ref_frame(self, video: dict, start: int, i: int) -> int:
        if self.reference == "first_frame":
            return 0
        if self.reference == "clip_first":
            return start
        return int(np.random.default_rng(i).integers(len(video["frames"])))

    def __getitem__(self, i: int) -> dict:
        vi, start = self.index[i]
        video = self.videos[vi]
        ids = list(range(start, start + self.num_frames * self.stride, self.stride))
        frames = np.stack([read_rgb(video["frames"][k], self.size) for k in ids])
        if video["masks"]:
            masks = np.stack([read_mask(video["masks"][k], self.size) for k in ids])
        else:
            masks = np.ones((len(ids), *self.size), bool)
        r = self._ref_frame(video, start, i)
        ref_img = read_rgb(video["frames"][r], self.size)
        ref_mask = read_mask(video["masks"][r], self.size) if video["masks"] else None
        fg, bg = split_reference(ref_img, ref_mask)
        seq = video["poses"][ids]
        maps = render_control_maps(seq)
        item = {
            "frames": torch.from_numpy(np.ascontiguousarray(np.moveaxis(to_model_range(frames), 0, 1))),
            "pose_maps": torch.from_numpy(np.ascontiguousarray(np.moveaxis(maps, -1, 0))).float() / 255.0,
            "reference": torch.from_numpy(to_model_range(fg)),
            "background": torch.from_numpy(to_model_range(bg)),
            "masks": torch.from_numpy(masks[None].astype(np.float32)),
            "keypoints": torch.from_numpy(seq.keypoints.astype(np.float32)),
            "index": i,
        }
        if self.flow is not None:
            item["flows"] = self._flows(video, ids, seq, maps)
        return item

    def _flows(self, video: dict, ids: list[int], seq, maps: np.ndarray) -> dict:
        from dancegen.methods.dance_your_latents.flows import reference_flows

        fl = self.flow
        images = None
        if fl.get("source") == "raft":
            dp = video["dir"] / self.densepose_dir
            if fl.get("raft_input") == "densepose" and dp.is_dir():
                files = _images(dp)
                images = np.stack([read_rgb(files[k], self.size) for k in ids])
            else:
                images = maps
        return reference_flows(seq, fl["s_f"], fl["shift"], tuple(fl["latent_hw"]), source=fl.get("source", "pose"),
                               images=images, raft_weights=fl.get("raft_weights"), raft_iters=fl.get("raft_iters", 12),
                               downsample=fl.get("downsample", "area"))


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def dataset_from_config(cfg, split: str | None = None, latent_hw: tuple[int, int] | None = None) -> TikTokClips:
    """The training dataset of a `DanceYourLatentsConfig` (flows added for the MF variant)."""
    d, m, f = cfg.data, cfg.model, cfg.flow
    flow = None
    if m.uses_flow:
        if latent_hw is None:
            raise ValueError("the MF variant needs latent_hw for its flows")
        flow = {"s_f": int(m.subspace_size[0]), "shift": m.shift, "latent_hw": latent_hw, "source": f.source,
                "raft_input": f.raft_input, "raft_weights": f.raft_weights, "raft_iters": f.raft_iters,
                "downsample": f.downsample}
    return TikTokClips(d.root, split if split is not None else d.split, d.num_frames, d.stride,
                       tuple(d.resolution), d.reference, d.image_dir, d.mask_dir, d.pose_dir, d.densepose_dir, flow)


def ensure_synth_data(cfg, progress=None) -> dict | None:
    """Render the synthetic TikTok-layout data of a recipe (`data.synth`); finished clips are skipped (resumable)."""
    s = cfg.data.synth
    root = Path(cfg.data.root)
    if s.num_clips <= 0:
        return None
    from dancegen.synth import generate

    return generate(root, num_clips=s.num_clips, layout="tiktok", seed=s.seed, size=s.size, num_frames=s.num_frames,
                    fps=s.fps, camera_motion=s.camera, flow=False, progress=progress)
