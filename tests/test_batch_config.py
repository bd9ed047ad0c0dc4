"""Resumable batches, sharding, manifests, and strict typed config loading."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from dancegen.config import load_config, save_config
from dancegen.errors import InputError
from dancegen.io.batch import BatchItem, parse_shard, read_manifest, run_batch, shard_items


def _items(tmp_path, n=7):
    return [BatchItem(id=f"clip{i:02d}", output=tmp_path / f"clip{i:02d}.txt") for i in range(n)]


def test_shards_partition_the_job():
    items = [BatchItem(id=str(i), output=None) for i in range(10)]
    shards = [shard_items(items, (k, 3)) for k in (1, 2, 3)]
    ids = [it.id for s in shards for it in s]
    assert sorted(ids) == sorted(it.id for it in items) and len(ids) == len(set(ids))
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(InputError):
            parse_shard(bad)


def test_resume_after_crash_skips_finished(tmp_path):
    calls, crashed = [], []

    def work(item):
        calls.append(item.id)
        if item.id == "clip03" and not crashed:
            crashed.append(True)
            raise RuntimeError("simulated crash")
        item.output.write_text("ok")

    with pytest.raises(RuntimeError):
        run_batch(_items(tmp_path), work, log_dir=tmp_path)
    assert calls == ["clip00", "clip01", "clip02", "clip03"]
    calls.clear()
    rep = run_batch(_items(tmp_path), work, log_dir=tmp_path)
    assert rep.skipped == ["clip00", "clip01", "clip02"] and calls == ["clip03", "clip04", "clip05", "clip06"]
    log = [json.loads(x) for x in (tmp_path / ".dancegen-batch.jsonl").read_text().splitlines()]
    assert log[3]["status"] == "crashed" and log[-1]["status"] == "done"


def test_input_errors_are_logged_and_batch_continues(tmp_path):
    def work(item):
        if item.id == "clip01":
            raise InputError("bad clip", item.id)
        item.output.write_text("ok")

    rep = run_batch(_items(tmp_path, 3), work)
    assert rep.failed == {"clip01": "clip01: bad clip"} and rep.done == ["clip00", "clip02"] and not rep.ok


def test_manifest_csv_and_jsonl(tmp_path):
    (tmp_path / "m.csv").write_text("id,ref,seed\na,x.png,1\nb,y.png,2\n")
    assert [r["ref"] for r in read_manifest(tmp_path / "m.csv")] == ["x.png", "y.png"]
    (tmp_path / "m.jsonl").write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        read_manifest(tmp_path / "m.jsonl")


@dataclass
class _Train:
    lr: float = 1e-4
    steps: int = 10

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError("train.steps must be positive")


@dataclass
class _Recipe:
    seed: int = 0
    name: str = "x"
    train: _Train = field(default_factory=_Train)


def test_config_yaml_and_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("description: demo\nseed: 3\ntrain:\n  lr: 0.5\n")
    cfg = load_config(_Recipe, p, ["train.steps=7"])
    assert isinstance(cfg, _Recipe) and cfg.seed == 3 and cfg.train.lr == 0.5 and cfg.train.steps == 7
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Recipe, tmp_path / "resolved.yaml") == cfg


@pytest.mark.parametrize("text,overrides,message", [
    ("train:\n  lrr: 1\n", [], "unknown key 'train.lrr'"),
    ("seed: abc\n", [], "seed"),
    ("seed: [1\n", [], "not valid YAML"),
    ("", ["train.steps=0"], "train.steps must be positive"),
    ("", ["nokey=1"], "nokey"),
])
def test_config_errors_name_key_and_file(tmp_path, text, overrides, message):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as ei:
        load_config(_Recipe, p, overrides)
    assert message in str(ei.value)
    if not overrides:
        assert str(p) in str(ei.value)
