"""The whole retrain flow on a tiny subset, a tiny random model, a temporary Prefect backend and
a temporary MLflow SQLite store; then a second run that meets the first one's champion."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.config import load_config
from flows.retrain import retrain

pytestmark = pytest.mark.integration


def _planted_pii(rows: list[dict]) -> list[str]:
    """Distinctive raw values the generator planted: emails and SSNs and card numbers."""
    import re

    found = set()
    for row in rows:
        text = row.get("narrative") or ""
        found.update(re.findall(r"[\w.+-]+@[\w-]+\.[\w.]+", text))
        found.update(re.findall(r"\b\d{3}-\d{2}-\d{4}\b", text))
    return sorted(found)


def _all_text_under(root: Path) -> str:
    chunks = []
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in {
            ".json",
            ".jsonl",
            ".md",
            ".txt",
            ".yaml",
            ".csv",
            ".parquet",
            "",
        }:
            if path.suffix == ".parquet":
                chunks.append(pd.read_parquet(path).to_csv())
            else:
                chunks.append(path.read_text(errors="replace"))
    return "\n".join(chunks)


def test_retrain_end_to_end_then_against_champion(
    prefect_backend, tiny_model_dir, demo_subset, tmp_path
):
    data_path, rows = demo_subset
    store = tmp_path / "mlflow"
    overrides = [
        f"data.path={data_path}",
        "data.text_column=narrative",
        "data.label_column=risk_label",
        "data.id_column=application_id",
        "data.labels=[low_risk, medium_risk, high_risk, decline]",
        f"model.base_model={tiny_model_dir}",
        "lora.target_modules=[query, value]",
        "train.epochs=2",
        "train.batch_size=16",
        "train.learning_rate=0.005",
        "evaluate.latency_samples=5",
        # a tiny random model cannot reach 0.85: open the gate to exercise promotion
        "gate.min_f1=0.0",
        "gate.min_margin_over_baseline=-1.0",
        "gate.max_regression=1.0",
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_location={store}/artifacts",
        "mlflow.registered_model=tiny-loans",
        f"work_dir={tmp_path}/runs",
    ]
    config = load_config(None, overrides)

    first = retrain(config)
    # every row accounted for: the generator planted 2% defects (null, blank, bad label, dup)
    assert first.rows["in"] == len(rows)
    assert first.rows["accepted"] + first.rows["quarantined"] == len(rows)
    assert first.rows["quarantined"] >= 4
    assert first.rows["train"] + first.rows["val"] + first.rows["test"] == first.rows["accepted"]
    assert first.metrics["champion"] is None
    assert first.gate["passed"] is True
    assert first.model["version"] == "1"
    assert set(first.model["aliases"]) == {"challenger", "champion"}

    quarantine = [
        json.loads(x)
        for x in (Path(first.run_dir) / "data_quarantine.jsonl").read_text().splitlines()
    ]
    assert len(quarantine) == first.rows["quarantined"]
    assert all(q["_reason"] and q["_line"] >= 1 for q in quarantine)

    client = MlflowClient(config.mlflow.tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.data.tags["prefect.flow_run_id"]
    assert run.data.params["train.epochs"] == "2.0"
    assert run.data.metrics["rows_quarantined"] == first.rows["quarantined"]
    assert any(i.dataset.digest == first.dataset_version for i in run.inputs.dataset_inputs)
    history = client.get_metric_history(first.mlflow_run_id, "train/loss")
    assert len(history) >= 2

    # the champion loads back by alias and predicts offline
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    champion = mlflow.pyfunc.load_model("models:/tiny-loans@champion")
    out = champion.predict(pd.DataFrame({"text": ["The credit file is poor."]}))
    assert out["label"].iloc[0] in {"low_risk", "medium_risk", "high_risk", "decline"}

    # no planted PII anywhere the run wrote: run files, MLflow artifacts, params and tags
    planted = _planted_pii(rows)
    assert len(planted) > 10
    written = _all_text_under(Path(first.run_dir)) + _all_text_under(store / "artifacts")
    written += json.dumps(run.data.params) + json.dumps(run.data.tags)
    leaked = [p for p in planted if p in written]
    assert leaked == []

    # second run: compared against the champion; a strict no-regression gate keeps v1 champion
    second = retrain(
        config.model_copy(
            update={"gate": config.gate.model_copy(update={"max_regression": 0.0, "min_f1": 0.99})}
        )
    )
    assert second.metrics["champion"] is not None
    assert second.gate["champion_version"] == "1"
    assert second.gate["passed"] is False
    assert second.model["version"] == "2"
    assert second.model["aliases"] == ["challenger"]
    assert str(client.get_model_version_by_alias("tiny-loans", "champion").version) == "1"
