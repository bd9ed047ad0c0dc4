"""Latent flow auto-encoder (LFAE) of Dance Any Beat / DabFusion (paper §3.3, Fig. 4, Eqs. 1-2; spec §2.3).

Stage 1 of DabFusion learns, without keypoint labels, to move a reference frame's latent onto a driving frame:

    z      = ImageEncoder(x_ref)                # (B, C, h, w), h = H / 2**num_down_blocks
    f, m   = FlowPredictor(x_ref, x_dri)        # absolute backward grid (B, h, w, 2), occlusion (B, 1, h, w)
    z~     = m * warp(z, f)                     # Eq. 1 [P]
    x^     = ImageDecoder(z~)                   # (B, 3, H, W) in [0, 1]

The encoder/decoder follow Johnson et al. as used by FOMM's generator [P/L]; the flow predictor is FOMM's keypoint
detector + dense motion network [P "follows [36]"]. Stage 2 (`LFAE.generate`) decodes the flows and occlusions that
the diffusion model samples. Conventions (LFDM `use_residual_flow=False` [L]): a flow is an ABSOLUTE backward sampling
grid with last dim (x, y) in [-1, 1] for `grid_sample(..., align_corners=True)`; occlusion 1 = visible.

`LFAELoss` is FOMM's pyramid perceptual loss on VGG-19 features plus keypoint equivariance (gap G5), or, without VGG
weights, a stated pixel + gradient substitute. Written from the FOMM / LFDM designs; no code is copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dancegen.errors import InputError, MissingWeightsError

__all__ = [
    "identity_grid", "translation_grid", "warp", "apply_flow", "resize_grid", "resize_occlusion",
    "AntiAliasDownsample", "SameBlock2d", "DownBlock2d", "UpBlock2d", "ResBlock2d", "Hourglass",
    "ImageEncoder", "ImageDecoder", "KeypointDetector", "DenseMotionNetwork", "LFAE",
    "VGG19Features", "VGG19_TAPS", "load_vgg19", "ImagePyramid", "random_affine", "LFAELoss",
]


# ============================================================================================== grids and warping
def identity_grid(h: int, w: int, batch: int = 1, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """The sampling grid that leaves a (h, w) map unchanged under `warp`.

    Built with `linspace(-1, 1)`, which matches `align_corners=True` (pixel centres of the corner pixels at +-1).
    `warp(z, identity_grid(h, w))` returns z up to float rounding of the un-normalisation (x + 1) * (w - 1) / 2;
    for sizes 2**k + 1 (and 1, 2, 3) every value is exact and so is the warp.

    Args:
        h, w: Spatial size.
        batch: Leading batch size (the grid is expanded, not copied).

    Returns:
        (batch, h, w, 2) with [..., 0] = x (column) and [..., 1] = y (row).
    """
    dtype = dtype or torch.get_default_dtype()

    def axis(n: int) -> torch.Tensor:
        # linspace(-1, 1, 1) would give [-1]; a single row/column sits at the centre instead.
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1 else torch.zeros(
            1, device=device, dtype=dtype)

    xs, ys = axis(w), axis(h)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2)
    return grid.unsqueeze(0).expand(batch, h, w, 2)


def translation_grid(h: int, w: int, dx: float, dy: float, batch: int = 1, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """A backward grid that translates a map by (dx, dy) pixels: output(x, y) = input(x - dx, y - dy).

    Returns:
        (batch, h, w, 2) absolute grid in the `identity_grid` convention.
    """
    grid = identity_grid(h, w, batch, device, dtype)
    step = grid.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    return grid - step * grid.new_tensor([float(dx), float(dy)])


def warp(z: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Differentiable bilinear backward warping (STN), the f_w of Eq. 1 [P].

    Args:
        z: (B, C, h, w) feature map.
        grid: (B, h', w', 2) absolute sampling grid, (x, y) in [-1, 1]; outside samples read zeros.

    Returns:
        (B, C, h', w').
    """
    return F.grid_sample(z, grid.to(z.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def apply_flow(z: torch.Tensor, grid: torch.Tensor, occlusion: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 [P]: z~ = m * f_w(z, f). `occlusion=None` means fully visible (no masking).

    Args:
        z: (B, C, h, w). grid: (B, h, w, 2). occlusion: (B, 1, h, w) in [0, 1], 1 = visible.
    """
    out = warp(z, grid)
    return out if occlusion is None else out * occlusion.to(out.dtype)


def resize_grid(grid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize an absolute grid (B, h, w, 2) to (B, H', W', 2), interpolated as a 2-channel field.

    Bilinear with `align_corners=True`, so an identity (or any affine) grid stays exactly that grid's resize: the
    grid values are already normalised coordinates and need no rescaling.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(grid.shape[1:3]) == size:
        return grid
    field = F.interpolate(grid.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True)
    return field.permute(0, 2, 3, 1)


def resize_occlusion(occlusion: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize an occlusion map (B, 1, h, w) to (B, 1, H', W') (bilinear, align_corners=True, stays in [0, 1])."""
    size = (int(size[0]), int(size[1]))
    if tuple(occlusion.shape[-2:]) == size:
        return occlusion
    return F.interpolate(occlusion, size=size, mode="bilinear", align_corners=True)


def _inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of (..., 2, 2) matrices (cheaper than a batched LU for many tiny matrices)."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return inv / det[..., None, None]


# ============================================================================================== building blocks
class AntiAliasDownsample(nn.Module):
    """Gaussian blur then subsample by `scale` (FOMM's AntiAliasInterpolation2d design).

    sigma = (1 / scale - 1) / 2 and kernel size 2 * round(4 sigma) + 1 as in FOMM; the kernel is a normalised
    exp(-x^2 / (2 sigma^2)) and the border is replicate-padded [A] (FOMM zero-pads), so a constant image stays
    constant at every pyramid level. Integer 1/scale subsamples by striding, other scales by bilinear resize.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.scale = float(scale)
        self.channels = int(channels)
        if self.scale == 1.0:
            self.register_buffer("kernel", torch.ones(1, 1, 1, 1), persistent=False)
            self.pad = 0
            return
        sigma = (1.0 / self.scale - 1.0) / 2.0
        size = 2 * round(sigma * 4) + 1
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g1 = torch.exp(-(x**2) / (2 * sigma**2))
        g2 = torch.outer(g1, g1)
        g2 = (g2 / g2.sum()).float()
        self.register_buffer("kernel", g2.expand(self.channels, 1, size, size).contiguous(), persistent=False)
        self.pad = size // 2
        inv = 1.0 / self.scale
        self.stride = int(round(inv)) if abs(inv - round(inv)) < 1e-6 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.pad,) * 4, mode="replicate")
        out = F.conv2d(out, self.kernel.to(x.dtype), groups=self.channels)
        if self.stride is not None:
            return out[:, :, :: self.stride, :: self.stride]
        size = (max(1, round(x.shape[-2] * self.scale)), max(1, round(x.shape[-1] * self.scale)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class SameBlock2d(nn.Module):
    """conv + BatchNorm + ReLU at the same resolution (FOMM `SameBlock2d`)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv3x3 + BatchNorm + ReLU + AvgPool 2 (FOMM `DownBlock2d`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class UpBlock2d(nn.Module):
    """Nearest upsample x2 + conv3x3 + BatchNorm + ReLU (FOMM `UpBlock2d`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: (BN, ReLU, conv3x3) x 2 + identity (FOMM `ResBlock2d`)."""

    def __init__(self, features: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(features)
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(features)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return x + out


class Hourglass(nn.Module):
    """U-Net style hourglass of FOMM: `num_blocks` DownBlock2d, then UpBlock2d with concatenated skips.

    Channels at depth i are min(max_features, block_expansion * 2**(i + 1)). The output has
    `out_features = block_expansion + in_features` channels at the input resolution, which must be divisible by
    2**num_blocks.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        ch = [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(in_features if i == 0 else ch[i - 1], ch[i]) for i in range(num_blocks))
        ups = []
        for i in reversed(range(num_blocks)):
            cin = ch[i] * (1 if i == num_blocks - 1 else 2)
            cout = min(max_features, block_expansion * 2**i)
            ups.append(UpBlock2d(cin, cout))
        self.up_blocks = nn.ModuleList(ups)
        self.num_blocks = num_blocks
        self.out_features = block_expansion + in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = 2**self.num_blocks
        if x.shape[-1] % k or x.shape[-2] % k:
            raise ValueError(f"hourglass with {self.num_blocks} blocks needs sizes divisible by {k}, got "
                             f"{tuple(x.shape[-2:])}")
        skips = [x]
        for down in self.down_blocks:
            skips.append(down(skips[-1]))
        out = skips.pop()
        for up in self.up_blocks:
            out = torch.cat([up(out), skips.pop()], dim=1)
        return out


# ============================================================================================== encoder / decoder
def _level_channels(block_expansion: int, max_features: int, num_down_blocks: int) -> list[int]:
    """Channels of the encoder features at full resolution and after each down block (the last is z's)."""
    return [block_expansion] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_down_blocks)]


class ImageEncoder(nn.Module):
    """Johnson-style image encoder [P] as in FOMM's generator [L]: SameBlock 7x7, then `num_down_blocks` DownBlock2d.

    Defaults give 3 -> 64 -> 128 -> 256 channels and z (B, 256, H/4, W/4) (spec §2.3).
    """

    def __init__(self, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 2,
                 in_channels: int = 3):
        super().__init__()
        self.channels = tuple(_level_channels(block_expansion, max_features, num_down_blocks))
        self.first = SameBlock2d(in_channels, block_expansion, kernel_size=7)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(self.channels[i], self.channels[i + 1]) for i in range(num_down_blocks))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Encode images (B, 3, H, W) in [0, 1].

        Returns:
            z (B, channels[-1], H / 2**n, W / 2**n); with `return_features`, the list of every level's features
            [full resolution, after down block 1, ..., z] (what `warp_skips` warps).
        """
        feats = [self.first(x)]
        for down in self.down_blocks:
            feats.append(down(feats[-1]))
        return feats if return_features else feats[-1]


class ImageDecoder(nn.Module):
    """Johnson-style decoder [P] as in FOMM's generator [L]: ResBlock2d bottleneck, UpBlock2d x n, 7x7 conv, sigmoid.

    With `skips=True` (G7, the LFDM/MRAA generator) every up block and the final conv also receive the warped encoder
    feature of their input resolution, concatenated on channels; without it the decoder sees only z~ (Eq. 1 [P]).
    """

    def __init__(self, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 2,
                 num_bottleneck_blocks: int = 6, skips: bool = False, out_channels: int = 3):
        super().__init__()
        ch = _level_channels(block_expansion, max_features, num_down_blocks)
        mult = 2 if skips else 1
        self.skips = skips
        self.num_down_blocks = num_down_blocks
        self.bottleneck = nn.Sequential(*[ResBlock2d(ch[-1]) for _ in range(num_bottleneck_blocks)])
        self.up_blocks = nn.ModuleList(UpBlock2d(ch[i + 1] * mult, ch[i]) for i in reversed(range(num_down_blocks)))
        self.final = nn.Conv2d(ch[0] * mult, out_channels, 7, padding=3)

    def forward(self, z: torch.Tensor, skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Decode z~ (B, C, h, w) to images (B, 3, h * 2**n, w * 2**n) in [0, 1].

        Args:
            skips: with `skips=True` only: the warped encoder features [full res, ..., z level] (n + 1 maps).
        """
        if self.skips and (skips is None or len(skips) != self.num_down_blocks + 1):
            raise ValueError(f"this decoder warps skips: pass {self.num_down_blocks + 1} warped encoder features")
        out = self.bottleneck(z)
        for j, up in enumerate(self.up_blocks):
            if self.skips:
                out = torch.cat([out, skips[self.num_down_blocks - j]], dim=1)
            out = up(out)
        if self.skips:
            out = torch.cat([out, skips[0]], dim=1)
        return torch.sigmoid(self.final(out))


# ============================================================================================== flow predictor (FOMM)
def kp_to_gaussian(value: torch.Tensor, size: Sequence[int], variance: float) -> torch.Tensor:
    """Gaussian blobs exp(-|p - kp|^2 / (2 variance)) around keypoints (B, K, 2) on an (h, w) grid -> (B, K, h, w)."""
    grid = identity_grid(int(size[0]), int(size[1]), device=value.device, dtype=value.dtype)[0]  # (h, w, 2)
    diff = grid[None, None] - value[:, :, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


class KeypointDetector(nn.Module):
    """FOMM keypoint detector: unsupervised keypoints (and local 2x2 Jacobians) from an image.

    An Hourglass on the image anti-alias-downscaled by `scale_factor`; a 7x7 conv gives K heatmaps, softmax over
    space with `temperature`; a keypoint is the heatmap-weighted mean of the coordinate grid (so it lies in [-1, 1]).
    The optional Jacobian head is a 7x7 conv initialised to output the identity everywhere (zero weights, bias
    [1, 0, 0, 1]), pooled with the same heatmap. The heads use "same" padding [A] (FOMM vox-256 uses pad 0, which
    loses 6 border pixels; at the tiny test sizes that would leave almost nothing).
    """

    def __init__(self, num_kp: int = 10, block_expansion: int = 32, max_features: int = 1024, num_blocks: int = 5,
                 scale_factor: float = 0.25, temperature: float = 0.1, estimate_jacobian: bool = True,
                 in_channels: int = 3):
        super().__init__()
        self.num_kp = num_kp
        self.temperature = float(temperature)
        self.estimate_jacobian = bool(estimate_jacobian)
        self.down = AntiAliasDownsample(in_channels, scale_factor)
        self.predictor = Hourglass(block_expansion, in_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_features, num_kp, 7, padding=3)
        if self.estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_features, 4 * num_kp, 7, padding=3)
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))
        else:
            self.jacobian = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x (B, 3, H, W) in [0, 1].

        Returns:
            {"value": (B, K, 2) in [-1, 1] as (x, y), "heatmap": (B, K, h', w') (sums to 1),
             "jacobian": (B, K, 2, 2) when estimated}.
        """
        feat = self.predictor(self.down(x))
        logits = self.kp(feat)
        b, k, h, w = logits.shape
        heat = F.softmax(logits.flatten(2) / self.temperature, dim=-1).view(b, k, h, w)
        grid = identity_grid(h, w, device=x.device, dtype=heat.dtype)[0]
        out = {"value": torch.einsum("bkhw,hwc->bkc", heat, grid), "heatmap": heat}
        if self.jacobian is not None:
            jmap = self.jacobian(feat).view(b, k, 4, h, w)
            out["jacobian"] = torch.einsum("bkhw,bkjhw->bkj", heat, jmap).view(b, k, 2, 2)
        return out


class DenseMotionNetwork(nn.Module):
    """FOMM dense motion: mixes K + 1 sparse motions into one backward grid, plus an occlusion map.

    Sparse motion k (first-order Taylor expansion around keypoint k, FOMM Eq. 4) maps a driving-frame point p to
    T_k(p) = kp_src_k + J_src_k J_dri_k^-1 (p - kp_dri_k); motion 0 is the identity (background). The source, at
    `scale_factor`, is warped by each motion; together with the Gaussian heatmap differences (driving - source,
    variance 0.01) they feed an Hourglass whose 7x7 heads give softmax masks over the K + 1 motions and a sigmoid
    occlusion map. grid = sum_k mask_k * T_k, a convex mix of the sparse motions.
    """

    def __init__(self, num_kp: int = 10, block_expansion: int = 64, max_features: int = 1024, num_blocks: int = 5,
                 scale_factor: float = 0.25, in_channels: int = 3, kp_variance: float = 0.01):
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = float(kp_variance)
        self.down = AntiAliasDownsample(in_channels, scale_factor)
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (in_channels + 1), num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_features, num_kp + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_features, 1, 7, padding=3)

    def sparse_motions(self, size: Sequence[int], kp_dri: dict[str, torch.Tensor],
                       kp_src: dict[str, torch.Tensor]) -> torch.Tensor:
        """The K + 1 backward grids (B, K + 1, h, w, 2): identity first, then one per keypoint."""
        h, w = int(size[0]), int(size[1])
        v_dri, v_src = kp_dri["value"], kp_src["value"]
        b, k = v_dri.shape[:2]
        ident = identity_grid(h, w, device=v_dri.device, dtype=v_dri.dtype)  # (1, h, w, 2)
        rel = ident[:, None] - v_dri[:, :, None, None, :]  # (B, K, h, w, 2): p - kp_dri
        if "jacobian" in kp_dri and "jacobian" in kp_src:
            jac = kp_src["jacobian"] @ _inverse_2x2(kp_dri["jacobian"])  # (B, K, 2, 2)
            rel = torch.einsum("bkij,bkhwj->bkhwi", jac, rel)
        motions = rel + v_src[:, :, None, None, :]
        return torch.cat([ident[:, None].expand(b, 1, h, w, 2), motions], dim=1)

    def heatmap_differences(self, size: Sequence[int], kp_dri: dict[str, torch.Tensor],
                            kp_src: dict[str, torch.Tensor]) -> torch.Tensor:
        """Gaussian(kp_dri) - Gaussian(kp_src) per keypoint, plus a zero background map: (B, K + 1, 1, h, w)."""
        diff = (kp_to_gaussian(kp_dri["value"], size, self.kp_variance)
                - kp_to_gaussian(kp_src["value"], size, self.kp_variance))
        return torch.cat([torch.zeros_like(diff[:, :1]), diff], dim=1).unsqueeze(2)

    def forward(self, x_src: torch.Tensor, kp_dri: dict[str, torch.Tensor],
                kp_src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Args: x_src (B, 3, H, W) in [0, 1]; keypoint dicts from `KeypointDetector`.

        Returns:
            {"grid": (B, h', w', 2), "occlusion": (B, 1, h', w'), "mask": (B, K + 1, h', w'),
             "sparse_motions": (B, K + 1, h', w', 2)} at h' = H * scale_factor.
        """
        src = self.down(x_src)
        b, c, h, w = src.shape
        k1 = self.num_kp + 1
        motions = self.sparse_motions((h, w), kp_dri, kp_src)
        deformed = warp(src[:, None].expand(b, k1, c, h, w).reshape(b * k1, c, h, w),
                        motions.reshape(b * k1, h, w, 2)).view(b, k1, c, h, w)
        heat = self.heatmap_differences((h, w), kp_dri, kp_src)
        feat = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, k1 * (c + 1), h, w))
        mask = F.softmax(self.mask(feat), dim=1)
        grid = torch.einsum("bkhw,bkhwc->bhwc", mask, motions)
        return {"grid": grid, "occlusion": torch.sigmoid(self.occlusion(feat)), "mask": mask,
                "sparse_motions": motions}


