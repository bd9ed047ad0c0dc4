"""Frame pairs of the synthetic world for the previous-frame module (spec §2.3 "Training data").

The paper pairs adjacent frames of 1162 real dance videos resampled to 24 fps as ``[current, next, caption(next)]``
(BLIP-2 captions). Here clips of `dancegen synth` (24 fps, static camera by default, `data.*` of the recipe) give the
frames; a frame's caption is its dancer's and room's description (the synthetic world knows it exactly, so no
captioner runs: `appearance_text, scene_text`). `render_pairs` renders the clips into arrays (cached in the run folder
by `ensure_pairs`); `FramePairDataset` serves ``{"latents" (next), "prev" (current: image in [0, 1] or latent),
"pose" (next frame's OpenPose map), "input_ids"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def render_pairs(data_cfg, progress=None) -> dict:
    """Clips ``0 .. num_clips-1`` of the synthetic world (master seed ``data.seed``) as arrays: frames
    ``(N, F, S, S, 3)`` uint8, OpenPose maps ``(N, F, S, S, 3)`` uint8, keypoints ``(N, F, 18, 3)``, captions ``(N,)``."""
    from dancegen.pose.render import render_control_maps
    from dancegen.pose.sequence import PoseSequence
    from dancegen.synth.clip import render_clip
    from dancegen.synth.layouts import clip_seed

    d = data_cfg
    frames, maps, kps, captions = [], [], [], []
    for i in range(d.num_clips):
        clip = render_clip(seed=clip_seed(d.seed, i), size=d.size, num_frames=d.num_frames, fps=d.fps,
                           camera_motion=d.camera, flow=False)
        k = clip.keypoints.astype(np.float32)
        frames.append(clip.frames)
        maps.append(render_control_maps(PoseSequence(k, width=d.size, height=d.size, fps=clip.fps)))
        kps.append(k)
        captions.append(f"{clip.appearance_text}, {clip.scene_text}")
        if progress is not None and ((i + 1) % 50 == 0 or i + 1 == d.num_clips):
            progress(f"rendered {i + 1}/{d.num_clips} clips")
    return {"frames": np.stack(frames), "pose_maps": np.stack(maps), "keypoints": np.stack(kps),
            "captions": np.array(captions)}


def ensure_pairs(folder: str | Path, data_cfg, progress=None) -> dict:
    """`render_pairs`, cached in ``folder/pairs.npz`` (reused when made with the same `data:` settings)."""
    from dancegen.io.atomic import load_keyed_npz, save_keyed_npz

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = json.dumps({k: v for k, v in vars(data_cfg).items() if k != "root"}, sort_keys=True)
    f = folder / "pairs.npz"
    cached = load_keyed_npz(f, key)
    if cached is not None:
        return cached
    arrays = render_pairs(data_cfg, progress)
    save_keyed_npz(f, key, arrays)
    return arrays


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    return x.movedim(-1, -3).contiguous()


@torch.no_grad()
def encode_frames(vae, frames: np.ndarray, batch: int = 128) -> torch.Tensor:
    """Scaled VAE latent means ``(N, C, h, w)`` of uint8 frames ``(N, H, W, 3)``."""
    from dancegen.core.latents import encode_images

    out = [encode_images(vae, to_unit(frames[s:s + batch]).to(vae.device, vae.dtype) * 2 - 1).float().cpu()
           for s in range(0, len(frames), batch)]
    return torch.cat(out)


class FramePairDataset(Dataset):
    """``[current, next, caption(next)]`` samples (see the module docstring).

    Args:
        latents: ``(N, F, C, h, w)`` scaled latents of every frame.
        frames: ``(N, F, S, S, 3)`` uint8 frames (the ``image`` condition) or None.
        pose_maps: ``(N, F, S, S, 3)`` uint8 OpenPose maps, or None (no pose ControlNet in training).
        caption_ids: ``(N, L)`` token ids of each clip's caption; empty_ids: ``(L,)`` of "".
        gap: frames between current and next; prompt_dropout: probability of the empty caption.
        condition: "image" (the current frame in [0, 1]) or "latent" (its latent).
    """

    def __init__(self, latents, frames, pose_maps, caption_ids, empty_ids, gap: int = 1, prompt_dropout: float = 0.0,
                 condition: str = "image"):
        self.latents, self.frames, self.pose_maps = latents, frames, pose_maps
        self.caption_ids, self.empty_ids = caption_ids, empty_ids
        self.gap, self.prompt_dropout, self.condition = int(gap), float(prompt_dropout), condition
        n, f = latents.shape[:2]
        self.index = [(c, k) for c in range(n) for k in range(f - self.gap)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        c, k = self.index[i]
        nxt = k + self.gap
        drop = self.prompt_dropout > 0 and float(torch.rand(())) < self.prompt_dropout
        item = {"latents": self.latents[c, nxt], "input_ids": self.empty_ids if drop else self.caption_ids[c],
                "prev": self.latents[c, k] if self.condition == "latent" else to_unit(self.frames[c, k])}
        if self.pose_maps is not None:
            item["pose"] = to_unit(self.pose_maps[c, nxt])
        return item
