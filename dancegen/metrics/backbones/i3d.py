"""I3D (Inception-v1 inflated, Carreira & Zisserman CVPR17; Kinetics-400) for FVD, defined here.

Layout and parameter names follow the PyTorch port piergiaj/pytorch-i3d (`Conv3d_1a_7x7.conv3d.weight`,
`Mixed_3b.b1b.bn.running_mean`, `logits.conv3d.bias`, ...), which is what `i3d_pretrained_400.pt` holds, so that file
loads strictly. Convolutions and max-pools use TF "SAME" padding computed from the input size, as the port does.
Two variants of the port exist and differ only in BatchNorm epsilon: VideoGPT's copy (`fvd-videogpt`) uses 1e-5, the
original port and DisCo's copy (`fvd-disco`) 1e-3; `bn_eps` selects it. Both average the logits over the remaining
time steps (DisCo pools [1,7,7] then averages, VideoGPT pools [2,7,7]; for a linear head these are equal).

The StyleGAN-V protocol (`fvd`, the default) runs the TorchScript `i3d_torchscript.pt` (the TF-Hub model) through
`TorchScriptI3D`, with its own graph; `map_torchscript_onto` copies its tensors onto `InceptionI3d` by order when
the two layouts agree. Written from the reference design; no code is copied.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from dancegen.errors import DanceGenError

LOGITS_DIM = 400
FEATURE_DIM = 1024
INPUT_SIZE = 224
CLIP_FRAMES = 16


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride, strict=True))
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt))


class Unit3D(nn.Module):
    """Conv3d (SAME padding) + optional BatchNorm3d + optional ReLU; attributes `conv3d`, `bn`."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), bn_eps: float = 1e-3,
                 use_bn: bool = True, use_bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, stride=self.stride, padding=0, bias=use_bias)
        if use_bn:
            self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01)

    def forward(self, x):
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if hasattr(self, "bn"):
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF SAME padding (zeros, as the port pads with F.pad before pooling)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x):
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1->3x3x3 | 1x1->3x3x3 | maxpool->1x1; attributes b0, b1a, b1b, b2a, b2b, b3b."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int], bn_eps: float):
        super().__init__()
        self.b0 = Unit3D(cin, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5], bn_eps=bn_eps)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


#: (endpoint, module factory args) in the port's order.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D. `forward(x)` -> `(B, 400)` logits averaged over time; `features(x)` -> `(B, 1024)` pooled features.

    Args:
        num_classes: 400 for Kinetics-400.
        time_kernel: Temporal size of the final average pool: 2 (port, VideoGPT) or 1 (DisCo); the result is then
            averaged over the remaining time steps. Equal for 16-frame clips, different for longer ones.
        bn_eps: 1e-3 (piergiaj port, DisCo) or 1e-5 (VideoGPT copy); must match the code the weights are used with.

    Input: `(B, 3, T, H, W)` in [-1, 1]; the published protocol is T=16, H=W=224 (the final 2x7x7 map is pooled).
    """

    def __init__(self, num_classes: int = LOGITS_DIM, bn_eps: float = 1e-3, in_channels: int = 3, time_kernel: int = 2):
        super().__init__()
        self.time_kernel = time_kernel
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        for name in ("Mixed_3b", "Mixed_3c"):
            self.add_module(name, InceptionModule(*_MIXED[name], bn_eps))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionModule(*_MIXED[name], bn_eps))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        for name in ("Mixed_5b", "Mixed_5c"):
            self.add_module(name, InceptionModule(*_MIXED[name], bn_eps))
        self.logits = Unit3D(FEATURE_DIM, num_classes, use_bn=False, use_bias=True, relu=False)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 3, T, H, W)` -> the Mixed_5c map `(B, 1024, T/8, H/32, W/32)`."""
        for module in self.children():
            if module is self.logits:
                break
            x = module(x)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        # The port's AvgPool3d([time_kernel,7,7], stride 1), then a mean over what is left. At 224x224 the map is
        # 7x7; other sizes (tests use the real layout at smaller inputs) are pooled globally in space.
        k = min(self.time_kernel, x.shape[2])
        x = F.avg_pool3d(x, (k, *x.shape[-2:]), stride=1)
        return x.mean(dim=(2, 3, 4), keepdim=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1024)`: the pooled Mixed_5c features (the port's `extract_features`, averaged over time)."""
        return self._pool(self.trunk(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 400)` logits averaged over time (dropout is identity in eval)."""
        return self.logits(self._pool(self.trunk(x))).flatten(1)


class TorchScriptI3D(nn.Module):
    """Wraps the StyleGAN-V `i3d_torchscript.pt` (TF-Hub I3D): `forward(x in [-1,1])` -> `(B, 400)` logits.

    Called as common_metrics_on_video_quality / StyleGAN-V's FVD do with our own preprocessing:
    `rescale=False, resize=False, return_features=True` (the pre-softmax 400-d output).
    """

    def __init__(self, scripted: torch.jit.ScriptModule):
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x, rescale=False, resize=False, return_features=True)


def load_torchscript_i3d(path: str | os.PathLike, device: str = "cpu") -> TorchScriptI3D:
    """Load `i3d_torchscript.pt` with `torch.jit.load` (it carries its own graph)."""
    try:
        scripted = torch.jit.load(os.fspath(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001
        raise DanceGenError(f"cannot load as TorchScript ({e.__class__.__name__}: {e})", path) from None
    return TorchScriptI3D(scripted).eval()


def map_torchscript_onto(scripted: torch.jit.ScriptModule | nn.Module, model: InceptionI3d) -> InceptionI3d:
    """Copy a scripted I3D's parameters and buffers onto `model` by definition order (shapes checked each step).

    Raises:
        DanceGenError: the scripted network's tensor list does not line up with InceptionI3d's.
    """
    from dancegen.metrics.backbones.common import load_strict, map_by_order

    tensors = [t for _, t in scripted.state_dict().items()]
    sd = map_by_order(model, tensors, source="i3d torchscript")
    return load_strict(model, sd)
