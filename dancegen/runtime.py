"""Device choice and seeding. Only cli.py and api.py seed globally (house-style.md §6)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dancegen.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")

#: Where the bundled models live (dancegen/assets/models/<name>): here, low enough for core/ and the domain libraries.
BUNDLED_ROOT = Path(__file__).resolve().parent / "assets" / "models"


ALLOW_DOWNLOAD_ENV = "DANCEGEN_ALLOW_DOWNLOAD"
"""Set to 1 / true: like `--allow-download` on every verb."""


def downloads_allowed(flag: bool | None = None) -> bool:
    """True when the caller allowed downloads (`flag`) or $DANCEGEN_ALLOW_DOWNLOAD is set to a true value."""
    return bool(flag) or os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def hub_offline_mode(active: bool = True) -> Iterator[None]:
    """While active, the Hugging Face libraries run as under ``HF_HUB_OFFLINE=1``: no request leaves the machine.

    ``local_files_only=True`` alone is not enough: huggingface_hub builds request headers even for a cache lookup,
    and that fetches a registry from the Hub (a DNS lookup and an HTTPS request per process). huggingface_hub reads
    its offline switch from ``huggingface_hub.constants`` on every call, so it is set there for the duration and
    restored afterwards; the environment is left alone (its ``HF_HUB_OFFLINE`` is the user's own setting).
    """
    if not active:
        yield
        return
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers and transformers
        yield
        return
    before = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = before


def resolve_device(device: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is not available is an InputError."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise InputError(f"--device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but CUDA is not available on this machine")
    if device == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps was asked for, but MPS is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (if already imported) torch."""
    import sys

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def dancegen_home() -> str:
    """Where fetched models and caches live: $DANCEGEN_HOME, default ~/.cache/dancegen."""
    return os.environ.get("DANCEGEN_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "dancegen")
