"""The monitor flow against a real MLflow store under a temporary Prefect backend: drifted,
failing, wrongly-labelled traffic raises the alarm with its numbers and rolls the champion back;
calm traffic raises none; the next run starts where the last one ended; nothing a client put in
a feedback row reaches a report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.monitor import MonitorConfig, monitor
from tasks.feedback import FeedbackSettings, FeedbackStore
from tasks.monitor import MonitorSettings
from tasks.predictions import PredictionRecord, write_records
from tasks.registry import (
    PREVIOUS,
    MLflowSettings,
    champion_version,
    open_tracking,
    promote_version,
    register_version,
)
from tunegate.demo_data.intents import generate_intents
from tunegate.demo_data.loans import LABELS, generate

pytestmark = pytest.mark.integration

PLANTED = "Zebulon Quartermaine, 4929 1234 5678 9012, zq.planted@example.org"


def _scrubbed(text: str | None) -> str:
    """A loans narrative without its name and address sentences (as the PII stage leaves it)."""
    sentences = [s for s in (text or "").split(". ")[1:] if "address" not in s.lower()]
    return ". ".join(sentences) or "The applicant gave no details."


def _loans(n: int, seed: int) -> list[tuple[str, str]]:
    rows = [r for r in generate(n=n, seed=seed) if r.get("risk_label") in LABELS]
    return [(_scrubbed(r["narrative"]), r["risk_label"]) for r in rows]


def _models(uri: str, artifacts: Path, name: str) -> tuple[str, str]:
    """Two versions whose runs logged their training split; champion v2, previous v1."""
    settings = MLflowSettings(
        tracking_uri=uri, artifact_location=str(artifacts), experiment=f"train-{name}"
    )
    client = open_tracking(settings)
    experiment = client.get_experiment_by_name(settings.experiment).experiment_id
    versions = []
    for i in range(2):
        run = client.create_run(experiment).info.run_id
        texts, labels = zip(*_loans(300, seed=10 + i), strict=True)
        split = artifacts / f"{name}-{i}" / "train.parquet"
        split.parent.mkdir(parents=True)
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(split)
        client.log_artifact(run, str(split), "data/splits")
        versions.append(
            register_version(
                client, name, f"file:///models/{name}/{i}", run, {"gate": "passed"}, "card"
            )
        )
    v1, v2 = versions
    assert promote_version(client, name, v1, None).promoted
    assert promote_version(client, name, v2, v1).promoted
    return v1, v2


def _traffic(
    log_url: str, name: str, version: str, rows: list[tuple[str, str]], errors: int
) -> list[PredictionRecord]:
    now = datetime.now(UTC)
    records = [
        PredictionRecord(
            prediction_id=uuid.uuid4().hex,
            time=now - timedelta(minutes=30, seconds=i),
            model_name=name,
            model_version=version,
            latency_ms=20.0 + i % 7,
            status=500 if i < errors else 200,
            text=text,
            label=None if i < errors else label,
            score=None if i < errors else 0.9,
        )
        for i, (text, label) in enumerate(rows)
    ]
    write_records(log_url, records)
    return records


def _config(tmp: Path, uri: str, name: str, **monitor: object) -> MonitorConfig:
    return MonitorConfig(
        mlflow=MLflowSettings(
            tracking_uri=uri, artifact_location=str(tmp / "mlartifacts"), registered_model=name
        ),
        feedback=FeedbackSettings(store=str(tmp / "feedback")),
        monitor=MonitorSettings(
            log_url=str(tmp / "predictions"), min_predictions=20, min_feedback=10, **monitor
        ),
        label_column="label",
        work_dir=tmp / "work",
    )


def _files_text(root: Path) -> str:
    """Every file under `root` but the feedback stores (which hold what clients sent)."""
    return "\n".join(
        p.read_text(errors="ignore")
        for p in root.rglob("*")
        if p.is_file() and "feedback" not in p.relative_to(root).parts
    )


def test_drifted_traffic_alarms_and_rolls_back_calm_traffic_does_not(prefect_backend, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    artifacts = tmp_path / "splits"

    # drifted: other-domain texts, one label only, 10% server errors, corrections disagree
    drift_dir = tmp_path / "drift"
    v1, v2 = _models(uri, artifacts, "watched")
    intents = generate_intents(n=80, seed=3)
    served = _traffic(
        str(drift_dir / "predictions"),
        "watched",
        v2,
        [(r["utterance"], "decline") for r in intents],
        errors=8,
    )
    FeedbackStore(str(drift_dir / "feedback")).write_batch(
        [
            {"prediction_id": r.prediction_id, "label": "low_risk", "note": PLANTED}
            for r in served[8:23]
        ]
        + [
            {"prediction_id": r.prediction_id, "flag": "wrong", "contact": PLANTED}
            for r in served[23:28]
        ]
    )
    state = monitor(_config(drift_dir, uri, "watched", rollback_on_alarm=True), return_state=True)
    summary = state.result()
    assert state.name == "Alarm" and summary.alarm, summary.reasons
    numbers = summary.numbers
    assert numbers["predictions"] == 80 and numbers["errors"] == 8
    assert numbers["error_rate"] == pytest.approx(0.1)
    assert numbers["drift_score"] > 0.75 and numbers["drifted"] == 1.0
    assert numbers["label_shift"] > 0.3
    assert numbers["with_feedback"] == 20 and numbers["live_accuracy"] == 0.0
    breached = {r.split()[1].rstrip(":") for r in summary.reasons if r.startswith("ALARM")}
    assert breached == {"error_rate", "label_shift", "input_drift", "live_accuracy"}
    assert summary.event_id is not None
    client = MlflowClient(uri)
    assert summary.rolled_back_to == v1 and champion_version(client, "watched") == v1
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.tags["tunegate.monitor.alarm"] == "true"
    assert run.data.metrics["drift_score"] == pytest.approx(numbers["drift_score"])
    assert {a.path for a in client.list_artifacts(run.info.run_id, "monitor")} == {
        "monitor/drift.html",
        "monitor/reading.json",
    }
    print("drifted:", json.dumps(numbers), summary.reasons)

    # calm: training-like texts and labels, no errors, corrections agree; the champion stays
    calm_dir = tmp_path / "calm"
    c1, c2 = _models(uri, artifacts, "calm")
    rows = _loans(120, seed=42)[:80]
    served = _traffic(str(calm_dir / "predictions"), "calm", c2, rows, errors=0)
    FeedbackStore(str(calm_dir / "feedback")).write_batch(
        [{"prediction_id": r.prediction_id, "label": r.label} for r in served[:12]]
    )
    config = _config(calm_dir, uri, "calm", rollback_on_alarm=True)
    calm = monitor(config, return_state=True).result()
    assert not calm.alarm, calm.reasons
    assert calm.numbers["drift_score"] < 0.75 and calm.numbers["live_accuracy"] == 1.0
    assert champion_version(client, "calm") == c2
    assert str(client.get_model_version_by_alias("calm", PREVIOUS).version) == c1
    print("calm:", json.dumps(calm.numbers))

    # the next run starts at the watermark: nothing new, every data check skipped, no alarm
    again = monitor(config, return_state=True).result()
    assert again.since == calm.until and again.numbers["predictions"] == 0 and not again.alarm

    # no raw PII from the feedback rows in any report, artifact, summary or Prefect artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        shown = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["monitor", "monitor-drift-report"])
            )
        )
    assert shown
    blobs = [
        _files_text(tmp_path),  # MLflow store and artifacts, run files, the drift reports
        summary.model_dump_json(),
        *(str(a.data) for a in shown),
    ]
    for secret in ("Zebulon", "4929 1234", "zq.planted"):
        assert all(secret not in blob for blob in blobs), secret
