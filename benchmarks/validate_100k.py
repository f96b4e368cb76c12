"""Validation throughput: 100,000 rows through the whole validate stage on at most 2 cores.

Builds a 100k-row JSONL file from the demo data (each row made unique, 2% planted defects
kept), then times reading + the Great Expectations suite + Data Docs (file-mode context), the
same call the flow's validate task makes. The target is under 60 s; prints
`validate_100k_seconds: <s>` last (with the ratio to the 60 s budget on the line before).

    PYTHONPATH=. python benchmarks/validate_100k.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from tasks.load import DataSettings  # noqa: E402
from tasks.validate import ValidateSettings, validate_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 60.0


def make_file(path: Path, rows: int) -> None:
    base = [
        json.loads(x) for x in (REPO / "data" / "loan_applications.jsonl").read_text().splitlines()
    ]
    with path.open("w") as fh:
        for i in range(rows):
            row = dict(base[i % len(base)])
            row["application_id"] = f"APP-{i:07d}"
            if row.get("narrative") and row["narrative"].strip() and i >= len(base):
                row["narrative"] = f"{row['narrative']} Ref {i}."
            fh.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        make_file(path, args.rows)
        data = DataSettings(
            path=path,
            text_column="narrative",
            label_column="risk_label",
            id_column="application_id",
            labels=["low_risk", "medium_risk", "high_risk", "decline"],
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        report = validate_file(data, ValidateSettings(), Path(tmp) / "out")
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    print(
        f"rows: {report.rows_in}  cores: {cores}  accepted: {report.rows_accepted}  "
        f"quarantined: {report.rows_quarantined}  data docs: {report.data_docs is not None}"
    )
    print(f"suite alone (GX run incl. docs): {report.seconds:.1f} s")
    print(f"rows per second: {report.rows_in / seconds:.0f}")
    print(f"cpu seconds of this process (load-independent): {cpu:.1f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"share of the {BUDGET_S:.0f} s budget: {seconds / BUDGET_S:.2f}")
    print(f"validate_100k_seconds: {seconds:.1f}")


if __name__ == "__main__":
    main()
