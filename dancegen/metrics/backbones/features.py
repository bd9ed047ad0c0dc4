"""Per-video features and scores from the metric backbones, with each protocol's preprocessing (prior-art.md §4).

Every extractor takes `(F, H, W, 3)` uint8 RGB videos, builds its network from a resolved weight file (or random
weights of the same architecture for tests and benchmarks: `random_weights=True`, recorded in the protocol), and
returns numpy arrays. Protocols:

- `fid`: pytorch-fid InceptionV3 pool3 (2048-d) per frame; frames in [0,1], bilinear 299 (`resize="pytorch-fid"`)
  or clean-fid's PIL bicubic 299 on the 0-255 float image (`resize="clean"`), then [-1,1].
- `fvd` (StyleGAN-V / TF reference, default): TorchScript TF-Hub I3D, 400-d logits, clips of 16 consecutive frames,
  each frame bilinearly resized to 224x224 (`resize="stretch"`, the TF reference) or shorter side to 224 plus centre
  crop (`"short-side-crop"`, common_metrics/StyleGAN-V datasets), values in [-1,1].
- `fvd-videogpt`: `i3d_pretrained_400.pt` in InceptionI3d (BN eps 1e-5), short-side 224 + centre crop, [-1,1].
- `fvd-disco` / `fid-vid` (DisCo `gen_eval.sh`, "disco-gif3fps"): 16-frame segments are written as 3 fps GIFs and
  read back (palette quantisation as DisCo's pipeline does), PIL-bicubic resized (224 for I3D with BN eps 1e-3 and
  /127.5-1; 112 for the 3D ResNet-50 with the pixel mean subtracted), one feature per video = mean over segments.
- `lpips*`: LPIPS per frame pair; `lpips-disco` feeds [0,1] images without rescaling (DisCo's quirk).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F


def _to_float(frames: np.ndarray, device: str) -> torch.Tensor:
    """`(F, H, W, 3)` uint8 -> `(F, 3, H, W)` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def pil_resize(frames: np.ndarray, size: tuple[int, int], float_mode: bool = False) -> np.ndarray:
    """PIL bicubic resize of every frame to `size=(W, H)`.

    `float_mode=True` resizes each channel as a 32-bit float image and clips to [0, 255] (clean-fid's resizer);
    otherwise uint8 RGB is resized as an 8-bit image (DisCo's `make_resizer("PIL", False, "bicubic")` path).
    Returns float32 `(F, H, W, 3)` on the 0-255 scale.
    """
    from PIL import Image

    out = np.empty((len(frames), size[1], size[0], 3), np.float32)
    for i, f in enumerate(frames):
        if float_mode:
            for c in range(3):
                im = Image.fromarray(f[..., c].astype(np.float32), mode="F").resize(size, Image.BICUBIC)
                out[i, ..., c] = np.asarray(im).clip(0, 255)
        else:
            out[i] = np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC), np.float32)
    return out


def gif_roundtrip(frames: np.ndarray) -> np.ndarray:
    """Pass every frame through GIF encoding and decoding (the 256-colour palette step of DisCo's GIF files).

    Frames are quantised one at a time with PIL's GIF writer, as it does for each frame of an animation; the frame
    rate (3 fps in DisCo) only changes timing metadata, not pixels, so it does not enter here.
    """
    from PIL import Image

    out = np.empty_like(frames)
    for i, f in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="GIF")
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out


