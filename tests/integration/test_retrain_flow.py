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
from flows.timing import STAGES
from tests.helpers.demo_data import write_demo_subset

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


PLANTED = [
    # (row, raw values that must not survive anywhere)
    (
        {
            "application_id": "APP-PII-1",
            "narrative": "Notes on Xiuying Wangchuk: $9,000, solar panels. SSN: 219099999. "
            "Email zq.planted@example.org. The credit file is excellent.",
            "risk_label": "low_risk",
        },
        ["Wangchuk", "219099999", "zq.planted@example.org"],
    ),
    (
        {
            "application_id": "APP-PII-2",
            "narrative": "Dr. Oluwaseun Adebayo-Okafor asks $5,000 for tuition. DOB: 1983-07-19. "
            "Login from 2001:db8:77::9f3. MRN: 88412907. Existing debt is light.",
            "risk_label": "medium_risk",
        },
        ["Adebayo-Okafor", "1983-07-19", "2001:db8:77::9f3", "88412907"],
    ),
    (  # quarantined (label outside the set): its quarantine row must be scrubbed too
        {
            "application_id": "APP-PII-3",
            "narrative": "Kahananuiwai, Keoni requests $3,000. Card 4539 5787 6362 1486.",
            "risk_label": "not-a-label",
        },
        ["Kahananuiwai", "4539 5787 6362 1486"],
    ),
]


def _sqlite_text(db: Path) -> str:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return "\n".join(conn.iterdump())


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


