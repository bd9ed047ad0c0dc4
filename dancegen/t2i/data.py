"""Training frames of the bundled text-to-image model: synthetic frames, captions, OpenPose maps and depth maps.

`render_frames` renders clips `first .. first + count - 1` of the world with master seed `seed` (every
`frame_step`-th frame of each) into arrays: frames `(N, S, S, 3)` uint8, COCO-18 keypoints `(N, 18, 3)`, OpenPose
maps `(N, S, S, 3)` uint8 (the controlnet_aux drawing, `pose.render.render_control_maps`), depth control images
`(N, S, S)` uint8 (`pose.depth.depth_control_image`, the person only), person masks `(N, S, S)` bool, the clip of
each frame, and per clip its caption variants and garment facts (`captions.caption_variants`). `ensure_frames`
caches them in a run folder (`data/frames.npz`, reused when made with the same settings).

`T2IDataset` serves training samples: the VAE latent of the frame (encoded once, `encode_latents`), one of its clip's
captions as token ids (picked with the global torch RNG, which the training loop's checkpoints restore), and the
control image of the recipe's ControlNet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

FACTS = ("top_colour", "bottom_colour", "top_pattern", "bottom_pattern", "bottom", "sleeves")


def render_frames(seed: int, first: int, count: int, size: int = 64, num_frames: int = 24, frame_step: int = 3,
                  captions_per_clip: int = 16, camera: str | None = None, depth_encoding: str = "inverse_norm",
                  progress=None) -> dict:
    """Render clips of the synthetic world into training / evaluation arrays (see the module docstring)."""
    from dancegen.pose.depth import depth_control_image
    from dancegen.pose.render import render_control_maps
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed
    from dancegen.t2i.captions import caption_variants

    out: dict[str, list] = {k: [] for k in ("frames", "keypoints", "pose_maps", "depth_maps", "masks", "clip")}
    captions, facts = [], []
    for k, i in enumerate(range(first, first + count)):
        s = clip_seed(seed, i)
        clip = render_clip(seed=s, size=size, num_frames=num_frames, camera_motion=camera, flow=False)
        keep = slice(None, None, frame_step)
        kps = clip.keypoints[keep].astype(np.float32)
        out["frames"].append(clip.frames[keep])
        out["keypoints"].append(kps)
        out["pose_maps"].append(render_control_maps(PoseSequence(kps, width=size, height=size, fps=clip.fps)))
        out["depth_maps"].append(depth_control_image(clip.depth[keep], clip.masks[keep], depth_encoding))
        out["masks"].append(clip.masks[keep])
        out["clip"].append(np.full(len(kps), k, np.int32))
        captions.append(caption_variants(clip.appearance, clip.scene, captions_per_clip, s))
        facts.append({f: getattr(clip.appearance, f) for f in FACTS} | {"text": clip.appearance_text})
        if progress:
            progress(k + 1, count)
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    arrays["captions"] = np.array(captions)
    arrays["facts"] = np.array(json.dumps(facts))
    return arrays


def ensure_frames(folder: str | Path, data_cfg, progress=None) -> dict:
    """`render_frames` for a recipe's `data:` block, cached in `folder/frames.npz`."""
    from dancegen.io.atomic import load_keyed_npz, save_keyed_npz

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = json.dumps(dict(vars(data_cfg)), sort_keys=True)
    f = folder / "frames.npz"
    cached = load_keyed_npz(f, key)
    if cached is not None:
        return cached
    cb = (lambda d, n: progress(f"render clips {d}/{n}") if d % 100 == 0 or d == n else None) if progress else None
    arrays = render_frames(data_cfg.seed, 0, data_cfg.num_clips, data_cfg.size, data_cfg.num_frames,
                           data_cfg.frame_step, data_cfg.captions_per_clip, data_cfg.camera, data_cfg.depth_encoding,
                           cb)
    save_keyed_npz(f, key, arrays)
    return arrays


def clip_facts(arrays: dict) -> list[dict]:
    """Per clip: garment colours, patterns and the full appearance text."""
    return json.loads(str(arrays["facts"]))


