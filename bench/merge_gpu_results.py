"""Merge the GPU suite's runs of one lease into bench/results/gpu_suite.json and gpu_suite.md.

The 2026-12-04 lease ran the suite five times (run 1: every section; runs 2-5: sections rerun after fixes, see
bench/results/README.md). Each merged section names the run it comes from.

    python bench/merge_gpu_results.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_suite import table  # noqa: E402

# section -> run it is taken from (the last run that measured it with the code as committed)
SOURCES = {"env": 1, "dyl": 1, "peer": 1, "train": 1, "stsa": 2, "agree": 4, "halfdiag": 4}


def main() -> int:
    results = HERE / "results"
    merged = {}
    for section, run in SOURCES.items():
        data = json.loads((results / f"gpu_suite_run{run}.json").read_text())
        merged[section] = dict(data[section], run=run)
    merged["halfdiag_before_fp32_latents"] = dict(json.loads((results / "gpu_suite_run3.json").read_text())["halfdiag"],
                                                  run=3)
    log = (results / "pytest_gpu_run5.log").read_text().strip().splitlines()
    merged["pytest"] = {"summary": log[-1], "tests": [ln for ln in log if ln.startswith(("PASSED", "FAILED"))],
                        "run": 5}
    (results / "gpu_suite.json").write_text(json.dumps(merged, indent=1) + "\n")
    (results / "gpu_suite.md").write_text(table(merged))
    print(table(merged))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