def test_retrain_end_to_end_then_against_champion(prefect_backend, tmp_path):
    # The embedded MiniLM on 1,000 demo rows: enough for the classifier to learn what the gate
    # asks (measured: validation macro-F1 0.67-0.74 after 2 of its 3 epochs; 2 epochs alone gave
    # a test macro-F1 of only 0.54), against a few-shot baseline near 0.23-0.27 and a 4-class
    # chance level of 0.25. Training is most of this test's time.
    data_path = tmp_path / "loans.jsonl"
    rows = write_demo_subset(data_path, n=1000)
    with data_path.open("a") as fh:
        for row, _ in PLANTED:
            fh.write(json.dumps(row) + "\n")
    rows = rows + [row for row, _ in PLANTED]
    store = tmp_path / "mlflow"
    overrides = [
        f"data.path={data_path}",
        "data.text_column=narrative",
        "data.label_column=risk_label",
        "data.id_column=application_id",
        "data.labels=[low_risk, medium_risk, high_risk, decline]",
        "model.max_length=96",
        "train.epochs=3",
        "evaluate.latency_samples=5",
        "adversarial.max_train_examples=50",
        "adversarial.max_test_examples=50",
        "adversarial.candidates_per_step=4",
        "adversarial.max_steps=2",
        # A real gate: the candidate must learn (macro-F1 well above chance and the baseline).
        "gate.min_f1=0.5",
        "gate.min_margin_over_baseline=0.05",
        "gate.max_latency_s=600",  # a loaded shared CI machine must not decide this test
        f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
        f"mlflow.artifact_location={store}/artifacts",
        "mlflow.registered_model=tiny-loans",
        f"work_dir={tmp_path}/runs",
        f"feedback.store={tmp_path}/feedback",
    ]
    config = load_config(None, overrides)

    first_state = retrain(config, return_state=True)
    assert first_state.is_completed() and first_state.name == "Promoted"
    first = first_state.result()
    # every row accounted for: the generator planted 2% defects (null, blank, bad label, dup)
    assert first.rows["in"] == len(rows)
    assert first.rows["accepted"] + first.rows["quarantined"] == len(rows)
    assert first.rows["quarantined"] >= 4
    assert first.rows["train"] + first.rows["val"] + first.rows["test"] == first.rows["accepted"]
    assert first.metrics["champion"] is None
    assert first.gate["passed"] is True
    assert first.metrics["candidate"]["f1_macro"] >= 0.5
    assert first.metrics["candidate"]["f1_macro"] > first.metrics["baseline"]["f1_macro"] + 0.05
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
    assert run.data.params["train.epochs"] == "3.0"
    assert run.data.metrics["rows_quarantined"] == first.rows["quarantined"]
    assert any(i.dataset.digest == first.dataset_version for i in run.inputs.dataset_inputs)
    history = client.get_metric_history(first.mlflow_run_id, "train/loss")
    assert len(history) >= 2

    # the evaluation report, its plots, the gate decision and per-example predictions are attached
    attached = {
        a.path
        for folder in ("evaluation", "plots")
        for a in client.list_artifacts(first.mlflow_run_id, folder)
    }
    assert {
        "evaluation/evaluation.md",
        "evaluation/gate_decision.json",
        "evaluation/predictions.parquet",
        "plots/confusion_matrix.png",
        "plots/comparison.png",
    } <= attached
    assert run.data.tags["tunegate.gate"] == "passed"
    assert "bootstrap/vs_baseline/f1_macro/low" in run.data.metrics
    version = client.get_model_version("tiny-loans", "1")
    assert version.tags["gate"] == "passed"
    assert version.tags["dataset_version"] == first.dataset_version
    assert len(version.tags["config_digest"]) == 16
    # parity also ran the int8 serving path; serving.quantize: auto reads these two
    assert 0 <= float(version.tags["parity_int8_agreement"]) <= 1
    assert version.tags["serve_int8"] == (
        "true" if float(version.tags["parity_int8_agreement"]) >= 0.995 else "false"
    )
    assert "Gate: passed" in version.description

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

    # the planted values: not in any file under work_dir (runs + cache), the MLflow store (db +
    # artifacts), the Prefect database or its result storage
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH

    prefect_db = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    everything = "\n".join(
        [
            _all_text_under(tmp_path / "runs"),
            _all_text_under(store),
            _sqlite_text(store / "mlflow.db"),
            _sqlite_text(prefect_db),
            *(
                p.read_bytes().decode("utf-8", "replace")
                for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).rglob("*")
                if p.is_file()
            ),
        ]
    )
    # the search does see the planted rows, scrubbed...
    assert "SSN: <SSN_1>. Email <EMAIL_1>. The credit file is excellent." in everything
    values = [v for _, raw in PLANTED for v in raw]
    assert [v for v in values if v in everything] == []  # ...but none of their PII
    assert (Path(first.run_dir) / "data_quarantine.jsonl").read_text().count("APP-PII-3") == 1
    run_after = client.get_run(first.mlflow_run_id)
    assert run_after.data.metrics["rows_in"] == len(rows)
    # every stage's cost: in the summary (all ten stages) and as timing/<stage> metrics
    assert list(first.timings)[:10] == list(STAGES) and first.timings["train"] > 0
    assert run_after.data.metrics["timing/train"] == first.timings["train"]
    assert any(k.startswith("pii/data/narrative/") for k in run_after.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(first.mlflow_run_id, "data_docs")}
    assert "data_docs/index.html" in artifacts

    # second run: compared against the champion; a strict no-regression gate keeps v1 champion
    second_state = retrain(
        config.model_copy(
            update={
                "gate": config.gate.model_copy(update={"max_regression": 0.0, "min_f1": 0.99}),
                "train": config.train.model_copy(update={"epochs": 0.25}),  # only the gate matters
            }
        ),
        return_state=True,
    )
    assert second_state.is_completed() and second_state.name == "Rejected"
    second = second_state.result()
    assert "absolute_target" in second.gate["failed"]
    decision = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=second.mlflow_run_id,
                artifact_path="evaluation/gate_decision.json",
                dst_path=str(tmp_path / "dl"),
            )
        ).read_text()
    )
    assert decision["champion_version"] == "1"
    # the champion was pinned once: the adversarial search attacked that same version
    second_run = client.get_run(second.mlflow_run_id)
    assert second_run.data.tags["tunegate.adversarial_reference"] == "champion"
    assert second_run.data.tags["tunegate.compared_with_champion"] == "1"
    assert decision["intervals"]["champion"]["n"] == first.rows["test"]
    # unchanged data and data config: validation and scrubbing came from the Prefect cache
    assert _task_states(second.prefect_flow_run_id, ("validate", "scrub-pii")) == {"Cached"}
    assert second.dataset_version == first.dataset_version
    assert second.metrics["champion"] is not None
    assert second.gate["champion_version"] == "1"
    assert second.gate["passed"] is False
    assert second.model["version"] == "2"
    assert second.model["aliases"] == ["challenger"]
    assert str(client.get_model_version_by_alias("tiny-loans", "champion").version) == "1"


def _task_states(flow_run_id: str, names: tuple[str, ...]) -> set[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> set[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return {
            r.state.name for r in runs if r.name.split("-")[0] in {n.split("-")[0] for n in names}
        }

    return asyncio.run(read())