def resize_video_torch(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """`(F, 3, H, W)` -> bilinear (align_corners=False) `size x size` (`stretch`) or short side + centre crop."""
    if mode == "stretch":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if mode != "short-side-crop":
        raise ValueError(f"resize mode must be 'stretch' or 'short-side-crop', got {mode!r}")
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    th, tw = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    top, left = (th - size) // 2, (tw - size) // 2
    return x[..., top:top + size, left:left + size]


def clip_windows(num_frames: int, length: int, clips: str, stride: int | None = None) -> list[tuple[int, int]]:
    """Frame windows `[(start, end)]` of `length` frames: `first`, `all` (non-overlapping) or `sliding` (stride)."""
    if num_frames < length:
        return []
    if clips == "first":
        return [(0, length)]
    step = length if clips == "all" else (stride or 1)
    if clips not in ("all", "sliding"):
        raise ValueError(f"clips must be first, all or sliding, got {clips!r}")
    return [(s, s + length) for s in range(0, num_frames - length + 1, step)]


class InceptionExtractor:
    """FID features: `(F, 2048)` per video."""

    def __init__(self, weight_path=None, device="cpu", resize="pytorch-fid", batch_size=32):
        from dancegen.metrics.backbones.common import load_strict, read_checkpoint
        from dancegen.metrics.backbones.inception import FIDInceptionV3

        self.net = FIDInceptionV3()
        if weight_path is not None:
            load_strict(self.net, read_checkpoint(weight_path), weight_path)
        self.net.eval().to(device)
        self.device, self.resize, self.batch_size = device, resize, batch_size

    @torch.no_grad()
    def __call__(self, video: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(video), self.batch_size):
            chunk = video[i:i + self.batch_size]
            if self.resize == "clean":
                x = torch.from_numpy(pil_resize(chunk, (299, 299), float_mode=True)).permute(0, 3, 1, 2) / 255.0
                feats = self.net.features(x.to(self.device), resize=False)
            else:
                feats = self.net.features(_to_float(chunk, self.device))
            out.append(feats.cpu().numpy().astype(np.float64))
        return np.concatenate(out)


class I3DExtractor:
    """FVD features per video: `(n_clips, 400)` logits (or one averaged row for the DisCo protocol)."""

    def __init__(self, protocol="styleganv", weight_path=None, device="cpu", resize=None, clips="first",
                 clip_len=16, stride=None, batch_size=4):
        from dancegen.metrics.backbones.i3d import InceptionI3d, load_torchscript_i3d

        self.protocol, self.device, self.clips, self.clip_len, self.stride = protocol, device, clips, clip_len, stride
        self.batch_size = batch_size
        defaults = {"styleganv": "stretch", "videogpt": "short-side-crop", "disco": "pil-bicubic"}
        if protocol not in defaults:
            raise ValueError(f"unknown FVD protocol {protocol!r}")
        self.resize = resize or defaults[protocol]
        if protocol == "styleganv" and weight_path is not None:
            self.net = load_torchscript_i3d(weight_path, device)
        else:
            eps, tk = {"styleganv": (1e-3, 2), "videogpt": (1e-5, 2), "disco": (1e-3, 1)}[protocol]
            self.net = InceptionI3d(bn_eps=eps, time_kernel=tk)
            if weight_path is not None:
                from dancegen.metrics.backbones.common import load_strict, read_checkpoint

                load_strict(self.net, read_checkpoint(weight_path), weight_path)
            self.net.eval().to(device)

    def _prep(self, clip: np.ndarray) -> torch.Tensor:
        if self.protocol == "disco":
            x = torch.from_numpy(pil_resize(gif_roundtrip(clip), (224, 224))).permute(0, 3, 1, 2) / 127.5 - 1
        else:
            x = resize_video_torch(_to_float(clip, "cpu"), 224, self.resize) * 2 - 1
        return x.permute(1, 0, 2, 3)  # (3, T, 224, 224)

    @torch.no_grad()
    def __call__(self, video: np.ndarray) -> np.ndarray:
        windows = clip_windows(len(video), self.clip_len, "all" if self.protocol == "disco" else self.clips,
                               self.stride)
        feats = []
        for i in range(0, len(windows), self.batch_size):
            x = torch.stack([self._prep(video[a:b]) for a, b in windows[i:i + self.batch_size]]).to(self.device)
            feats.append(self.net(x).float().cpu().numpy().astype(np.float64))
        if not feats:
            return np.zeros((0, 400))
        out = np.concatenate(feats)
        return out.mean(0, keepdims=True) if self.protocol == "disco" else out


class ResNet3DExtractor:
    """DisCo FID-VID features: one `(1, 2048)` row per video (mean over 16-frame segments, last one padded)."""

    def __init__(self, weight_path=None, device="cpu", clip_len=16, gif=True, batch_size=4):
        from dancegen.metrics.backbones.common import load_strict, read_checkpoint
        from dancegen.metrics.backbones.resnet3d import PIXEL_MEAN, ResNet3D

        self.net = ResNet3D()
        if weight_path is not None:
            load_strict(self.net, read_checkpoint(weight_path), weight_path)
        self.net.eval().to(device)
        self.mean = torch.tensor(PIXEL_MEAN).view(1, 1, 1, 3)
        self.device, self.clip_len, self.gif, self.batch_size = device, clip_len, gif, batch_size

    @torch.no_grad()
    def __call__(self, video: np.ndarray) -> np.ndarray:
        n = len(video)
        pad = (-n) % self.clip_len
        if pad:
            video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        segs = []
        for s in range(0, len(video), self.clip_len):
            seg = video[s:s + self.clip_len]
            seg = gif_roundtrip(seg) if self.gif else seg
            x = torch.from_numpy(pil_resize(seg, (112, 112))) - self.mean  # (T, 112, 112, 3)
            segs.append(x.permute(3, 0, 1, 2))
        feats = [self.net.features(torch.stack(segs[i:i + self.batch_size]).to(self.device)).cpu()
                 for i in range(0, len(segs), self.batch_size)]
        return torch.cat(feats).double().numpy().mean(0, keepdims=True)


class LPIPSScorer:
    """Per-frame LPIPS between two videos; `input_range="[-1,1]"` (standard) or `"[0,1]"` (DisCo's quirk)."""

    def __init__(self, net="alex", trunk_path=None, lin_path=None, device="cpu", input_range="[-1,1]",
                 batch_size=16):
        from dancegen.metrics.backbones.lpips import LPIPS

        self.net = LPIPS(net)
        if trunk_path is not None:
            from dancegen.metrics.backbones.common import read_checkpoint

            self.net.load_weights(read_checkpoint(trunk_path), read_checkpoint(lin_path), str(trunk_path))
        else:
            # random init (tests/benchmarks): keep the heads non-negative as trained LPIPS heads are, so the
            # score stays a distance (>= 0, 0 for identical images)
            for lin in self.net.lins:
                lin.model[1].weight.data.abs_()
        self.net.eval().to(device)
        self.device, self.input_range, self.batch_size = device, input_range, batch_size

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(pred), self.batch_size):
            a, b = _to_float(pred[i:i + self.batch_size], self.device), _to_float(gt[i:i + self.batch_size], self.device)
            if self.input_range == "[-1,1]":
                a, b = a * 2 - 1, b * 2 - 1
            out.append(self.net(a, b).cpu().numpy())
        return np.concatenate(out).astype(np.float64)