# ============================================================================================== LFAE
class LFAE(nn.Module):
    """DabFusion's latent flow auto-encoder (paper §3.3, Fig. 4; spec §2.3).

    Args:
        block_expansion, max_features, num_down_blocks, num_bottleneck_blocks: image encoder / decoder sizes
            (defaults: z (B, 256, H/4, W/4), 6 bottleneck ResBlocks [L/FOMM]).
        num_kp, estimate_jacobian, kp_*: FOMM keypoint detector (10 keypoints with Jacobians, hourglass 32/1024/5
            at scale 0.25, temperature 0.1 [FOMM vox-256]).
        dm_*: FOMM dense motion network (hourglass 64/1024/5 at scale 0.25). Its grid and occlusion are resized to
            the latent size (identity for 128 px inputs with the defaults).
        warp_skips: G7. False (default) = Eq. 1 literally: only z is warped and the decoder sees nothing else.
            True = the LFDM/MRAA generator: every encoder level is also warped (with the latent grid and occlusion
            resized to its size) and concatenated in the decoder. The LFDM blend of the output with the warped
            source image is not implemented.
    """

    def __init__(self, block_expansion: int = 64, max_features: int = 512, num_down_blocks: int = 2,
                 num_bottleneck_blocks: int = 6, num_kp: int = 10, estimate_jacobian: bool = True,
                 kp_block_expansion: int = 32, kp_max_features: int = 1024, kp_num_blocks: int = 5,
                 kp_scale_factor: float = 0.25, kp_temperature: float = 0.1, dm_block_expansion: int = 64,
                 dm_max_features: int = 1024, dm_num_blocks: int = 5, dm_scale_factor: float = 0.25,
                 warp_skips: bool = False):
        super().__init__()
        self.num_down_blocks = int(num_down_blocks)
        self.warp_skips = bool(warp_skips)
        self.encoder = ImageEncoder(block_expansion, max_features, num_down_blocks)
        self.decoder = ImageDecoder(block_expansion, max_features, num_down_blocks, num_bottleneck_blocks,
                                    skips=self.warp_skips)
        self.kp_detector = KeypointDetector(num_kp, kp_block_expansion, kp_max_features, kp_num_blocks,
                                            kp_scale_factor, kp_temperature, estimate_jacobian)
        self.dense_motion = DenseMotionNetwork(num_kp, dm_block_expansion, dm_max_features, dm_num_blocks,
                                               dm_scale_factor)

    @property
    def latent_channels(self) -> int:
        """C of z (256 with the defaults)."""
        return self.encoder.channels[-1]

    @property
    def downsample(self) -> int:
        """Image-to-latent size ratio, 2**num_down_blocks (4 with the defaults: 128 px -> 32 x 32)."""
        return 2**self.num_down_blocks

    def _check_images(self, *xs: torch.Tensor) -> None:
        for x in xs:
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"expected images (B, 3, H, W), got {tuple(x.shape)}")
            if x.shape[-1] % self.downsample or x.shape[-2] % self.downsample:
                raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by {self.downsample}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> z (B, latent_channels, H / downsample, W / downsample)."""
        self._check_images(x)
        return self.encoder(x)

    def flow(self, x_ref: torch.Tensor, x_dri: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The latent flow from x_ref to x_dri (the flow predictor of Fig. 4).

        Returns:
            grid (B, h, w, 2) absolute backward grid at the latent size, occlusion (B, 1, h, w) in [0, 1],
            kp_ref and kp_dri (dicts with "value" (B, K, 2), "jacobian" (B, K, 2, 2), "heatmap").
        """
        self._check_images(x_ref, x_dri)
        b = x_ref.shape[0]
        # One detector pass over both frames (same result as two passes in eval mode; half the calls).
        kp = self.kp_detector(torch.cat([x_ref, x_dri], dim=0))
        kp_ref = {k: v[:b] for k, v in kp.items()}
        kp_dri = {k: v[b:] for k, v in kp.items()}
        motion = self.dense_motion(x_ref, kp_dri=kp_dri, kp_src=kp_ref)
        size = (x_ref.shape[-2] // self.downsample, x_ref.shape[-1] // self.downsample)
        return resize_grid(motion["grid"], size), resize_occlusion(motion["occlusion"], size), kp_ref, kp_dri

    def warp_features(self, feats: Sequence[torch.Tensor], grid: torch.Tensor,
                      occlusion: torch.Tensor | None) -> list[torch.Tensor]:
        """Eq. 1 applied to each encoder level, with the latent grid / occlusion resized to the level's size."""
        out = []
        for f in feats:
            size = f.shape[-2:]
            occ = None if occlusion is None else resize_occlusion(occlusion, size)
            out.append(apply_flow(f, resize_grid(grid, size), occ))
        return out

    def decode(self, z_warped: torch.Tensor, skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """z~ (B, C, h, w) -> images (B, 3, h * downsample, w * downsample) in [0, 1].

        Args:
            skips: only with `warp_skips=True`: the warped encoder features (see `warp_features`).
        """
        return self.decoder(z_warped, skips)

    def forward(self, x_ref: torch.Tensor, x_dri: torch.Tensor) -> dict[str, torch.Tensor | dict]:
        """Reconstruct x_dri from x_ref (stage-1 training).

        Returns:
            dict(prediction (B, 3, H, W), grid (B, h, w, 2), occlusion (B, 1, h, w), z_ref, z_warped
            (B, C, h, w), kp_ref, kp_dri).
        """
        feats = self.encoder(x_ref, return_features=True)
        grid, occ, kp_ref, kp_dri = self.flow(x_ref, x_dri)
        z_ref = feats[-1]
        z_warped = apply_flow(z_ref, grid, occ)
        skips = self.warp_features(feats, grid, occ) if self.warp_skips else None
        return {"prediction": self.decode(z_warped, skips), "grid": grid, "occlusion": occ, "z_ref": z_ref,
                "z_warped": z_warped, "kp_ref": kp_ref, "kp_dri": kp_dri}

    def generate(self, x_ref: torch.Tensor, grids: torch.Tensor, occlusions: torch.Tensor | None,
                 decode_chunk_size: int | None = None) -> torch.Tensor:
        """Stage-2 decoding: frames from sampled latent flows and occlusions, with one encode of x_ref.

        Args:
            x_ref: (B, 3, H, W) in [0, 1].
            grids: (B, N, h, w, 2) absolute backward grids at the latent size.
            occlusions: (B, N, 1, h, w) in [0, 1] (None = all visible).
            decode_chunk_size: decode at most this many frames at once (None = all).

        Returns:
            (B, N, 3, H, W) in [0, 1].
        """
        self._check_images(x_ref)
        b, n = grids.shape[:2]
        h, w = x_ref.shape[-2] // self.downsample, x_ref.shape[-1] // self.downsample
        if grids.shape != (b, n, h, w, 2) or b != x_ref.shape[0]:
            raise ValueError(f"grids must be (B={x_ref.shape[0]}, N, {h}, {w}, 2), got {tuple(grids.shape)}")
        if occlusions is not None and occlusions.shape != (b, n, 1, h, w):
            raise ValueError(f"occlusions must be ({b}, {n}, 1, {h}, {w}), got {tuple(occlusions.shape)}")
        feats = self.encoder(x_ref, return_features=True)
        if not self.warp_skips:
            feats = feats[-1:]
        flat_grids = grids.reshape(b * n, h, w, 2)
        flat_occ = None if occlusions is None else occlusions.reshape(b * n, 1, h, w)
        chunk = b * n if not decode_chunk_size else int(decode_chunk_size)
        frames = []
        for s in range(0, b * n, chunk):
            idx = torch.arange(s, min(s + chunk, b * n), device=grids.device) // n  # the reference of each frame
            fs = [f[idx] for f in feats]
            occ = None if flat_occ is None else flat_occ[s:s + chunk]
            warped = self.warp_features(fs, flat_grids[s:s + chunk], occ)
            frames.append(self.decode(warped[-1], warped if self.warp_skips else None))
        return torch.cat(frames, dim=0).view(b, n, *frames[0].shape[1:])


# ============================================================================================== VGG-19 features
_VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                     512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: tap name -> index in torchvision's `vgg19().features` (the ReLU after that conv)
VGG19_TAPS: dict[str, int] = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


class VGG19Features(nn.Module):
    """Our definition of torchvision's `vgg19().features` (37 layers, same indices, so `features.N.weight` keys load).

    `forward` takes images (B, 3, H, W) in [0, 1], applies the ImageNet mean/std normalisation and returns the five
    taps [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] (FOMM's perceptual-loss slices). The last three convs (30-34)
    exist only so that a torchvision file loads strictly; they are never run. relu5_1 needs H, W >= 16.
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        # Non-persistent: the state dict holds exactly torchvision's `features.*` keys.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps = sorted(VGG19_TAPS.values())
        feats = []
        for i in range(taps[-1] + 1):
            out = self.features[i](out)
            if i in taps:
                feats.append(out)
        return feats


def load_vgg19(path: str | os.PathLike) -> VGG19Features:
    """Load ImageNet VGG-19 weights into `VGG19Features` (frozen, eval mode).

    Accepts torchvision's `vgg19-dcbb9e9d.pth` (or any state dict with `features.N.weight/bias` keys; `classifier.*`
    is ignored), the same keys without the `features.` prefix, a `{"state_dict": ...}` wrapper, a DataParallel
    `module.` prefix, or a `.safetensors` file.

    Raises:
        MissingWeightsError: the file does not exist.
        InputError: the file is not a state dict, or its keys/shapes do not match VGG-19's features.
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"VGG-19 ImageNet weights not found; download torchvision's {VGG19_URL} "
                                  "and pass its path (e.g. lfae.loss vgg_weights)", p)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p))
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any read/unpickle failure means an unusable file
        raise InputError(f"cannot read VGG-19 weights ({e.__class__.__name__}: {e})", p) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError("VGG-19 weights file does not hold a state dict of tensors", p)
    sd: dict[str, torch.Tensor] = {}
    for key, val in obj.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("classifier."):
            continue
        sd[k if k.startswith("features.") else f"features.{k}"] = val
    model = VGG19Features()
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(v)} {name} (e.g. {', '.join(v[:3])})"
                 for name, v in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if v]
        raise InputError(f"not VGG-19 `features` weights: {'; '.join(parts)}", p)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    model.requires_grad_(False)
    return model.eval()


