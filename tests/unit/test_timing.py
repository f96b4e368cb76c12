"""Stage timings: what the summary's `timings`, the MLflow metrics and the human summary show."""

from __future__ import annotations

import time

import pytest

from flows.record import RetrainSummary, record_timings
from flows.timing import STAGES, stage_seconds, start_timings, timed
from tunegate.commands.run import render_summary

pytestmark = pytest.mark.unit


class _Tracker:
    run_id = "r"
    client = None

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.metrics.update(metrics)


def test_timed_blocks_add_up_per_stage_and_count_failures():
    timings = start_timings()
    with timed("validate"):
        time.sleep(0.02)
    with timed("validate"):  # the test file is validated too: summed into one figure
        time.sleep(0.02)
    with pytest.raises(RuntimeError), timed("train"):
        time.sleep(0.01)
        raise RuntimeError("crashed mid-stage")
    assert timings["validate"] >= 0.04
    assert timings["train"] >= 0.01
    seconds = stage_seconds(timings)
    assert list(seconds) == list(STAGES)  # every stage, in pipeline order
    assert seconds["augment"] == 0.0  # skipped stages report zero, keys stay stable


def test_timed_outside_a_run_records_nothing():
    import contextvars

    def outside() -> None:
        with timed("scrub"):
            pass

    ours = start_timings()
    contextvars.Context().run(outside)  # another context (no run started there): no error
    assert "scrub" not in ours  # and nothing leaks into this run's record


def test_timings_reach_metrics_and_the_human_summary():
    timings = stage_seconds({"validate": 1.25, "train": 61.0})
    tracker = _Tracker()
    record_timings(tracker, timings)
    assert tracker.metrics["timing/validate"] == 1.25
    assert set(tracker.metrics) == {f"timing/{s}" for s in STAGES}
    summary = RetrainSummary(
        mlflow_run_id="r",
        prefect_flow_run_id=None,
        dataset_version="v",
        rows={"in": 1},
        metrics={"candidate": {"f1_macro": 0.9}, "baseline": None, "champion": None},
        gate={"passed": True, "reasons": []},
        model={"name": "m", "version": "1", "aliases": [], "note": "n"},
        run_dir="/tmp/x",
        tracking_uri="sqlite:///x.db",
        timings=timings,
    )
    text = render_summary(summary)
    assert "validate=1.2" in text and "train=61.0" in text
    assert summary.model_dump()["timings"]["train"] == 61.0
