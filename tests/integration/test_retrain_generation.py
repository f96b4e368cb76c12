"""The retrain flow for `model.task: generation`: a templated summarization set with planted
defects and PII, a tiny random Llama, the real gate (ROUGE-1 target and +0.15 over the zero-shot
baseline), then a second run that scores the registered champion on the same test split."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.config import ConfigError, load_config
from flows.retrain import retrain
from tests.helpers.tiny_models import build_tiny_llama
from tunegate.demo_data.notes import summarization_rows

pytestmark = pytest.mark.integration

PLANTED_EMAIL = "zq.summary@example.org"


def _notes(path: Path) -> list[dict]:
    """400 notes (`note` -> `summary`) plus 4 defects and one summary carrying an email."""
    rows = [
        {"ticket": f"T-{i}", "note": r["text"], "summary": r["target"]}
        for i, r in enumerate(summarization_rows(400, seed=4))
    ]
    rows[7]["summary"] = rows[7]["summary"] + f" contact {PLANTED_EMAIL}"
    rows += [
        {"ticket": "T-blank", "note": "note 1 : on monday the customer bob bought", "summary": " "},
        {"ticket": "T-null", "note": "note 2 : on friday the customer erin returned"},
        {"ticket": "T-dup", "note": rows[0]["note"], "summary": rows[0]["summary"]},
        {"ticket": "T-empty", "note": "", "summary": "alice bought one red chairs"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_generation_config_names_the_missing_key(tmp_path):
    data = tmp_path / "notes.jsonl"
    _notes(data)
    with pytest.raises(ConfigError, match="data.target_column"):
        load_config(None, [f"data.path={data}", "model.task=generation"])
    with pytest.raises(ConfigError, match="data.target_column"):
        load_config(None, [f"data.path={data}", "data.target_column=summary"])


def test_generation_retrain_gates_on_rouge_then_meets_its_champion(prefect_backend, tmp_path):
    data = tmp_path / "notes.jsonl"
    rows = _notes(data)
    model_dir = build_tiny_llama(tmp_path / "llama", [r["note"] for r in rows])
    store = tmp_path / "mlflow"
    config = load_config(
        None,
        [
            f"data.path={data}",
            "data.text_column=note",
            "data.target_column=summary",
            "data.id_column=ticket",
            "model.task=generation",
            f"model.base_model={model_dir}",
            "model.max_length=48",
            "model.max_new_tokens=8",
            "train.method=full",
            "train.epochs=6",
            "train.early_stopping_patience=6",
            "train.learning_rate=0.003",
            "train.batch_size=16",
            "train.generation_eval_samples=32",
            "evaluate.latency_samples=3",
            "evaluate.batch_size=16",
            "gate.min_rouge1=0.25",  # the default margin (+0.15 over the baseline) stays on
            "gate.max_latency_s=600",  # a loaded shared CI machine must not decide this test
            "gate.max_unsupported_rate=0.5",  # gated, not skipped: the summaries hold no digits
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=tiny-notes",
            f"work_dir={tmp_path}/runs",
            f"feedback.store={tmp_path}/feedback",
        ],
    )

    state = retrain(config, return_state=True)
    assert state.is_completed() and state.name == "Promoted", state.message
    first = state.result()
    # every row accounted for: 4 defects quarantined with a reason, nothing augmented
    assert first.rows["in"] == len(rows)
    assert first.rows["quarantined"] == 4
    assert first.rows["train"] + first.rows["val"] + first.rows["test"] == 400
    assert first.rows["augmented"] == 0 and first.rows["adversarial"] == 0
    reasons = [
        json.loads(x)["_reason"]
        for x in (Path(first.run_dir) / "data_quarantine.jsonl").read_text().splitlines()
    ]
    assert sorted(reasons) == sorted(
        [
            "target is blank or too long",
            "target is missing",
            "duplicate text",
            "text length out of bounds",
        ]
    )
    candidate, baseline = first.metrics["candidate"], first.metrics["baseline"]
    print(f"generation flow: ROUGE-1 {baseline['rouge1']:.3f} -> {candidate['rouge1']:.3f}")
    assert candidate["rouge1"] >= baseline["rouge1"] + 0.15
    assert {"rouge2", "rougeL", "exact_match", "latency_p95_s"} <= set(candidate)
    # unsupported details: measured for both, gated on the candidate, in the report
    assert candidate["unsupported_rate"] <= 0.5 and "unsupported_rate" in baseline
    assert any(r.startswith("PASS unsupported_details: ") for r in first.gate["reasons"])
    assert "## Unsupported details" in (Path(first.run_dir) / "evaluation.md").read_text()
    assert first.gate["passed"] and "margin_over_baseline" not in first.gate["failed"]
    # the pyfunc a server loads answered as the evaluated model did, before registration
    assert any(r.startswith("PASS parity: ") for r in first.gate["reasons"]), first.gate

    # the summaries were scrubbed too: the planted email is nowhere in the split files
    splits = pd.concat(
        pd.read_parquet(Path(first.run_dir) / f"{s}.parquet") for s in ("train", "val", "test")
    )
    assert list(splits.columns) == ["_line", "text", "target"]
    assert not splits["target"].str.contains(PLANTED_EMAIL, regex=False).any()
    assert splits["target"].str.contains("<EMAIL_1>", regex=False).sum() == 1

    client = MlflowClient(config.mlflow.tracking_uri)
    run = client.get_run(first.mlflow_run_id)
    assert run.data.tags["tunegate.gate"] == "passed"
    assert "bootstrap/vs_baseline/rouge1/low" in run.data.metrics
    assert "test/baseline/unsupported_rate" in run.data.metrics
    assert client.get_model_version("tiny-notes", "1").tags["task"] == "generation"
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    served = mlflow.pyfunc.load_model("models:/tiny-notes@champion")
    test = pd.read_parquet(Path(first.run_dir) / "test.parquet")
    out = served.predict(pd.DataFrame({"text": test["text"].tolist()[:3]}))
    assert len(out["output"]) == 3

    # second run: the champion (v1) is scored on the same split through its MLflow pyfunc and
    # gives exactly the first run's numbers
    second = retrain(
        config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})}),
        return_state=True,
    ).result()
    assert second.gate["champion_version"] == "1"
    assert second.metrics["champion"]["rouge1"] == pytest.approx(candidate["rouge1"])
    assert second.metrics["baseline"]["rouge1"] == pytest.approx(baseline["rouge1"])
