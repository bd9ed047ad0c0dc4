"""LPIPS v0.1 (Zhang et al., CVPR18) with AlexNet or VGG16 trunks, defined here after richzhang/PerceptualSimilarity.

Design of the `lpips` package (version 0.1): a fixed scaling layer, the ReLU outputs of five trunk stages
(AlexNet relu1..relu5, VGG16 relu1_2..relu5_3), each unit-normalised over channels, squared differences weighted by
a 1x1 "lin" conv per stage, spatially averaged and summed. Parameter names: the trunk is a `features` Sequential with
torchvision's indices (so `alexnet-owt-7be5be79.pth` / `vgg16-397923af.pth` load; their `classifier.*` is unused),
the heads are `lin{k}.model.1.weight` as in the `lpips` wheel's `weights/v0.1/{alex,vgg}.pth`.
Written from the reference design; no code is copied.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from dancegen.errors import DanceGenError

#: trunk name -> (conv layout of torchvision `features`, stage-end indices (exclusive), stage channels)
TRUNKS = {
    "alex": {
        "convs": {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
                  10: (256, 256, 3, 1, 1)},
        "pools": {2, 5},
        "stages": (2, 5, 8, 10, 12),
        "channels": (64, 192, 384, 256, 256),
    },
    "vgg": {
        "convs": {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
                  14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512),
                  28: (512, 512)},
        "pools": {4, 9, 16, 23},
        "stages": (4, 9, 16, 23, 30),
        "channels": (64, 128, 256, 512, 512),
    },
}


class LPIPSTrunk(nn.Module):
    """torchvision AlexNet/VGG16 `features` up to the last LPIPS tap; returns the five stage outputs."""

    def __init__(self, net: str):
        super().__init__()
        if net not in TRUNKS:
            raise ValueError(f"net must be one of {sorted(TRUNKS)}, got {net!r}")
        spec = TRUNKS[net]
        layers: list[nn.Module] = []
        for i in range(spec["stages"][-1]):
            if i in spec["convs"]:
                c = spec["convs"][i]
                cin, cout, k, s, p = c if len(c) == 5 else (*c, 3, 1, 1)
                layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif i in spec["pools"]:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2) if net == "alex" else nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.stages = spec["stages"]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, start = [], 0
        for end in self.stages:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs


class ScalingLayer(nn.Module):
    """The fixed input shift/scale of LPIPS v0.1 (buffers `shift`, `scale`)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """`model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))`: the key is `model.1.weight` as in the wheel."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt((x * x).sum(dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS distance. `forward(a, b)` takes `(B, 3, H, W)` in [-1, 1] and returns `(B,)` distances."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net_name = net
        self.scaling_layer = ScalingLayer()
        self.net = LPIPSTrunk(net)
        for k, c in enumerate(TRUNKS[net]["channels"]):
            self.add_module(f"lin{k}", NetLinLayer(c))

    @property
    def lins(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(TRUNKS[self.net_name]["channels"]))]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Both images go through the trunk in one batch; same result as two passes, half the Python overhead.
        feats = self.net(self.scaling_layer(torch.cat([a, b], 0)))
        n = a.shape[0]
        total = 0.0
        for f, lin in zip(feats, self.lins, strict=True):
            f = _unit_normalize(f)
            total = total + lin((f[:n] - f[n:]) ** 2).mean(dim=(2, 3))
        return total[:, 0]

    def load_weights(self, trunk_state: Mapping[str, torch.Tensor], lin_state: Mapping[str, torch.Tensor],
                     source: str = "") -> LPIPS:
        """Load a torchvision ImageNet file (`features.*`; `classifier.*` ignored) and an LPIPS head file, strictly."""
        from dancegen.metrics.backbones.common import load_strict

        extra = [k for k in trunk_state if not k.startswith(("features.", "classifier."))]
        if extra:
            raise DanceGenError(f"not a torchvision {self.net_name} state dict (unexpected keys {extra[:3]})",
                                source or None)
        feats = {k[len("features."):]: v for k, v in trunk_state.items() if k.startswith("features.")}
        load_strict(self.net.features, feats, source)
        lins = {k: v for k, v in lin_state.items()}
        for k, lin in enumerate(self.lins):
            load_strict(lin, {kk[len(f"lin{k}."):]: v for kk, v in lins.items() if kk.startswith(f"lin{k}.")}, source)
        unknown = [k for k in lins if not k.startswith(tuple(f"lin{k}." for k in range(len(self.lins))))]
        if unknown:
            raise DanceGenError(f"not an LPIPS {self.net_name} head file (unexpected keys {unknown[:3]})", source or None)
        return self
