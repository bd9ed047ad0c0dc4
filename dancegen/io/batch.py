"""Resumable batch jobs: a list of items, each with one output path, run in shards, finished items skipped.

Every verb that takes folders uses this, so shell loops and job arrays just work:

    dancegen extract-pose videos/ -o poses/ --shard 2/4     # the 2nd of 4 workers

An item is finished when its output exists; outputs are written atomically, so a crash leaves either a finished
output or nothing, and a rerun picks up where it stopped. A JSON-lines log (`<out>/.dancegen-batch.jsonl`) records
each item's status, time and error, for people and for `--retry-failed`-style tooling.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dancegen.errors import DanceGenError, InputError

LOG_NAME = ".dancegen-batch.jsonl"


@dataclass
class BatchItem:
    """One unit of work: a stable id, its inputs, and the output that marks it finished."""

    id: str
    output: Path
    inputs: dict = field(default_factory=dict)


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    results: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped (already finished), {len(self.failed)} failed"


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse `K/N` (1-based: `1/4` .. `4/4`) into `(k, n)`; None passes through."""
    if text is None or text == "":
        return None
    try:
        k_s, n_s = text.split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise InputError(f"--shard must look like K/N (e.g. 1/4), got {text!r}") from None
    if n < 1 or not 1 <= k <= n:
        raise InputError(f"--shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_items(items: Iterable[BatchItem], shard: tuple[int, int] | None) -> list[BatchItem]:
    """The items of shard `k` of `n`: every n-th item of the id-sorted list, so shards never overlap."""
    ordered = sorted(items, key=lambda it: it.id)
    if len({it.id for it in ordered}) != len(ordered):
        raise InputError("batch items have duplicate ids (two inputs would write the same output)")
    if shard is None:
        return ordered
    k, n = shard
    return ordered[k - 1::n]


def is_finished(item: BatchItem) -> bool:
    return item.output.exists()


def _log(log_path: Path | None, record: dict) -> None:
    if log_path is None:
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_batch(
    items: Iterable[BatchItem],
    fn: Callable[[BatchItem], object],
    *,
    shard: tuple[int, int] | None = None,
    skip_finished: bool = True,
    is_done: Callable[[BatchItem], bool] = is_finished,
    log_dir: str | os.PathLike | None = None,
    continue_on_error: bool = True,
    progress: Callable[[BatchItem, str], None] | None = None,
) -> BatchReport:
    """Run `fn(item)` for each unfinished item of this shard.

    Args:
        items: The whole job; sharding and skipping happen here.
        fn: Does one item and writes `item.output` atomically. Its return value is kept in the report.
        shard: `(k, n)` from `parse_shard`.
        skip_finished: Skip items that are done.
        is_done: What "done" means; default: the output exists. A verb whose outputs depend on options passes a
            check that also compares the options stored with the output.
        log_dir: Where the JSON-lines status log goes (None: no log).
        continue_on_error: A `DanceGenError` in one item is logged and the batch goes on; any other exception
            (a bug) stops the batch. With False, the first error stops it.
        progress: Called with (item, status) after each item; status is "done", "skipped" or "failed". An item
            whose `fn` returns a dict with ``"cached": True`` (nothing recomputed) counts as skipped.
    """
    report = BatchReport()
    log_path = Path(log_dir) / LOG_NAME if log_dir is not None else None
    for item in shard_items(items, shard):
        if skip_finished and is_done(item):
            report.skipped.append(item.id)
            if progress:
                progress(item, "skipped")
            continue
        t0 = time.time()
        try:
            report.results[item.id] = fn(item)
        except DanceGenError as e:
            report.failed[item.id] = str(e)
            _log(log_path, {"id": item.id, "status": "failed", "error": str(e), "seconds": time.time() - t0})
            if progress:
                progress(item, "failed")
            if not continue_on_error:
                raise
            continue
        except Exception:
            _log(log_path, {"id": item.id, "status": "crashed", "error": traceback.format_exc(limit=3)})
            raise
        result = report.results[item.id]
        # a verb with its own cache (extract-pose) reports {"cached": True} when it recomputed nothing: skipped
        status = "skipped" if isinstance(result, dict) and result.get("cached") else "done"
        (report.skipped if status == "skipped" else report.done).append(item.id)
        _log(log_path, {"id": item.id, "status": status, "output": str(item.output), "seconds": time.time() - t0})
        if progress:
            progress(item, status)
    return report


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a batch manifest: JSON lines or CSV with a header (e.g. `id,ref,poses,seed`)."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", path)
    text = path.read_text(encoding="utf-8")
    rows: list[dict] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"line {n} is not JSON ({e.msg})", path) from None
            if not isinstance(row, dict):
                raise InputError(f"line {n} is not a JSON object", path)
            rows.append(row)
    else:
        rows = list(csv.DictReader(text.splitlines()))
    for n, row in enumerate(rows, 1):
        if not row.get("id"):
            raise InputError(f"row {n} has no 'id'", path)
    return rows