def to_unit(images: np.ndarray):
    """uint8 ``(N, H, W, 3)`` or ``(N, H, W)`` -> float ``(N, 3, H, W)`` in [0, 1] (grey images repeated)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    if x.ndim == 3:
        x = x[:, None].expand(-1, 3, -1, -1)
    else:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def encode_latents(vae, frames: np.ndarray, batch: int = 256):
    """Scaled VAE latent means ``(N, C, h, w)`` of uint8 frames ``(N, H, W, 3)``."""
    from dancegen.core.latents import encode_images

    out = []
    with torch.no_grad():
        for s in range(0, len(frames), batch):
            out.append(encode_images(vae, to_unit(frames[s:s + batch]) * 2 - 1).float())
    return torch.cat(out)


def ensure_latents(file: Path, vae, frames: np.ndarray, progress=None):
    """`encode_latents`, cached in `file` with a key of the frames' bytes and the autoencoder's weights (a run that
    changes either re-encodes instead of reusing stale latents)."""
    import hashlib

    from dancegen.io.atomic import atomic_path

    h = hashlib.sha1(np.ascontiguousarray(frames).data)
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    key = h.hexdigest()
    if file.is_file():
        cached = torch.load(file, weights_only=True)
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["latents"]
    if progress:
        progress("encoding the frames with the autoencoder")
    latents = encode_latents(vae, frames)
    with atomic_path(file) as tmp:
        torch.save({"key": key, "latents": latents}, tmp)
    return latents


def tokenize(tokenizer, texts: list[str]):
    """Token ids ``(N, L)`` padded to the tokenizer's length (SD's text encoding)."""
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


class T2IDataset(Dataset):
    """Samples ``{"latents", "input_ids"[, "control"][, "weights"]}`` for the shared training loop (see the module docstring).

    Args:
        latents: ``(N, C, h, w)`` scaled latents of the frames.
        caption_ids: ``(num_clips, K, L)`` token ids of each clip's caption variants.
        clip_index: ``(N,)`` clip of each frame.
        empty_ids: ``(L,)`` ids of the empty prompt.
        prompt_dropout: probability of the empty prompt (classifier-free guidance training).
        control: ``(N, S, S, 3)`` or ``(N, S, S)`` uint8 control images, or None.
        weights: ``(N, 1, h, w)`` per-latent-pixel loss weights, or None (uniform).
    """

    def __init__(self, latents, caption_ids, clip_index: np.ndarray, empty_ids, prompt_dropout: float,
                 control: np.ndarray | None = None, weights=None):
        self.latents, self.caption_ids, self.clip_index = latents, caption_ids, clip_index
        self.empty_ids, self.prompt_dropout, self.control = empty_ids, float(prompt_dropout), control
        self.weights = weights

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        variants = self.caption_ids[int(self.clip_index[i])]
        if float(torch.rand(())) < self.prompt_dropout:
            ids = self.empty_ids
        else:
            ids = variants[int(torch.randint(len(variants), ()))]
        item = {"latents": self.latents[i], "input_ids": ids}
        if self.weights is not None:
            item["weights"] = self.weights[i]
        if self.control is not None:
            item["control"] = to_unit(self.control[i:i + 1])[0]
        return item


class FrameDataset(Dataset):
    """Samples ``{"images"[, "weights"]}`` for the autoencoder stage: a frame ``(3, S, S)`` in [-1, 1] and its
    per-pixel loss weights ``(1, S, S)`` (``person_weights`` at the image's size), or no weights (uniform)."""

    def __init__(self, frames: np.ndarray, weights=None):
        self.frames, self.weights = frames, weights

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        item = {"images": to_unit(self.frames[i:i + 1])[0] * 2 - 1}
        if self.weights is not None:
            item["weights"] = self.weights[i]
        return item


def person_weights(masks: np.ndarray, latent_size: int, person_weight: float):
    """Loss weights ``(N, 1, h, w)``: ``1 + person_weight * (share of each latent pixel the person covers)``."""
    m = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    share = torch.nn.functional.adaptive_avg_pool2d(m, latent_size)
    return 1.0 + float(person_weight) * share
