"""The production-corrections slice: test rows that correct what the served model answered.

Their row key (`_line`) is what survives validation, scrubbing and the split into every split
file, so the slice is found in the test split without carrying the prediction id itself, and
is re-scored from the predictions the evaluation already made: no model runs twice.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.dataset import PRODUCTION_COLUMN
from tasks.evaluate import EvalResult, classification_metrics, generation_metrics
from tasks.load import LoadedData


def production_lines(loaded: LoadedData) -> set[int]:
    """Row keys (`_line`) of the records that correct a served prediction: a non-empty
    `prediction_id` (from /v1/feedback, or a Label Studio annotation of a production example).

    The key is what survives validation, scrubbing and the split (`_line` in every split
    file), so the slice is found in the test split without carrying the id itself."""
    if PRODUCTION_COLUMN not in loaded.frame.columns:
        return set()
    values = loaded.frame[PRODUCTION_COLUMN]
    marked = values.map(lambda v: isinstance(v, str) and bool(v.strip()))
    return {int(line) for line in loaded.frame.loc[marked, "_line"]}


def production_positions(test_path: Path, lines: set[int]) -> list[int]:
    """Positions in the test split (the order every `EvalResult` keeps) of those rows."""
    if not lines:
        return []
    frame = pd.read_parquet(test_path, columns=["_line"])
    return [i for i, line in enumerate(frame["_line"].astype(int)) if line in lines]


def slice_result(result: EvalResult, positions: list[int]) -> EvalResult:
    """`result` re-scored on a subset of its examples, from its stored per-example predictions:
    no model runs again. Classification keeps its label set; latency is not a slice figure."""
    predictions = [result.predictions[i] for i in positions]
    references = [result.references[i] for i in positions]
    if result.labels:
        return classification_metrics(references, predictions, result.labels)
    sliced = generation_metrics(predictions, references)
    found, missing = (
        result.per_example.get("details"),
        result.per_example.get("unsupported_details"),
    )
    if found and missing:  # unsupported details, re-counted from the per-answer counts
        total = sum(found[i] for i in positions)
        sliced.metrics["unsupported_rate"] = (
            sum(missing[i] for i in positions) / total if total else 0.0
        )
        sliced.metrics["unsupported_answer_share"] = (
            sum(1 for i in positions if missing[i]) / len(positions) if positions else 0.0
        )
    return sliced
