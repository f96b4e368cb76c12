"""Labels are arbitrary user strings: the retrain flow runs end to end with labels that hold
punctuation, slashes, spaces, markdown and math characters, unicode, 300 characters, and two
that differ only by case, and every name built from a label is escaped and mapped back.

A public intent set with a label ending in `?` once passed validation and then crashed when the
label became part of an MLflow metric name (`class_count/train/<label>`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.config import load_config
from flows.retrain import retrain
from tasks.metrics import name_key
from tunegate.demo_data.loans import generate

pytestmark = pytest.mark.integration

HOSTILE = [
    "reverted_card_payment?",
    "Refund",
    "refund",
    "a/b #1 %50",
    "café ünïcödé 日本",
    "$x^{$ | pipe",
    "long " * 60,  # 300 characters
]
MLFLOW_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/ ")


def test_retrain_with_hostile_labels_escapes_and_maps_every_name(
    prefect_backend, tiny_model_dir, tmp_path
):
    rows = [r for r in generate(n=170, seed=11, defect_rate=0) if r["narrative"]][:140]
    data_path = tmp_path / "hostile.jsonl"
    with data_path.open("w", encoding="utf-8") as fh:
        for i, row in enumerate(rows):
            label = HOSTILE[i % len(HOSTILE)]
            fh.write(json.dumps({"id": f"r{i}", "text": row["narrative"], "intent": label}) + "\n")
    store = tmp_path / "mlflow"
    config = load_config(
        None,
        [
            f"data.path={data_path}",
            "data.label_column=intent",
            "data.id_column=id",
            f"model.base_model={tiny_model_dir}",
            "model.max_length=48",
            "train.epochs=1",
            "evaluate.latency_samples=2",
            "evaluate.bootstrap_resamples=50",
            "augment.ratio=0.2",
            "adversarial.max_train_examples=14",
            "adversarial.max_test_examples=14",
            "adversarial.max_steps=1",
            "adversarial.candidates_per_step=2",
            # user-keyed settings: their keys must not become raw param names either
            'gate.class_min_f1={"reverted_card_payment?": 0.0, "Refund": 0.0}',
            'augment.class_ratios={"a/b #1 %50": 0.3}',
            "gate.max_latency_s=600",
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=hostile-labels",
            f"work_dir={tmp_path}/runs",
            f"feedback.store={tmp_path}/feedback",
        ],
    )
    state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.rows["accepted"] == len(rows)

    client = MlflowClient(config.mlflow.tracking_uri)
    run = client.get_run(summary.mlflow_run_id)
    names = [*run.data.metrics, *run.data.params, *run.data.tags]
    assert all(set(n) <= MLFLOW_NAME and len(n) <= 250 for n in names), [
        n for n in names if not set(n) <= MLFLOW_NAME or len(n) > 250
    ]

    # the mapping is recorded: one key per label, distinct even ignoring case
    local = Path(
        client.download_artifacts(summary.mlflow_run_id, "data/labels.json", str(tmp_path))
    )
    mapping = json.loads(local.read_text(encoding="utf-8"))
    assert sorted(mapping.values()) == sorted(HOSTILE)
    assert len({k.lower() for k in mapping}) == len(HOSTILE)
    assert mapping["refund"] == "refund" and mapping[name_key("Refund")] == "Refund"
    for key in mapping:
        assert f"class_count/train/{key}" in run.data.metrics
        assert f"test/candidate/f1/{key}" in run.data.metrics
        assert f"test/baseline/f1/{key}" in run.data.metrics
    # a user-keyed dict is one JSON param, the labels intact inside it
    assert json.loads(run.data.params["gate.class_min_f1"]) == {
        "reverted_card_payment?": 0.0,
        "Refund": 0.0,
    }

    # the report keeps one table row per label; a `|` in a label does not split its cell
    report = (Path(summary.run_dir) / "evaluation.md").read_text(encoding="utf-8")
    per_class = report.split("| class |")[1].split("\n\n")[0].splitlines()[2:]
    assert len(per_class) == len(HOSTILE)
    assert all(line.replace("\\|", "").count("|") == 6 for line in per_class)
    assert "$x^{$ \\| pipe" in report
    assert (Path(summary.run_dir) / "confusion_matrix.png").stat().st_size > 0
