"""No verb touches the network unless the user allowed downloads (issue #15).

The rest of the suite runs with HF_HUB_OFFLINE=1 (conftest), which hides what a user's machine does: there,
huggingface_hub builds request headers even for a `local_files_only` cache lookup, and building them fetched a
registry from the Hub (a DNS lookup and an HTTPS request). These tests undo the suite's offline switch, point the HF
cache at an empty folder and record every DNS lookup and connection attempt.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
from tests_helpers import save_tiny_clip
from typer.testing import CliRunner

from dancegen.cli import app
from dancegen.errors import MissingWeightsError
from dancegen.io.video import write_video

runner = CliRunner()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """A machine that may go online (no HF_HUB_OFFLINE), with an empty HF cache; returns the list of network
    attempts (each is refused)."""
    import huggingface_hub.constants as hub_constants
    import huggingface_hub.utils._detect_agent as detect_agent

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DANCEGEN_ALLOW_DOWNLOAD"):
        monkeypatch.delenv(var, raising=False)
    hub = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub / "hub"))
    if hasattr(hub_constants, "AGENT_HARNESSES_PATH"):
        monkeypatch.setattr(hub_constants, "AGENT_HARNESSES_PATH", str(hub / "agent-harnesses.json"))
    monkeypatch.setattr(detect_agent, "_registry", None, raising=False)  # its in-process cache of the fetch
    attempts: list = []

    def getaddrinfo(host, *a, **k):
        attempts.append(("dns", host))
        raise OSError(f"test: no network ({host})")

    def connect(self, address):
        attempts.append(("connect", address))
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def test_the_recorder_sees_what_huggingface_hub_does(online):
    """Control: without dancegen's guard, building hub request headers does go out (so the tests below can fail)."""
    from huggingface_hub.utils import build_hf_headers

    build_hf_headers()
    assert online, "huggingface_hub no longer fetches anything for its headers; this control needs a new probe"


@pytest.fixture
def clip_video(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, fps=8)
    return tmp_path / "v.mp4"


def test_clip_text_with_a_hub_id_not_cached_is_one_line_and_offline(online, clip_video, tmp_path):
    r = runner.invoke(app, ["evaluate", "-m", "clip-text", "--pred", str(clip_video), "--prompt", "a dancer",
                            "--clip-model", "openai/clip-vit-large-patch14", "-o", str(tmp_path / "r.json")])
    assert r.exit_code == 2, r.output
    assert "not available locally" in r.output and "Traceback" not in r.output
    assert online == []
    assert not (tmp_path / "r.json").exists()


def test_clip_text_with_a_local_folder_is_offline(online, clip_video, tmp_path):
    save_tiny_clip(tmp_path / "clip")
    r = runner.invoke(app, ["evaluate", "-m", "clip-text,clip-frame", "--pred", str(clip_video), "--prompt",
                            "a dancer", "--clip-model", str(tmp_path / "clip"), "-o", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.json").is_file()
    assert online == []


def test_resolving_an_uncached_hub_id_is_offline(online, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as hub_constants

    from dancegen.core.weights import resolve_model

    seen = []

    def lookup(repo_id, **kw):  # records whether huggingface_hub was offline during the cache lookup
        seen.append(hub_constants.HF_HUB_OFFLINE)
        raise FileNotFoundError(repo_id)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lookup)
    with pytest.raises(MissingWeightsError, match="downloads not allowed"):
        resolve_model("someone/not-cached", kind="sd15")
    assert online == [] and seen == [True]


@pytest.mark.parametrize("allowed", [False, True])
def test_every_verb_runs_offline_unless_downloads_are_allowed(online, monkeypatch, allowed):
    """The CLI's verb wrapper: huggingface_hub is offline while a verb runs, unless the user allowed downloads."""
    import huggingface_hub.constants as hub_constants

    import dancegen.catalog as catalog

    seen = []
    monkeypatch.setattr(catalog, "list_models", lambda *a: seen.append(hub_constants.HF_HUB_OFFLINE) or [])
    if allowed:
        monkeypatch.setenv("DANCEGEN_ALLOW_DOWNLOAD", "1")
    r = runner.invoke(app, ["weights", "list"])
    assert r.exit_code == 0, r.output
    assert seen == [not allowed] and hub_constants.HF_HUB_OFFLINE is False


def test_a_generating_verb_with_an_uncached_hub_model_is_offline(online, tmp_path):
    r = runner.invoke(app, ["text2character", "a dancer", "--motion", "a person waves", "--model",
                            "someone/not-cached", "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code == 2, r.output
    assert "someone/not-cached" in r.output and "Traceback" not in r.output
    assert online == []


def test_the_guard_is_lifted_afterwards(online, clip_video, tmp_path):
    """The offline switch is dancegen's for the verb's duration only: the library's own setting comes back."""
    import huggingface_hub.constants as hub_constants

    r = runner.invoke(app, ["evaluate", "-m", "clip-frame", "--pred", str(clip_video), "--clip-model", "x/y"])
    assert r.exit_code == 2 and "not available locally" in r.output  # it ran, offline, and failed cleanly
    assert hub_constants.HF_HUB_OFFLINE is False
