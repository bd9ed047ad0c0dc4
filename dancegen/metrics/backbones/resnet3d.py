"""3D ResNet-50 (Hara et al., CVPR18; Kinetics-400) for DisCo's FID-VID ("FVD-3DRN50"), defined here.

Follows kenshohara/3D-ResNets-PyTorch as vendored by DisCo (`tool/metrics/resnet3d.py`): Bottleneck blocks
[3, 4, 6, 3], shortcut type B (1x1x1 conv + BN projection), conv1 7x7x7 stride (1,2,2), max-pool 3 stride 2, global
average pool, fc 2048->400 (dropped for features). Parameter names match `resnet-50-kinetics.pth` after its
DataParallel `module.` prefix is stripped (as DisCo does). DisCo's input protocol: frames resized to 112x112 (PIL
bicubic), the ActivityNet pixel mean [114.7748, 107.7354, 99.4750] subtracted on the 0-255 scale (no std), clips of
16 frames (the last clip padded with the last frame), features averaged over a video's clips.
Written from the reference design; no code is copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 2048
NUM_CLASSES = 400
INPUT_SIZE = 112
CLIP_FRAMES = 16
PIXEL_MEAN = (114.7748, 107.7354, 99.4750)


class Bottleneck3D(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual, inplace=True)


class ResNet3D(nn.Module):
    """`features(x)` -> `(B, 2048)`; `forward(x)` -> `(B, 400)` logits. Input `(B, 3, 16, 112, 112)` mean-subtracted."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = NUM_CLASSES):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.fc = nn.Linear(512 * Bottleneck3D.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm3d(planes * 4))
        layers = [Bottleneck3D(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck3D(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool3d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # The reference's AvgPool3d((ceil(T/16), ceil(S/32), ceil(S/32))) covers the whole 1x4x4 map at 16x112x112.
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
