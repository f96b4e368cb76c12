"""The end-of-retrain review call is best-effort: with Label Studio down (nothing listening on
`review.url`) or its API key missing, the retrain's hook warns and records the error's type,
and raises nothing, so a promotion already made stands. Runs the real review flow under the
session's temporary Prefect backend."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from flows.record import Evaluation
from flows.retrain import _queue_for_review, _review_tag
from tasks.evaluate import EvalResult
from tests.helpers.servers import free_port

pytestmark = pytest.mark.integration


def test_a_label_studio_outage_is_recorded_not_raised(
    prefect_backend, tmp_path, monkeypatch, caplog
):
    from flows.config import load_config

    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a", "label": "good"}\n')
    test_path = tmp_path / "test.parquet"
    pd.DataFrame({"text": ["scrubbed one", "scrubbed two"]}).to_parquet(test_path)
    config = load_config(
        None,
        [
            f"data.path={data}",
            "data.labels=[good, bad]",
            f"review.url=http://127.0.0.1:{free_port()}",  # nothing listens there
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            f"feedback.store={tmp_path / 'store'}",
            f"work_dir={tmp_path / 'runs'}",
        ],
    )
    candidate = EvalResult(
        metrics={}, labels=["good", "bad"], predictions=["good", "bad"], references=["bad", "bad"]
    )
    evaluation = Evaluation(
        candidate=candidate, baseline=None, champion=None, adversarial={}, intervals={}
    )
    splits = SimpleNamespace(test_path=test_path)
    registration = SimpleNamespace(version="1")

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    missing = _queue_for_review(config, splits, evaluation, registration, ["good", "bad"])
    assert missing == {"error": "ConfigError"}

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    down = _queue_for_review(config, splits, evaluation, registration, ["good", "bad"])
    assert down == {"error": "ConnectError"}
    assert _review_tag(down) == "failed: ConnectError"
    assert "review queue not updated: ConnectError" in caplog.text
