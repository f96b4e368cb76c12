"""Stages that loop over rows say how far they got, so a slow or stuck stage shows in the UI.

The clock of `tasks.progress` is replaced by one that moves 10 s per reading: every loop below
is "slow", and a progress line must appear before the loop ends, counts only, no row content.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest

from tasks.pii.audit import PIIAudit
from tasks.pii.scrub import scrub_records
from tasks.pii.settings import PIISettings

pytestmark = pytest.mark.unit

SECRET = "mary.major@example.org"
LINE = re.compile(r"^(?P<stage>[\w-]+): (?P<done>\d+)(?:/(?P<total>\d+))? rows \(\d+/s\)")


@pytest.fixture
def slow_clock(monkeypatch):
    import tasks.progress as progress

    now = [0.0]

    def tick() -> float:
        now[0] += 10.0
        return now[0]

    monkeypatch.setattr(progress.time, "monotonic", tick)


def _lines(caplog, stage: str) -> list[re.Match]:
    found = [LINE.match(r.getMessage()) for r in caplog.records]
    return [m for m in found if m and m["stage"] == stage]


def _assert_reported(caplog, stage: str, total: int | None) -> None:
    lines = _lines(caplog, stage)
    assert len(lines) >= 2, (
        f"no progress line from {stage}: {[r.getMessage() for r in caplog.records]}"
    )
    assert any("done in" not in m.string for m in lines), f"{stage} only logged at the end"
    if total is not None:
        assert {int(m["total"]) for m in lines} == {total}
        assert int(lines[-1]["done"]) == total
    assert all(SECRET not in m.string for m in lines)


def test_augment_reports_progress(slow_clock, caplog):
    from tasks.augment import AugmentSettings, augment_frame

    frame = pd.DataFrame(
        {"text": [f"refund {SECRET} order {i} of £{i + 20}" for i in range(8)], "label": ["a"] * 8}
    )
    with caplog.at_level(logging.INFO):
        augment_frame(frame, AugmentSettings(ratio=1.0, strategies=["entity_swap"]))
    _assert_reported(caplog, "augment", 8)


def test_split_near_duplicate_scan_reports_progress(slow_clock, caplog):
    from tasks.split import minhash_signatures

    with caplog.at_level(logging.INFO):
        minhash_signatures([f"text number {i} from {SECRET}" for i in range(6)])
    _assert_reported(caplog, "split", 6)


def test_evaluate_prediction_loop_reports_progress(slow_clock, caplog, tmp_path):
    from tasks.evaluate import STEP_ROWS, evaluate_predictions

    n = STEP_ROWS * 3 + 5
    path = tmp_path / "test.parquet"
    pd.DataFrame({"text": [f"t{i} {SECRET}" for i in range(n)], "label": ["a"] * n}).to_parquet(
        path
    )
    calls: list[int] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        return ["a"] * len(texts)

    with caplog.at_level(logging.INFO):
        result = evaluate_predictions(predict, path, ["a", "b"])
    assert result.metrics["accuracy"] == 1.0 and sum(calls) == n and len(calls) == 4
    _assert_reported(caplog, "evaluate", n)


def test_adversarial_search_reports_progress(slow_clock, caplog):
    from tasks.adversarial import AdversarialSettings, greedy_attack

    class Stubborn:
        """A model that never changes its mind: the search runs every step."""

        labels = ["a", "b"]

        def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            return np.tile([0.9, 0.1], (len(texts), 1))

    texts = [f"please refund order {i} now" for i in range(5)]
    settings = AdversarialSettings(max_steps=2, operations=["char"])
    with caplog.at_level(logging.INFO):
        greedy_attack(texts, ["a"] * 5, Stubborn(), settings)
    _assert_reported(caplog, "adversarial", None)


def test_scrub_loop_reports_progress(slow_clock, caplog):
    texts = [f"write to {SECRET} about {i}" for i in range(5)]
    with caplog.at_level(logging.INFO):
        records = scrub_records({"text": texts}, PIISettings(), PIIAudit(), rows=len(texts))
    assert all(
        SECRET not in r.value("text", t, redact_residual=True)
        for r, t in zip(records, texts, strict=True)
    )
    _assert_reported(caplog, "scrub", 5)
