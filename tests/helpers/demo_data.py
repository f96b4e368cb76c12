"""Demo-data files for tests: a seeded subset of the loan reviews, written as JSONL."""

from __future__ import annotations

import json
from pathlib import Path

from tunegate.demo_data.loans import generate


def write_demo_subset(path: Path, n: int = 240, seed: int = 3) -> list[dict]:
    rows = generate(n=n, seed=seed)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows
