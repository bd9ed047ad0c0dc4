"""RAFT-large optical flow in torch (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms", ECCV 2020).

Written here from the paper, with module names and tensor shapes laid out like torchvision's `raft_large`, so the
published torchvision checkpoints (`raft_large_C_T_SKHT_V2-ff5fadd5.pth`, `raft_large_C_T_V2-1bb1363a.pth`, ...)
load with `load_state_dict(strict=True)`. Those details matter for the weights:
- conv+norm+ReLU blocks are `nn.Sequential(conv, norm, relu)` (keys `.0.` conv, `.1.` norm); every conv has a bias;
- the feature encoder uses InstanceNorm2d without affine parameters, the context encoder BatchNorm2d;
- the correlation lookup orders its (2r+1)^2 channels with the x offset varying slowest (RAFT's meshgrid order);
- the mask predictor output is scaled by 0.25 and the 8x convex upsampling softmaxes over 9 neighbours.
Inputs are RGB images scaled to [-1, 1] with H and W divisible by 8 (`estimators.py` pads).
Deviation: none known; this is inference code (no dropout, no training-only branches).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dancegen.errors import InputError, MissingWeightsError

#: Published torchvision checkpoints for raft_large (file name -> URL, from torchvision's model registry).
RAFT_LARGE_WEIGHTS = {
    "raft_large_C_T_SKHT_V2-ff5fadd5.pth": "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
    "raft_large_C_T_V2-1bb1363a.pth": "https://download.pytorch.org/models/raft_large_C_T_V2-1bb1363a.pth",
    "raft_large_C_T_SKHT_V1-0b8c9e55.pth": "https://download.pytorch.org/models/raft_large_C_T_SKHT_V1-0b8c9e55.pth",
    "raft_large_C_T_V1-22a6c225.pth": "https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth",
    "raft_large_C_T_SKHT_K_V2-b5c70766.pth":
        "https://download.pytorch.org/models/raft_large_C_T_SKHT_K_V2-b5c70766.pth",
}
DEFAULT_RAFT_WEIGHTS = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # torchvision's Raft_Large_Weights.DEFAULT
#: Parameter count of torchvision's raft_large (its registry metadata), buffers excluded.
RAFT_LARGE_NUM_PARAMS = 5257536


class ConvNormAct(nn.Sequential):
    """`conv -> [norm] -> [ReLU]` with torchvision's Conv2dNormActivation indexing (conv is `.0`)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, norm: str | None = None,
                 act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, padding=(kernel_size - 1) // 2)]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        elif norm == "instance":
            layers.append(nn.InstanceNorm2d(cout))  # affine=False, no running stats: no state-dict entries
        elif norm is not None:
            raise ValueError(f"norm must be 'batch', 'instance' or None, got {norm!r}")
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-ReLU layers with a (projected when strided) skip and a final ReLU."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1):
        super().__init__()
        self.convnormrelu1 = ConvNormAct(cin, cout, 3, stride, norm)
        self.convnormrelu2 = ConvNormAct(cout, cout, 3, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else ConvNormAct(cin, cout, 1, stride, norm, act=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class FeatureEncoder(nn.Module):
    """7x7/2 stem, three stages of two residual blocks (strides 1, 2, 2), 1x1 projection: 1/8 resolution."""

    def __init__(self, norm: str, layers=(64, 64, 96, 128, 256), strides=(2, 1, 2, 2)):
        super().__init__()
        self.convnormrelu = ConvNormAct(3, layers[0], 7, strides[0], norm)
        self.layer1 = self._stage(layers[0], layers[1], norm, strides[1])
        self.layer2 = self._stage(layers[1], layers[2], norm, strides[2])
        self.layer3 = self._stage(layers[2], layers[3], norm, strides[3])
        self.conv = nn.Conv2d(layers[3], layers[4], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin, cout, norm, stride):
        return nn.Sequential(ResidualBlock(cin, cout, norm, stride), ResidualBlock(cout, cout, norm, 1))

    def forward(self, x):
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    """Encodes correlation features and the current flow; appends the raw flow (paper appendix, Fig. 8)."""

    def __init__(self, corr_channels: int, corr_layers=(256, 192), flow_layers=(128, 64), out_channels: int = 128):
        super().__init__()
        self.convcorr1 = ConvNormAct(corr_channels, corr_layers[0], 1)
        self.convcorr2 = ConvNormAct(corr_layers[0], corr_layers[1], 3)
        self.convflow1 = ConvNormAct(2, flow_layers[0], 7)
        self.convflow2 = ConvNormAct(flow_layers[0], flow_layers[1], 3)
        self.conv = ConvNormAct(corr_layers[1] + flow_layers[1], out_channels - 2, 3)
        self.out_channels = out_channels

    def forward(self, flow, corr):
        c = self.convcorr2(self.convcorr1(corr))
        f = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([c, f], 1)), flow], 1)


