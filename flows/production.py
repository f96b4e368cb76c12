"""The production-corrections slice: the test rows that correct what the served model said.

Feedback on a served prediction (`/v1/feedback`, or a Label Studio annotation of a production
example) carries its `prediction_id`. Those rows join the data through the hash split like any
other; the ones that land in the test split are scored again here, for candidate and champion,
from the predictions the evaluation already made (no model runs twice). The gate applies
`gate.max_regression` to them on their own (`tasks.gate.production_regression`): a candidate
that is better overall but worse on the traffic people corrected does not ship.
"""

from __future__ import annotations

from flows.config import RetrainConfig
from flows.record import DataStage, Evaluation
from tasks.dataset import load_dataset
from tasks.gate import ProductionSlice
from tasks.load import read_records
from tasks.production import production_lines, production_positions, slice_result
from tasks.split import SplitResult


def score_production_slice(
    config: RetrainConfig, data: DataStage, splits: SplitResult, evaluation: Evaluation
) -> None:
    """Fill `evaluation.production` (and its row count) when the test split holds such rows.

    The test split's `_line` keys are the data set's (data file + feedback batches), or the
    test file's when `data.test_path` is set; the records are read again under the same keys.
    """
    if config.data.test_path is not None:
        loaded = read_records(config.data.test_path)
    else:
        loaded = load_dataset(config.data, data.report.feedback)
    positions = production_positions(splits.test_path, production_lines(loaded))
    evaluation.production_rows = len(positions)
    if not positions:
        return
    evaluation.production = {"candidate": slice_result(evaluation.candidate, positions)}
    if evaluation.champion is not None and evaluation.champion.predictions:
        evaluation.production["champion"] = slice_result(evaluation.champion, positions)


def gate_slice(evaluation: Evaluation) -> ProductionSlice | None:
    """What the gate's `production_corrections_regression` check reads."""
    if not evaluation.production_rows:
        return None
    champion = evaluation.production.get("champion")
    return ProductionSlice(
        rows=evaluation.production_rows,
        candidate=dict(evaluation.production["candidate"].metrics),
        champion=None if champion is None else dict(champion.metrics),
    )
