"""Checkpoint loading shared by the metric backbones: unwrap, strip `module.`, strict load, map by order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from dancegen.errors import DanceGenError


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.pth`/`.pt` state dict on CPU: unwraps `{"state_dict": ...}` and strips a DataParallel `module.`.

    Raises:
        DanceGenError: the file is not a PyTorch checkpoint holding a state dict.
    """
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise DanceGenError(f"cannot read as a PyTorch checkpoint ({e.__class__.__name__}: {e})", path) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DanceGenError("checkpoint does not hold a state dict of tensors", path)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def fill_bn_counters(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the `num_batches_tracked` counters that checkpoints saved before torch 0.4.1 lack (they are unused in eval)."""
    sd = dict(state_dict)
    for key, buf in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros_like(buf)
    return sd


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike = "") -> nn.Module:
    """`load_state_dict(strict=True)` with a one-line DanceGenError naming missing/unexpected/mis-shaped keys."""
    sd = fill_bn_counters(model, state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise DanceGenError(f"weights do not fit {model.__class__.__name__}: {'; '.join(parts)}", source or None)
    model.load_state_dict(sd, strict=True)
    return model


def map_by_order(model: nn.Module, tensors: Iterable[torch.Tensor], source: str = "") -> dict[str, torch.Tensor]:
    """Pair a foreign network's tensors with `model`'s state dict entries in definition order, checking every shape.

    Used to put the weights of a TorchScript copy (whose parameter names differ) onto our own definition. BN
    `num_batches_tracked` counters are skipped on both sides.

    Raises:
        DanceGenError: the counts or any shape differ.
    """
    own = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [t for t in tensors if t.dim() > 0 or t.dtype.is_floating_point]
    if len(own) != len(theirs):
        raise DanceGenError(f"cannot map {len(theirs)} tensors onto {len(own)} of {model.__class__.__name__}", source or None)
    out = {}
    for (key, ref), t in zip(own, theirs, strict=True):
        if tuple(t.shape) != tuple(ref.shape):
            raise DanceGenError(f"tensor for {key} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}", source or None)
        out[key] = t.detach().clone()
    return out


def state_dict_signature(model_or_sd: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """`{key: shape}` of a model or state dict, the form of the committed golden key lists."""
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    return {k: list(v.shape) for k, v in sd.items()}