class ConvGRU(nn.Module):
    """Convolutional GRU cell (paper Eq. for z, r, q with convolutions in place of dense layers)."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size, padding):
        super().__init__()
        self.convz = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size, padding=padding)
        self.convr = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size, padding=padding)
        self.convq = nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size, padding=padding)

    def forward(self, h, x):
        hx = torch.cat([h, x], 1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], 1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """Separable ConvGRU: a 1x5 GRU followed by a 5x1 GRU (RAFT-large)."""

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__()
        self.convgru1 = ConvGRU(input_size, hidden_size, (1, 5), (0, 2))
        self.convgru2 = ConvGRU(input_size, hidden_size, (5, 1), (2, 0))
        self.hidden_size = hidden_size

    def forward(self, h, x):
        return self.convgru2(self.convgru1(h, x), x)


class FlowHead(nn.Module):
    """Two 3x3 convs from the hidden state to a flow update."""

    def __init__(self, in_channels: int = 128, hidden_size: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """Motion encoder + recurrent block + flow head: one refinement step."""

    def __init__(self, corr_channels: int, context_channels: int = 128, hidden_size: int = 128):
        super().__init__()
        self.motion_encoder = MotionEncoder(corr_channels)
        self.recurrent_block = RecurrentBlock(self.motion_encoder.out_channels + context_channels, hidden_size)
        self.flow_head = FlowHead(hidden_size, 256)
        self.hidden_state_size = hidden_size

    def forward(self, hidden, context, corr, flow):
        x = torch.cat([context, self.motion_encoder(flow, corr)], 1)
        hidden = self.recurrent_block(hidden, x)
        return hidden, self.flow_head(hidden)


class MaskPredictor(nn.Module):
    """Predicts the 8x8x9 convex-combination weights for upsampling (paper §3.3); output scaled by 0.25."""

    def __init__(self, in_channels: int = 128, hidden_size: int = 256, multiplier: float = 0.25):
        super().__init__()
        self.convrelu = ConvNormAct(in_channels, hidden_size, 3)
        self.conv = nn.Conv2d(hidden_size, 8 * 8 * 9, 1)
        self.multiplier = multiplier

    def forward(self, x):
        return self.multiplier * self.conv(self.convrelu(x))


def coords_grid(batch: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """`(B, 2, h, w)` pixel coordinates, channel 0 = x, 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                            indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, -1, -1, -1)


