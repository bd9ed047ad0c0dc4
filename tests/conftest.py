"""Test setup: offline, seeded, small. No test touches the network (sockets are blocked)."""

from __future__ import annotations

import os
import socket

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Under `pytest -n 2` (make test) each of the two workers gets one thread: two workers x two threads on a 2-core
# machine made tiny-UNet forwards 30x slower through contention. A single process keeps two threads.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


class _NoNetwork(socket.socket):
    def connect(self, address):  # noqa: D401
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"tests must not use the network (tried to connect to {address})")
        return super().connect(address)


socket.socket = _NoNetwork  # type: ignore[misc]


def pytest_configure(config):
    """Compile librosa's numba functions once, in the main process, before `pytest -n 2` starts its workers.

    librosa caches them on disk (`cache=True`); two workers compiling the same guvectorized function at once can pair
    the cache files of different processes and segfault later (numba/numba#10128, librosa/librosa#1998). On a fresh
    install that crashed `make test` in `beat_track`; a warm cache is only read, which is safe.
    """
    if hasattr(config, "workerinput"):  # an xdist worker: the main process has warmed the cache
        return
    import importlib.util

    if importlib.util.find_spec("librosa") is None:  # e.g. the GPU machine running only `pytest -m gpu`
        return
    import numpy as np

    from dancegen.audio.features import frame_features
    from dancegen.audio.song import Song

    sr = 22050
    t = np.arange(3 * sr) / sr
    clicks = (0.5 * np.sin(2 * np.pi * 440 * t) * (np.mod(t, 0.5) < 0.05)).astype(np.float32)
    frame_features(Song(clicks, sr), fps=10.0)  # mel, onset strength, tempogram, beat tracking

    import librosa

    librosa.onset.onset_detect(y=clicks, sr=sr, units="frames")


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("DANCEGEN_RUN_SLOW") == "1"
    has_cuda = False
    if any("gpu" in it.keywords for it in items):
        import torch

        has_cuda = torch.cuda.is_available()
    for it in items:
        if "slow" in it.keywords and not run_slow:
            it.add_marker(pytest.mark.skip(reason="slow: set DANCEGEN_RUN_SLOW=1 (make test-slow)"))
        if "gpu" in it.keywords and not has_cuda:
            it.add_marker(pytest.mark.skip(reason="needs CUDA"))


def skip_or_fail_without_models(reason: str):
    """Skip a test whose fetched models are missing, except under `make test` (DANCEGEN_REQUIRE_MODELS=1), where the
    install step fetched them and a missing model is a real failure."""
    if os.environ.get("DANCEGEN_REQUIRE_MODELS") == "1":
        pytest.fail(f"{reason} (DANCEGEN_REQUIRE_MODELS=1: `make install` should have fetched them)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def models():
    """The default pose backend's models (BlazePose); skips, or fails under `make test`, when they are missing."""
    from dancegen.errors import MissingWeightsError
    from dancegen.pose.backends.fetch import require_blazepose

    try:
        return require_blazepose()
    except MissingWeightsError as e:
        skip_or_fail_without_models(f"BlazePose models not installed: {e}")
