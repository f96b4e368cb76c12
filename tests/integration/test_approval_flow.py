"""One tiny retrain with `gate.approval: required` and production corrections in the feedback:
the corrections land in the test split and get their own figures; the run pauses with the review
artifact and the typed form; rejected through the API, it ends Rejected with nothing promoted
and the decision on the version. (The browser half is tests/service/test_approval_ui.py.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.config import load_config
from flows.retrain import retrain
from tasks.feedback import FeedbackStore
from tunegate.demo_data.loans import generate

pytestmark = pytest.mark.integration


def _rows(n: int, seed: int) -> list[dict]:
    return [
        {"text": r["narrative"], "label": r["risk_label"]}
        for r in generate(n=n + 30, seed=seed, defect_rate=0)
        if r["narrative"]
    ][:n]


def _paused_run(timeout: float = 240):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType as ByType

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=ByType(any_=["PAUSED"]))
                )
            )
            if runs:
                return runs[0], client.read_artifacts()
            time.sleep(1)
    raise AssertionError("the retrain never paused for approval")


def test_production_slice_and_a_rejected_approval(prefect_backend, tiny_model_dir, tmp_path):
    from prefect.flow_runs import resume_flow_run

    data_path = tmp_path / "data.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in _rows(110, seed=21)))
    corrections = [{**r, "prediction_id": f"pred-{i}"} for i, r in enumerate(_rows(50, seed=22))]
    FeedbackStore(str(tmp_path / "feedback")).write_batch(corrections)
    store = tmp_path / "mlflow"
    config = load_config(
        None,
        [
            f"data.path={data_path}",
            f"model.base_model={tiny_model_dir}",
            "model.max_length=48",
            "train.epochs=1",
            "evaluate.latency_samples=2",
            "evaluate.bootstrap_resamples=0",
            "augment.ratio=0.1",
            "adversarial.enabled=false",
            "gate.min_f1=0",
            "gate.min_margin_over_baseline=-1",
            "gate.max_latency_s=600",
            "gate.approval=required",
            "gate.approval_timeout_s=300",
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=approval-flow",
            f"work_dir={tmp_path}/runs",
            f"feedback.store={tmp_path}/feedback",
        ],
    )
    states = []
    worker = threading.Thread(target=lambda: states.append(retrain(config, return_state=True)))
    worker.start()
    run, artifacts = _paused_run()
    review = next(a for a in artifacts if a.key == "approval-review")
    assert "sample outputs" in review.data and "champion label" in review.data
    assert "Production corrections" in review.data
    resume_flow_run(
        run.id, run_input={"decision": "reject", "comment": "worse on refunds | x", "reviewer": ""}
    )
    worker.join(timeout=120)
    (state,) = states
    assert state.name == "Rejected" and state.is_cancelled(), state

    summary = json.loads(next(Path(tmp_path / "runs").glob("*/summary.json")).read_text())
    production = summary["production_corrections"]
    test = pd.read_parquet(Path(summary["run_dir"]) / "test.parquet")
    assert 0 < production["rows"] < len(corrections) and production["rows"] <= len(test)
    assert 0 <= production["candidate"]["f1_macro"] <= 1
    assert summary["approval"] == {
        "decision": "reject",
        "by": "prefect-ui",
        "comment": "worse on refunds | x",
    }
    assert not summary["model"]["promoted"]
    report = (Path(summary["run_dir"]) / "evaluation.md").read_text()
    assert f"Production corrections ({production['rows']} held-out rows" in report

    client = MlflowClient(config.mlflow.tracking_uri)
    version = client.get_model_version("approval-flow", summary["model"]["version"])
    assert version.tags["gate"] == "rejected"
    assert version.tags["tunegate.approval.by"] == "prefect-ui"
    assert version.tags["tunegate.approval.comment"] == "worse on refunds | x"
    assert "champion" not in client.get_registered_model("approval-flow").aliases
    metrics = client.get_run(summary["mlflow_run_id"]).data.metrics
    assert metrics["production/rows"] == production["rows"]
