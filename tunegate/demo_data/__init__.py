"""The built-in synthetic data sets `tunegate demo-data` writes: generators, not pipeline stages.

They live beside the CLI, not in `flows/`, because only the CLI, the tests and the benchmarks
use them; the pipeline reads whatever file it is given. The generators (`loans`, `reviews`,
`intents`; `notes`: tiny templated text for the tests' word-level tokenizers) are imported by whoever needs one, so `tunegate --help` does not load Faker.
"""

from __future__ import annotations

import json
from pathlib import Path

# --kind: (default file, default rows) of each built-in data set
DEMO_SETS = {
    "loans": ("data/loan_applications.jsonl", 3000),  # classification, `make demo`
    "reviews": ("data/loan_reviews.jsonl", 480),  # generation, `make demo-generate`
    "intents": ("data/intents.jsonl", 20000),  # 40-class intents, benchmarks/defaults_check.py
}


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


__all__ = ["DEMO_SETS", "write_jsonl"]
