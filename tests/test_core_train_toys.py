"""Tiny models, data and losses shared by tests/test_core_train*.py (no tests here)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from dancegen.core.train import Trainer
from dancegen.core.train_config import OptimConfig, TrainLoopConfig


class TinyNet(nn.Module):
    """4 -> 16 -> 2 MLP with optional dropout and batch norm (both use RNG / buffers, which resume must restore)."""

    def __init__(self, dropout: float = 0.0, norm: bool = False):
        super().__init__()
        layers = [nn.Linear(4, 16), nn.Tanh()]
        if norm:
            layers.append(nn.BatchNorm1d(16))
        if dropout:
            layers.append(nn.Dropout(dropout))
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


class Regression(torch.utils.data.Dataset):
    """y = A x + 0.1 sin(3 x_0): learnable by TinyNet. `jitter` adds numpy-RNG noise to x per read."""

    def __init__(self, n: int = 24, jitter: float = 0.0):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        a = torch.randn(4, 2, generator=g)
        self.y = self.x @ a + 0.1 * torch.sin(3 * self.x[:, :1])
        self.jitter = jitter

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.jitter:
            x = x + torch.from_numpy(np.random.normal(0.0, self.jitter, size=4).astype(np.float32))
        return {"x": x, "y": self.y[i], "index": i}


def mse_loss(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def noisy_loss(model, batch):
    """Uses the torch and Python RNGs, and returns an extra logged scalar."""
    x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
    pred = model(x)
    loss = ((pred - batch["y"]) ** 2).mean() * (1.0 + 0.01 * random.random())
    return loss, {"mae": (pred - batch["y"]).abs().mean()}


def config(out, **kw) -> TrainLoopConfig:
    optim = kw.pop("optim", None) or OptimConfig(lr=1e-2)
    base = dict(max_steps=10, batch_size=4, device="cpu", log_every=1, checkpoint_every=1000, output_dir=str(out))
    return TrainLoopConfig(**{**base, **kw}, optim=optim)


def build(out, loss_fn=noisy_loss, data=None, model_kw=None, seed=0, **kw) -> Trainer:
    """A seeded tiny model + trainer (the caller seeds, as api.py does)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = TinyNet(**(model_kw or {}))
    data = Regression() if data is None else data
    return Trainer(model, loss_fn, data, config(out, **kw), logger=lambda step, record: None)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