# ============================================================================================== losses
class ImagePyramid(nn.Module):
    """Anti-aliased image pyramid (FOMM `ImagePyramide`): {scale: image at that scale} for each scale in `scales`."""

    def __init__(self, scales: Sequence[float], channels: int = 3):
        super().__init__()
        self.scales = tuple(float(s) for s in scales)
        self.downs = nn.ModuleList(AntiAliasDownsample(channels, s) for s in self.scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [down(x) for down in self.downs]


def random_affine(batch: int, sigma: float, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """FOMM's random transform, affine part only: theta = [I | 0] + N(0, sigma^2) per entry -> (B, 2, 3)."""
    gen_device = generator.device if generator is not None else device
    noise = torch.randn((batch, 2, 3), generator=generator, device=gen_device, dtype=torch.float32) * sigma
    theta = noise.to(device) + torch.eye(2, 3, device=device)
    return theta.to(dtype or torch.get_default_dtype())


def _apply_affine(points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """p -> A p + b for points (B, ..., 2) and theta (B, 2, 3)."""
    a, t = theta[:, :, :2], theta[:, :, 2]
    shape = (theta.shape[0],) + (1,) * (points.ndim - 2) + (2,)
    return torch.einsum("bij,b...j->b...i", a, points) + t.view(shape)


class LFAELoss(nn.Module):
    """Stage-1 loss: pyramid reconstruction + keypoint equivariance (paper Eq. 2 and gap G5, spec §2.3).

    Reconstruction, with `vgg_weights` (a path to torchvision's VGG-19, or a `VGG19Features`): FOMM's pyramid
    perceptual loss sum_s sum_l w_l * mean |VGG_l(x^_s) - VGG_l(x_s)| over `scales` and the five taps relu1_1..relu5_1
    (target features detached, anti-aliased pyramid). Eq. 2 as printed (one layer) is `perceptual_weights` with a
    single non-zero entry and `scales=(1,)`. Without VGG weights (offline / tests) the stated substitute is used [A]:
    the same pyramid with sum_s w * (mean |x^_s - x_s| + mean |grad x^_s - grad x_s|) (forward differences along x and
    y), w = mean(perceptual_weights). `self.description` says which one is active.

    Equivariance (FOMM; not in the paper, G5 [A]): a random affine T (sigma_affine; FOMM also adds a TPS warp with
    sigma_tps 0.005 — we use the affine part only [A]) resamples x_dri; keypoints detected on T(x_dri), mapped back
    through T, must match those of x_dri (value loss, L1), and J_dri^-1 A J_T(x) must be the identity (Jacobian loss,
    when the model estimates Jacobians). A weight of 0 switches a term off.
    """

    def __init__(self, vgg_weights: str | os.PathLike | VGG19Features | None = None,
                 perceptual_weights: Sequence[float] = (10, 10, 10, 10, 10),
                 scales: Sequence[float] = (1, 0.5, 0.25, 0.125), equivariance_value: float = 10.0,
                 equivariance_jacobian: float = 10.0, sigma_affine: float = 0.05):
        super().__init__()
        self.perceptual_weights = tuple(float(w) for w in perceptual_weights)
        if len(self.perceptual_weights) != len(VGG19_TAPS):
            raise ValueError(f"perceptual_weights needs {len(VGG19_TAPS)} entries (relu1_1..relu5_1), "
                             f"got {len(self.perceptual_weights)}")
        self.scales = tuple(float(s) for s in scales)
        self.pyramid = ImagePyramid(self.scales)
        self.equivariance_value = float(equivariance_value)
        self.equivariance_jacobian = float(equivariance_jacobian)
        self.sigma_affine = float(sigma_affine)
        scale_txt = ", ".join(f"{s:g}" for s in self.scales)
        if vgg_weights is None:
            self.vgg = None
            self.substitute_weight = sum(self.perceptual_weights) / len(self.perceptual_weights)
            rec = (f"substitute reconstruction (no VGG-19 weights): pyramid L1 on pixels + L1 on image gradients, "
                   f"weight {self.substitute_weight:g} each, scales ({scale_txt})")
        else:
            vgg = vgg_weights if isinstance(vgg_weights, VGG19Features) else load_vgg19(vgg_weights)
            self.vgg = vgg.requires_grad_(False).eval()
            w_txt = ", ".join(f"{w:g}" for w in self.perceptual_weights)
            rec = (f"FOMM pyramid perceptual loss: VGG-19 relu1_1..relu5_1 weights ({w_txt}), scales ({scale_txt})")
        eq = (f"equivariance (affine only, sigma {self.sigma_affine:g}): value x{self.equivariance_value:g}, "
              f"jacobian x{self.equivariance_jacobian:g}")
        self.description = f"{rec}; {eq}"

    def train(self, mode: bool = True) -> LFAELoss:
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # frozen feature extractor
        return self

    def reconstruction(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The pyramid reconstruction term for images (B, 3, H, W) in [0, 1] (scalar)."""
        total = prediction.new_zeros(())
        b = prediction.shape[0]
        for down, s in zip(self.pyramid.downs, self.scales, strict=True):
            both = down(torch.cat([prediction, target.detach()], dim=0))
            if self.vgg is not None:
                if min(both.shape[-2:]) < 16:
                    raise ValueError(f"VGG-19 perceptual loss needs >= 16 px at every scale; scale {s:g} of "
                                     f"{tuple(prediction.shape[-2:])} gives {tuple(both.shape[-2:])}")
                for w, f in zip(self.perceptual_weights, self.vgg(both), strict=True):
                    if w:
                        total = total + w * (f[:b] - f[b:].detach()).abs().mean()
            else:
                p, t = both[:b], both[b:]
                l1 = (p - t).abs().mean()
                gx = ((p[..., :, 1:] - p[..., :, :-1]) - (t[..., :, 1:] - t[..., :, :-1])).abs().mean()
                gy = ((p[..., 1:, :] - p[..., :-1, :]) - (t[..., 1:, :] - t[..., :-1, :])).abs().mean()
                total = total + self.substitute_weight * (l1 + gx + gy)
        return total

    def equivariance(self, model: LFAE, x: torch.Tensor, kp: dict[str, torch.Tensor],
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(value loss, Jacobian loss), unweighted, for images x (B, 3, H, W) with keypoints kp = detector(x)."""
        b, _, h, w = x.shape
        theta = random_affine(b, self.sigma_affine, generator, device=x.device, dtype=x.dtype)
        # Backward warp: pixel p of T(x) reads x at A p + b, so keypoints of T(x) map back through the same affine.
        sample_at = _apply_affine(identity_grid(h, w, b, device=x.device, dtype=x.dtype), theta)
        x_t = F.grid_sample(x, sample_at, mode="bilinear", padding_mode="reflection", align_corners=True)
        kp_t = model.kp_detector(x_t)
        value = (kp["value"] - _apply_affine(kp_t["value"], theta)).abs().mean()
        jac = x.new_zeros(())
        if "jacobian" in kp and "jacobian" in kp_t:
            # d(A p + b)/dp = A, so the Jacobian of T(x)'s keypoint in x's frame is A J_t (FOMM's chain rule).
            mapped = theta[:, None, :, :2] @ kp_t["jacobian"]
            eye = torch.eye(2, device=x.device, dtype=x.dtype)
            jac = (eye - _inverse_2x2(kp["jacobian"]) @ mapped).abs().mean()
        return value, jac

    def forward(self, model: LFAE, x_ref: torch.Tensor, x_dri: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Run `model(x_ref, x_dri)` and return (loss, logs).

        Args:
            generator: for the random equivariance transforms (library code never reseeds globally).

        Returns:
            loss (scalar tensor) and logs: floats "loss", "reconstruction", "equivariance_value",
            "equivariance_jacobian", "l1" (plain full-resolution pixel L1, a monitor only), "occlusion_mean", and the
            detached tensor "prediction".
        """
        out = model(x_ref, x_dri)
        pred = out["prediction"]
        rec = self.reconstruction(pred, x_dri)
        loss = rec
        eq_v = eq_j = pred.new_zeros(())
        use_jac = self.equivariance_jacobian != 0 and "jacobian" in out["kp_dri"]
        if self.equivariance_value != 0 or use_jac:
            value, jac = self.equivariance(model, x_dri, out["kp_dri"], generator)
            eq_v = self.equivariance_value * value
            eq_j = self.equivariance_jacobian * jac if use_jac else eq_j
            loss = loss + eq_v + eq_j
        logs: dict[str, float | torch.Tensor] = {
            "loss": float(loss.detach()), "reconstruction": float(rec.detach()),
            "equivariance_value": float(eq_v.detach()), "equivariance_jacobian": float(eq_j.detach()),
            "l1": float((pred.detach() - x_dri).abs().mean()),
            "occlusion_mean": float(out["occlusion"].detach().mean()), "prediction": pred.detach(),
        }
        return loss, logs

