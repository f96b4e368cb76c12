"""The monitor's measurements and its alarm decision, as plain functions (no server, no MLflow)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tasks.feedback import FeedbackStore
from tasks.monitor import (
    DriftResult,
    LiveAccuracy,
    MonitorSettings,
    Reading,
    WindowStats,
    alarm_payload,
    decide,
    feedback_since,
    label_shift,
    live_accuracy,
    percentile,
    window_stats,
)
from tasks.predictions import PredictionRecord

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _record(i: int, **kw: object) -> PredictionRecord:
    values = {
        "prediction_id": f"p{i}",
        "time": NOW,
        "model_name": "m",
        "model_version": "2",
        "latency_ms": float(i),
        "text": "t",
        "label": "a",
    }
    return PredictionRecord(**(values | kw))


def test_window_stats_counts_5xx_as_errors_and_ignores_unsampled_records():
    records = [_record(i) for i in range(1, 19)]
    records += [_record(19, status=500, label=None), _record(20, status=422, label=None)]
    records += [_record(99, sampled=False, latency_ms=10_000.0, status=500)]
    stats = window_stats(records)
    assert (stats.predictions, stats.errors) == (20, 1)
    assert stats.error_rate == pytest.approx(0.05)
    assert stats.p95_latency_ms == 19.0  # nearest rank of 1..20; the unsampled 10 s is not in
    assert stats.label_counts == {"a": 18} and stats.versions == {"2": 20}
    empty = window_stats([])
    assert empty.error_rate is None and empty.p95_latency_ms is None


def test_percentile_is_an_observed_value():
    assert percentile([], 95) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(v) for v in range(100, 0, -1)], 95) == 95.0


def test_label_shift_is_total_variation_and_counts_unknown_labels_in_full():
    reference = {"a": 50, "b": 50}
    assert label_shift({"a": 5, "b": 5}, reference) == pytest.approx(0.0)
    assert label_shift({"a": 10}, reference) == pytest.approx(0.5)
    assert label_shift({"c?": 4}, reference) == pytest.approx(1.0)  # never seen in training
    assert label_shift({}, reference) is None and label_shift({"a": 1}, {}) is None


def test_live_accuracy_counts_flags_as_wrong_and_the_newest_row_wins():
    served = {"p1": "a", "p2": "a", "p3": "b", "p4": "a"}
    rows = [
        {"prediction_id": "p1", "label": "a"},  # right
        {"prediction_id": "p2", "label": "b"},  # wrong
        {"prediction_id": "p3", "flag": "wrong"},  # flagged
        {"prediction_id": "p4", "flag": "wrong"},
        {"prediction_id": "p4", "label": "a"},  # later correction confirms the served label
        {"prediction_id": "gone", "label": "a"},  # not in the log read
        {"text": "ordinary feedback", "label": "a"},  # not about a prediction: ignored
        {"prediction_id": "p1", "label": ""},  # no verdict
    ]
    result = live_accuracy(rows, served, "label")
    assert result == LiveAccuracy(with_feedback=4, correct=2, flagged=1, unmatched=1, accuracy=0.5)
    assert live_accuracy([], served, "label").accuracy is None
    relabelled = live_accuracy([{"prediction_id": "p1", "intent": "a"}], served, "intent")
    assert relabelled.accuracy == 1.0


def test_feedback_since_reads_only_batches_stored_in_the_window(tmp_path):
    store = FeedbackStore(str(tmp_path))
    old = store.write_batch([{"prediction_id": "old", "label": "a"}])
    past = time.time() - 7200
    import os

    os.utime(old.location, (past, past))
    store.write_batch([{"prediction_id": "new", "label": "b"}])
    now = datetime.now(UTC)
    rows = feedback_since(store, now - timedelta(hours=1), now + timedelta(seconds=5))
    assert [r["prediction_id"] for r in rows] == ["new"]
    assert len(feedback_since(store, None)) == 2


def _reading(**kw: object) -> Reading:
    window = WindowStats(
        predictions=100, errors=1, error_rate=0.01, p95_latency_ms=120.0, label_counts={"a": 99}
    )
    values = {
        "model_name": "m",
        "champion": "2",
        "since": NOW - timedelta(hours=1),
        "until": NOW,
        "window": window,
        "label_shift": 0.1,
        "drift": DriftResult(
            score=0.55,
            drifted=False,
            threshold=0.75,
            method="x",
            reference_rows=100,
            current_rows=100,
        ),
        "accuracy": LiveAccuracy(with_feedback=20, correct=18, accuracy=0.9),
    }
    return Reading(**(values | kw))


def test_decide_is_calm_within_limits_and_names_every_breach_with_its_numbers():
    settings = MonitorSettings()
    calm = decide(_reading(), settings)
    assert not calm.alarm and calm.breached == []
    assert [c.status for c in calm.checks] == ["OK"] * 5

    bad_window = WindowStats(
        predictions=100, errors=20, error_rate=0.2, p95_latency_ms=9000.0, label_counts={}
    )
    bad = decide(
        _reading(
            window=bad_window,
            label_shift=0.6,
            drift=DriftResult(
                score=0.97,
                drifted=True,
                threshold=0.75,
                method="x",
                reference_rows=100,
                current_rows=100,
            ),
            accuracy=LiveAccuracy(with_feedback=20, correct=10, accuracy=0.5),
        ),
        settings,
    )
    assert bad.alarm
    assert bad.breached == [
        "error_rate",
        "p95_latency",
        "label_shift",
        "input_drift",
        "live_accuracy",
    ]
    assert "ALARM error_rate: 5xx share 0.2 > 0.05" in bad.reasons
    assert "ALARM live_accuracy: 10/20 right = 0.5 < 0.7" in bad.reasons
    payload = alarm_payload(_reading(), bad, "run1")
    assert payload["numbers"]["drift_score"] == 0.55 and payload["breached"] == bad.breached


def test_decide_skips_checks_without_enough_data_instead_of_alarming():
    settings = MonitorSettings(min_predictions=50, min_feedback=30)
    window = WindowStats(
        predictions=10, errors=0, error_rate=0.0, p95_latency_ms=50.0, label_counts={"a": 10}
    )
    few = decide(
        _reading(
            window=window,
            label_shift=1.0,
            accuracy=LiveAccuracy(with_feedback=5, correct=0, accuracy=0.0),
        ),
        settings,
    )
    assert not few.alarm
    skipped = {c.name: c.detail for c in few.checks if c.skipped}
    assert set(skipped) == {"label_shift", "input_drift", "live_accuracy"}
    assert "monitor.min_predictions" in skipped["label_shift"]
    assert "monitor.min_feedback" in skipped["live_accuracy"]
    nothing = decide(
        _reading(
            window=WindowStats(predictions=0, errors=0, error_rate=None, p95_latency_ms=None),
            drift=None,
            label_shift=None,
            accuracy=LiveAccuracy(),
        ),
        settings,
    )
    assert not nothing.alarm and all(c.skipped for c in nothing.checks)


def test_settings_refuse_bad_thresholds_by_name():
    with pytest.raises(ValidationError, match="drift_threshold"):
        MonitorSettings(drift_threshold=0.4)
    with pytest.raises(ValidationError, match="max_error_rate"):
        MonitorSettings(max_error_rate=2)
    with pytest.raises(ValidationError, match="rollback_on_alaram"):
        MonitorSettings.model_validate({"rollback_on_alaram": True})


def test_one_config_file_serves_retrain_and_monitor(tmp_path):
    from flows.config import load_config
    from flows.monitor import MonitorConfig, load_monitor_config

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "intent": "x"}\n')
    config = tmp_path / "c.yaml"
    config.write_text(
        f"data:\n  path: {data}\n  label_column: intent\ntrain:\n  epochs: 1\n"
        f"work_dir: {tmp_path / 'w'}\nmonitor:\n  max_error_rate: 0.1\n"
    )
    loaded = load_monitor_config(config, ["monitor.rollback_on_alarm=true"])
    assert loaded.label_column == "intent" and loaded.work_dir == tmp_path / "w"
    assert loaded.monitor.max_error_rate == 0.1 and loaded.monitor.rollback_on_alarm
    assert loaded.log_url == str(tmp_path / "w" / "predictions")
    retrain = load_config(config, ["monitor.rollback_on_alarm=true"])
    assert MonitorConfig.of(retrain) == loaded
    assert load_monitor_config(None).label_column == "label"  # no data section needed


def test_cli_refuses_a_bad_monitor_key_with_one_line(capsys):
    from tunegate.cli import main

    assert main(["monitor", "--set", "monitor.max_eror_rate=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "monitor.max_eror_rate: unknown key" in err
    assert main(["monitor", "--set", "monitor.drift_threshold=0.3"]) == 2
    assert "monitor.drift_threshold: Input should be greater than 0.5" in capsys.readouterr().err
