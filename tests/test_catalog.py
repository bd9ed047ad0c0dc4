"""`dancegen.catalog`: every bundled folder with its true size, metric entries from the weights registry, filters,
local detection through a fake Hugging Face cache, the table's shape, and offline, torch-free listing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dancegen import catalog
from dancegen.catalog import ModelEntry, as_json, format_details, format_table, list_models
from dancegen.errors import InputError
from dancegen.runtime import BUNDLED_ROOT


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No weights folder or Hugging Face cache of this machine leaks into the entries' `local`."""
    monkeypatch.setenv("DANCEGEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DANCEGEN_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-empty"))


def _by_name(entries):
    return {e.name: e for e in entries}


def test_every_bundled_folder_is_listed_with_its_true_size():
    folders = sorted(p for p in BUNDLED_ROOT.iterdir() if p.is_dir())
    assert {"dyl-tiny", "dyl-tiny-framewise", "dab-tiny", "synthpose-tiny"} <= {p.name for p in folders}
    bundled = _by_name(list_models(kind="bundled"))
    assert set(bundled) == {p.name for p in folders}
    for folder in folders:
        e = bundled[folder.name]
        assert e.size_bytes == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert e.local == str(folder) and e.source == f"dancegen/assets/models/{folder.name}"
        assert e.used_by and e.licence.startswith("Apache-2.0")


def test_metric_entries_are_the_weights_registry(tmp_path, monkeypatch):
    from dancegen.metrics import weights as mw

    files = _by_name(list_models(kind="file"))
    for spec in mw.WEIGHTS.values():
        e = files[spec.name]
        assert (e.source, e.licence, e.kind) == (spec.url, spec.licence, "file")
        users = tuple(u.strip() for u in spec.used_by.split(","))
        assert e.used_by[: len(users)] == users
        assert spec.filename in e.description and e.local is None and e.size_bytes is None
        if spec.wheel or spec.direct:
            assert f"python -m dancegen.metrics.weights fetch {spec.name}" in e.how_to_get
    assert "dance-any-beat" in files["wav2clip"].used_by  # DAB's Wav2CLIP branch reads the same file
    # read from the registry at call time (not a copy): a new spec appears, a file in the weights folder is local
    fake = mw.WeightSpec("fake-net", "fake-0123abcd.pth", "https://example.org/fake.pth", "MIT (test)", used_by="fvd")
    monkeypatch.setitem(mw.WEIGHTS, "fake-net", fake)
    monkeypatch.setenv("DANCEGEN_WEIGHTS_DIR", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "fake-0123abcd.pth").write_bytes(b"x" * 1234)
    e = _by_name(list_models(kind="file"))["fake-net"]
    assert e.local == str(tmp_path / "w" / "fake-0123abcd.pth") and e.size_bytes == 1234
    assert (e.source, e.licence, e.used_by) == (fake.url, fake.licence, ("fvd",))


def test_filters():
    everything = list_models()
    assert [e.kind for e in everything] == sorted((e.kind for e in everything), key=catalog.KINDS.index)
    for kind in catalog.KINDS:
        some = list_models(kind=kind)
        assert some and all(e.kind == kind for e in some)
    assert sum(len(list_models(kind=k)) for k in catalog.KINDS) == len(everything)
    assert len({e.name for e in everything}) == len(everything)  # names are unique
    assert {e.name for e in list_models(used_by="clip-music")} == {"clip-vit-b32", "wav2clip"}
    dab = {e.name for e in list_models(used_by="Dance_Any_Beat")}  # any case, `_` or `-`
    assert {"dab-tiny", "clap-htsat-unfused", "wav2clip", "clip-vit-b32"} <= dab
    assert {e.name for e in list_models(kind="bundled", used_by="animate")} == {"dyl-tiny"}
    assert list_models(used_by="no-such-user") == []
    with pytest.raises(InputError, match="unknown model kind 'weird'.*bundled, hub, file"):
        list_models(kind="weird")