def sample_pixels(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling at absolute pixel coordinates `coords (..., 2)` (x, y), zeros outside."""
    h, w = img.shape[-2:]
    gx = coords[..., 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = coords[..., 1] * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear", align_corners=True)


class CorrBlock(nn.Module):
    """All-pairs correlation volume, average-pooled into `num_levels` levels, looked up in a (2r+1)^2 window."""

    def __init__(self, num_levels: int = 4, radius: int = 4):
        super().__init__()
        self.num_levels = num_levels
        self.radius = radius
        self.out_channels = num_levels * (2 * radius + 1) ** 2
        self.pyramid: list[torch.Tensor] = []

    def build_pyramid(self, fmap1: torch.Tensor, fmap2: torch.Tensor) -> None:
        b, c, h, w = fmap1.shape
        corr = torch.einsum("bci,bcj->bij", fmap1.flatten(2), fmap2.flatten(2)) / c**0.5
        corr = corr.reshape(b * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(self.num_levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)

    def index_pyramid(self, coords: torch.Tensor) -> torch.Tensor:
        """Correlation features `(B, L*(2r+1)^2, h, w)` around `coords (B, 2, h, w)` (pixels at 1/8 scale)."""
        b, _, h, w = coords.shape
        r = self.radius
        d = torch.arange(-r, r + 1, device=coords.device, dtype=coords.dtype)
        # Window offsets: the first window axis moves x, the second y (the order the checkpoints were trained with).
        dx, dy = torch.meshgrid(d, d, indexing="ij")
        delta = torch.stack([dx, dy], -1)[None]  # (1, 2r+1, 2r+1, 2)
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.pyramid):
            sampled = sample_pixels(corr, centre / 2**level + delta)  # (bhw, 1, 2r+1, 2r+1)
            out.append(sampled.reshape(b, h, w, -1))
        return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


def upsample_flow(flow: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """8x upsampling: convex combination of the 3x3 coarse neighbours (paper §3.3), or bilinear without a mask."""
    b, _, h, w = flow.shape
    if mask is None:
        return 8 * F.interpolate(flow, size=(8 * h, 8 * w), mode="bilinear", align_corners=True)
    mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
    nb = F.unfold(8 * flow, kernel_size=3, padding=1).view(b, 2, 9, 1, 1, h, w)
    up = (mask * nb).sum(2)  # (b, 2, 8, 8, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    """RAFT-large: feature/context encoders, correlation pyramid, ConvGRU updates, convex upsampling.

    Args:
        corr_levels: Pyramid levels (4).
        corr_radius: Lookup radius (4).
    """

    def __init__(self, corr_levels: int = 4, corr_radius: int = 4):
        super().__init__()
        self.feature_encoder = FeatureEncoder("instance")
        self.context_encoder = FeatureEncoder("batch")
        self.corr_block = CorrBlock(corr_levels, corr_radius)
        self.update_block = UpdateBlock(self.corr_block.out_channels, context_channels=256 - 128, hidden_size=128)
        self.mask_predictor = MaskPredictor(128, 256)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, num_flow_updates: int = 12) -> list[torch.Tensor]:
        """Flow from `image1` to `image2`.

        Args:
            image1, image2: `(B, 3, H, W)` RGB in [-1, 1], H and W divisible by 8.
            num_flow_updates: GRU iterations.

        Returns:
            List of `(B, 2, H, W)` flow predictions, one per iteration (the last is the final estimate).
        """
        b, _, h, w = image1.shape
        if image2.shape != image1.shape:
            raise ValueError(f"images must have the same shape, got {tuple(image1.shape)} and {tuple(image2.shape)}")
        if h % 8 or w % 8:
            raise ValueError(f"H and W must be divisible by 8, got {h}x{w}")
        fmap1, fmap2 = self.feature_encoder(torch.cat([image1, image2], 0)).chunk(2, 0)
        self.corr_block.build_pyramid(fmap1, fmap2)
        hidden, context = self.context_encoder(image1).split([128, 128], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)

        coords0 = coords_grid(b, h // 8, w // 8, image1.device, fmap1.dtype)
        coords1 = coords0.clone()
        preds = []
        for _ in range(num_flow_updates):
            coords1 = coords1.detach()
            corr = self.corr_block.index_pyramid(coords1)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
            preds.append(upsample_flow(coords1 - coords0, self.mask_predictor(hidden)))
        return preds


def resolve_raft_weights(weights: str | os.PathLike | None = None, filename: str = DEFAULT_RAFT_WEIGHTS) -> Path:
    """Find a RAFT-large checkpoint: an explicit path, else `$DANCEGEN_WEIGHTS_DIR/raft/<filename>`.

    Raises:
        MissingWeightsError: nothing found; says which file, where it was looked for and where torchvision
            publishes it. Nothing is downloaded.
    """
    looked = []
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            p = p / filename
        if p.is_file():
            return p
        looked.append(str(p))
    else:
        root = os.environ.get("DANCEGEN_WEIGHTS_DIR")
        if root:
            p = Path(root).expanduser() / "raft" / filename
            if p.is_file():
                return p
            looked.append(str(p))
        else:
            looked.append("$DANCEGEN_WEIGHTS_DIR/raft/ (DANCEGEN_WEIGHTS_DIR is not set)")
    url = RAFT_LARGE_WEIGHTS.get(filename, f"https://download.pytorch.org/models/{filename}")
    raise MissingWeightsError(
        f"RAFT-large weights {filename} not found (looked in: {'; '.join(looked)}). They are published by "
        f"torchvision (Raft_Large_Weights): download {url} into $DANCEGEN_WEIGHTS_DIR/raft/ or pass --weights FILE"
    )


def load_raft(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu",
              filename: str = DEFAULT_RAFT_WEIGHTS) -> RAFT:
    """Build RAFT-large and load a torchvision checkpoint strictly (see `resolve_raft_weights`), in eval mode."""
    path = resolve_raft_weights(weights, filename)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or non-torch file
        raise InputError(f"not a readable PyTorch checkpoint ({e.__class__.__name__}); expected torchvision's "
                         f"raft_large .pth", path) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = RAFT()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise InputError(f"not a torchvision raft_large checkpoint: {first}", path) from None
    return model.eval().to(device)
