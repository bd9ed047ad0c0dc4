"""SynthPose: a tiny heatmap pose estimator trained by this project on the synthetic dance world (`dancegen synth`).

Why it exists: the bundled video models generate 64 px toy dancers, too small and too blurry for BlazePose (it finds
them in a few percent of frames), so their pose error could not be measured. SynthPose is trained on exactly that
world (64 px renders, with blur / noise / colour augmentations that cover what the toy models produce) and gives the
18 COCO keypoints of one dancer per frame. It is a measuring instrument for synthetic clips and the models trained on
them, not a general human pose estimator: on real photos use BlazePose or DWPose.

Network (SimpleBaseline-style heatmaps, Xiao et al. 2018, on a small U-Net): the frame is letterboxed to
`input_size` (64) and goes through conv blocks at 1, 1/2, 1/4 and 1/8 of that size (GroupNorm + SiLU), back up to
1/`stride` with skip connections, and a 1x1 head gives one heatmap per joint. The training target is a Gaussian of
`sigma` heatmap pixels at the joint, an all-zero map for a joint the renderer marks hidden (e.g. the far ear), so a
map's peak is the joint's confidence. Decoding: the peak, refined to sub-pixel by the centre of mass of the positive
values in a 5x5 window around it (an integral-regression style refinement), mapped back through the letterbox.

Known limit: hidden joints are trained to an all-zero map, but the only joints the renderer hides are face points
turned away from the camera (the far ear in about 13 % of training frames), and the network does not learn to tell:
it reports a hidden ear with the confidence of a visible one. Score against ground truth's visible joints (as
`dancegen.metrics.pose_metrics.keypoint_scores` does) rather than trusting its confidences.

Model folder: `config.json` (`SynthPoseConfig` fields) + `model.safetensors`. The bundled one is
`dancegen/assets/models/synthpose-tiny`, retrained by `recipes/pose/synthpose_tiny.yaml` (see
`dancegen.pose.synthpose_train`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dancegen.errors import InputError, MissingWeightsError
from dancegen.runtime import BUNDLED_ROOT

BUNDLED_NAME = "synthpose-tiny"
BUNDLED_DIR = BUNDLED_ROOT / BUNDLED_NAME
#: COCO-18 joint permutation of a horizontal flip (left <-> right).
FLIP_PERM = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
NUM_JOINTS = 18
REFINE_RADIUS = 2  # 5x5 window


@dataclass
class SynthPoseConfig:
    """Architecture of a SynthPose network (stored as the model folder's config.json).

    Attributes:
        input_size: frames are letterboxed to this square size.
        channels: widths of the encoder levels (full, 1/2, 1/4, 1/8 resolution, ...).
        stride: heatmaps are `input_size / stride` pixels (a power of two below 2 ** (len(channels) - 1)).
        sigma: Gaussian width of the training target, in heatmap pixels.
        num_joints: 18 (COCO-18, OpenPose order).
    """

    input_size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 96])
    stride: int = 2
    sigma: float = 1.0
    num_joints: int = NUM_JOINTS

    def __post_init__(self):
        levels = len(self.channels)
        if levels < 2 or self.stride < 1 or self.stride & (self.stride - 1) or self.stride >= 2 ** (levels - 1):
            raise ValueError(f"stride {self.stride} must be a power of two below 2 ** (len(channels) - 1) "
                             f"= {2 ** (levels - 1)}")
        if self.input_size % 2 ** (levels - 1):
            raise ValueError(f"input_size {self.input_size} must divide by 2 ** (len(channels) - 1)")

    @property
    def heatmap_size(self) -> int:
        return self.input_size // self.stride


def require_synthpose(model: str | os.PathLike | None = None) -> Path:
    """The SynthPose model folder `model` (None: the bundled one), or MissingWeightsError saying how to retrain it."""
    folder = Path(model) if model is not None else BUNDLED_DIR
    if not ((folder / "config.json").is_file() and (folder / "model.safetensors").is_file()):
        where = "the bundled model" if model is None else str(folder)
        raise MissingWeightsError(
            f"SynthPose model not found ({where}: needs config.json and model.safetensors); retrain it with "
            f"`dancegen train --recipe recipes/pose/synthpose_tiny.yaml` and "
            f"`python -m dancegen.core.bundle runs/synthpose_tiny/model {BUNDLED_NAME}`")
    return folder


def build_network(cfg: SynthPoseConfig):
    """The torch module for `cfg` (randomly initialised): `(B, 3, S, S)` in [-1, 1] -> `(B, J, S / stride, ...)`."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, down: bool) -> nn.Sequential:
        groups = 8 if cout % 8 == 0 else 1
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        )

    class SynthPoseNet(nn.Module):
        def __init__(self):
            super().__init__()
            ch = list(cfg.channels)
            self.down = nn.ModuleList([block(3, ch[0], False)] +
                                      [block(ch[i - 1], ch[i], True) for i in range(1, len(ch))])
            # decoder: from the deepest level up to 1/stride, concatenating the encoder's features at each level
            n_up = len(ch) - 1 - int(np.log2(cfg.stride))
            self.up = nn.ModuleList()
            cin = ch[-1]
            for k in range(n_up):
                skip = ch[len(ch) - 2 - k]
                self.up.append(block(cin + skip, skip, False))
                cin = skip
            self.head = nn.Conv2d(cin, cfg.num_joints, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = []
            for b in self.down:
                x = b(x)
                feats.append(x)
            for k, b in enumerate(self.up):
                skip = feats[len(feats) - 2 - k]
                x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
                x = b(torch.cat([x, skip], 1))
            return self.head(x)

    return SynthPoseNet()


def gaussian_targets(xy: np.ndarray, visible: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Training heatmaps `(B, J, size, size)` float32: a unit-peak Gaussian at each visible joint (`xy` in heatmap
    pixels, pixel centres at integers), zeros for hidden joints."""
    g = np.arange(size, dtype=np.float32)
    dx = g[None, None, None, :] - xy[..., 0, None, None]
    dy = g[None, None, :, None] - xy[..., 1, None, None]
    maps = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)).astype(np.float32)
    return maps * visible[..., None, None].astype(np.float32)


def decode_heatmaps(maps: np.ndarray, radius: int = REFINE_RADIUS) -> np.ndarray:
    """`(B, J, h, w)` heatmaps -> `(B, J, 3)` (x, y in heatmap pixels, confidence = the peak value clipped to [0, 1]).

    The integer argmax is refined by the centre of mass of the positive heatmap values in a
    `(2 radius + 1)` square window around it, so a Gaussian peak between pixel centres is found to a fraction of a
    pixel (within 0.05 heatmap pixels for a sigma-1 Gaussian away from the border)."""
    b, j, h, w = maps.shape
    py, px = np.divmod(maps.reshape(b, j, -1).argmax(-1), w)
    pad = np.pad(maps, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
    offs = np.arange(2 * radius + 1)
    # (b, j, k, k) windows centred on each peak (indices shifted by the padding)
    win = pad[np.arange(b)[:, None, None, None], np.arange(j)[None, :, None, None],
              py[..., None, None] + offs[:, None], px[..., None, None] + offs[None, :]]
    win = np.clip(win, 0, None)
    mass = win.sum((-2, -1))
    safe = np.where(mass > 0, mass, 1.0)
    d = (offs - radius).astype(np.float32)
    out = np.zeros((b, j, 3), np.float32)
    out[..., 0] = px + np.where(mass > 0, (win.sum(-2) * d).sum(-1) / safe, 0.0)
    out[..., 1] = py + np.where(mass > 0, (win.sum(-1) * d).sum(-1) / safe, 0.0)
    out[..., 2] = np.clip(np.take_along_axis(maps.reshape(b, j, -1), (py * w + px)[..., None], -1)[..., 0], 0, 1)
    return out


def letterbox(frames: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize `(F, H, W, 3)` uint8 frames to fit a `size` square (aspect kept, centred, edge colour padding).

    Returns (boxed frames, scale, pad_x, pad_y): a point (x, y) of the boxed frame is ((x - pad_x + 0.5) / scale - 0.5,
    (y - pad_y + 0.5) / scale - 0.5) in the source (pixel centres at integers)."""
    import cv2

    f, h, w = frames.shape[:3]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    px, py = (size - nw) / 2, (size - nh) / 2
    out = np.empty((f, size, size, 3), np.uint8)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i, fr in enumerate(frames):
        r = fr if (nw, nh) == (w, h) else cv2.resize(fr, (nw, nh), interpolation=interp)
        top, left = int(np.floor(py)), int(np.floor(px))
        out[i] = cv2.copyMakeBorder(r, top, size - nh - top, left, size - nw - left, cv2.BORDER_REPLICATE)
    return out, scale, float(np.floor(px)), float(np.floor(py))


def to_input(frames: np.ndarray):
    """`(B, S, S, 3)` uint8 -> `(B, 3, S, S)` float32 tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class SynthPoseEstimator:
    """A SynthPose network ready to use: `estimator(frames)` -> `(F, 18, 3)` COCO-18 keypoints in the frames' pixels.

    Build it with `SynthPoseEstimator.load(folder)` (None: the bundled `synthpose-tiny`), or around a live network.

    Args:
        net, config: the network (`build_network(config)`) and its config.
        device: torch device of `net`.
        batch_size: frames per forward pass.
        min_confidence: joints whose heatmap peak is below this get (0, 0, 0) (OpenPose's "missing"); None keeps
            every joint's location, with the peak as its confidence (for scoring against known visible joints).
    """

    def __init__(self, net, config: SynthPoseConfig, device: str = "cpu", batch_size: int = 64,
                 min_confidence: float | None = 0.1):
        self.net, self.config = net, config
        self.device, self.batch_size, self.min_confidence = device, batch_size, min_confidence

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, device: str = "cpu", **kwargs) -> SynthPoseEstimator:
        """Load a model folder (config.json + model.safetensors); None loads the bundled one."""
        from safetensors.torch import load_file

        folder = require_synthpose(model)
        cfg_file = folder / "config.json"
        try:
            config = SynthPoseConfig(**json.loads(cfg_file.read_text()))
        except (TypeError, ValueError) as e:
            raise InputError(f"not a SynthPose config ({e})", cfg_file) from None
        net = build_network(config)
        net.load_state_dict({k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()})
        return cls(net.eval().to(device), config, device, **kwargs)

    def heatmaps(self, boxed: np.ndarray) -> np.ndarray:
        """Raw heatmaps `(F, J, h, w)` of letterboxed `(F, S, S, 3)` uint8 frames."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(boxed), self.batch_size):
                out.append(self.net(to_input(boxed[i:i + self.batch_size]).to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.num_joints, 1, 1), np.float32)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        boxed, scale, pad_x, pad_y = letterbox(frames, self.config.input_size)
        kps = decode_heatmaps(self.heatmaps(boxed))
        s = self.config.stride
        x_box = (kps[..., 0] + 0.5) * s - 0.5  # heatmap pixel centre -> boxed-frame pixel centre
        y_box = (kps[..., 1] + 0.5) * s - 0.5
        kps[..., 0] = (x_box - pad_x + 0.5) / scale - 0.5
        kps[..., 1] = (y_box - pad_y + 0.5) / scale - 0.5
        h, w = frames.shape[1:3]
        kps[..., 0] = np.clip(kps[..., 0], 0, w - 1)
        kps[..., 1] = np.clip(kps[..., 1], 0, h - 1)
        if self.min_confidence is not None:
            kps[kps[..., 2] < self.min_confidence] = 0.0
        return kps


def save_model(net, cfg: SynthPoseConfig, folder: str | os.PathLike) -> Path:
    """Write a model folder (config.json + model.safetensors) atomically."""
    from safetensors.torch import save_file

    from dancegen.io.atomic import atomic_dir

    with atomic_dir(Path(folder), overwrite=True) as tmp:
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return Path(folder)