def test_fake_hf_cache_marks_that_repo_local(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--laion--clap-htsat-unfused" / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "clap"}')
    (snap / "pytorch_model.bin").write_bytes(b"\0" * 4096)
    (cache / "models--laion--clap-htsat-unfused" / "refs").mkdir()
    (cache / "models--laion--clap-htsat-unfused" / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = _by_name(list_models(kind="hub"))
    clap = hub.pop("clap-htsat-unfused")
    assert clap.local == str(snap) and clap.size_bytes == 4096 + len('{"model_type": "clap"}')
    assert clap.approx_size is None and clap.size_text == "4.12 kB"
    assert all(e.local is None for e in hub.values())
    assert catalog.cached_snapshots(tmp_path / "missing") == {}  # no cache folder: nothing local, no error


def test_table_has_one_line_per_entry_within_119_columns():
    entries = list_models()
    lines = format_table(entries).splitlines()
    assert len(lines) == len(entries) + 1 and lines[0].split()[:3] == ["NAME", "KIND", "SIZE"]
    assert max(len(line) for line in lines) <= 119
    for e, line in zip(entries, lines[1:], strict=True):
        assert line.split()[:2] == [e.name, e.kind]
    long = ModelEntry("n" * 60, "file", "s" * 300, "L" * 80, approx_size="~1 GB", used_by=("u" * 50,) * 4)
    lines = format_table([long, *entries[:2]]).splitlines()
    assert len(lines) == 4 and max(len(line) for line in lines) <= 119 and "…" in lines[1]
    details = format_details(entries)
    assert all(f"  source:  {e.source}" in details for e in entries)
    assert json.loads(as_json(entries)) == [dataclasses.asdict(e) | {"used_by": list(e.used_by)} for e in entries]


def test_hub_ids_and_files_agree_with_the_code_that_loads_them():
    from dancegen.core.weights import MODEL_KINDS
    from dancegen.flow import raft
    from dancegen.methods.dance_any_beat import config as dab_config
    from dancegen.methods.dance_any_beat import lfae, music
    from dancegen.methods.dance_your_latents import config as dyl_config
    from dancegen.metrics.backbones import clip, wav2clip

    def default(cls, name):
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    hub_ids = {e.source for e in list_models(kind="hub")}
    code_ids = {hub for hub, _, _ in MODEL_KINDS.values() if hub} | {
        music.DEFAULT_CLAP, wav2clip.CS_CLIP_MODEL, clip.DEFAULT_CLIP, default(dyl_config.ModelConfig, "base"),
        default(dab_config.MusicConfig, "clip")}
    assert code_ids <= hub_ids
    assert catalog.RAFT_FILE == raft.DEFAULT_RAFT_WEIGHTS
    assert catalog.RAFT_URL == raft.RAFT_LARGE_WEIGHTS[catalog.RAFT_FILE]
    assert catalog.VGG19_URL == lfae.VGG19_URL


def test_listing_is_offline_and_imports_no_torch():
    code = ("import sys, dancegen.catalog as c; c.main([]); c.main(['--long']); c.main(['--json']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.rstrip().endswith("NO-TORCH") and out.startswith("NAME")


def test_module_main_prints_the_table(capsys):
    assert catalog.main(["--kind", "bundled"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("NAME") and len(out) == 1 + len(list_models(kind="bundled"))


def test_cli_weights_list_prints_the_catalog():
    from typer.testing import CliRunner

    from dancegen.cli import app

    res = CliRunner().invoke(app, ["weights", "list", "--kind", "bundled"])
    assert res.exit_code == 0 and "dyl-tiny" in res.output and "dab-tiny" in res.output
    assert "sd15" not in res.output.split()
    res = CliRunner().invoke(app, ["weights", "list", "--kind", "nope"])
    assert res.exit_code == 2 and "unknown model kind" in res.output
