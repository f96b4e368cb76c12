"""flows.record on result objects with a fake tracker: the names each record writes, no raw text."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

import flows.record as record
from flows.record import DataStage, Evaluation, RetrainSummary
from tasks.adversarial import AdversarialResult
from tasks.augment import AugmentResult
from tasks.evaluate import EvalResult
from tasks.feedback import FeedbackMerge
from tasks.gate import GateSettings, Interval, decide_promotion
from tasks.pii import ScrubResult
from tasks.split import SplitResult
from tasks.train import TrainResult
from tasks.validate import ExpectationOutcome, ValidationReport

pytestmark = pytest.mark.unit

RAW = "Xiuying Wangchuk wants a loan"  # a raw text: may sit in the split files, never in a record


class FakeClient:
    def __init__(self) -> None:
        self.inputs: list = []
        self.artifact_dirs: list[tuple[str, str]] = []

    def log_inputs(self, run_id: str, datasets: list) -> None:
        self.inputs += datasets

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str) -> None:
        self.artifact_dirs.append((local_dir, artifact_path))


class FakeTracker:
    run_id = "run-1"

    def __init__(self) -> None:
        self.client = FakeClient()
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[str] = []
        self.dicts: dict[str, dict] = {}

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        for name in metrics:  # what MLflow refuses, this tracker refuses too
            _validate_metric_name(name)
        self.metrics.update({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: dict[str, object]) -> None:
        for name in tags:
            _validate_tag_name(name)
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert Path(path).is_file(), path
        self.artifacts.append(f"{artifact_path}/{Path(path).name}")

    def log_dict(self, data: dict, name: str) -> None:
        self.dicts[name] = json.loads(json.dumps(data, default=str))

    def recorded(self) -> str:
        """Everything but the files: names, values, JSON artifacts, dataset inputs."""
        return json.dumps(
            [self.metrics, self.tags, self.artifacts, self.dicts, repr(self.client.inputs)]
        )


@pytest.fixture
def prefect_artifacts(monkeypatch) -> list[dict]:
    made: list[dict] = []
    for name in ("create_table_artifact", "create_markdown_artifact", "create_link_artifact"):
        monkeypatch.setattr(
            record, name, lambda *a, _kind=name, **kw: made.append({"kind": _kind, "a": a, **kw})
        )
    return made


def _split(tmp_path: Path) -> SplitResult:
    paths = {}
    for part in ("train", "val", "test"):
        paths[part] = tmp_path / f"{part}.parquet"
        pd.DataFrame({"text": [RAW, "other text"], "label": ["a", "b"]}).to_parquet(paths[part])
    return SplitResult(
        dataset_version="abc123",
        train_path=paths["train"],
        val_path=paths["val"],
        test_path=paths["test"],
        sizes={"train": 2, "val": 2, "test": 2},
        class_counts={"train": {"a": 1, "b": 1}},
        leakage_removed=1,
        near_duplicates={"val": 0, "test": 1},
        near_duplicate_lines={"test": [[4, 9]]},
    )


def _scrubbed(tmp_path: Path, name: str) -> ScrubResult:
    quarantine = tmp_path / f"{name}_quarantine.jsonl"
    quarantine.write_text('{"_line": 3, "_reason": "null text"}\n')
    return ScrubResult(
        accepted_path=tmp_path / f"{name}_accepted.parquet",
        quarantine_path=quarantine,
        rows_in=10,
        rows_accepted=9,
        rows_quarantined=1,
        accepted_lines=list(range(1, 10)),
        audit={
            "records_with_pii": 2,
            "by_column": {"narrative": {"EMAIL": 2, "PERSON": 1}},
            "rows_dropped": 0,
            "residual_hits": {"EMAIL": 0},
        },
    )


def _evaluation() -> Evaluation:
    candidate = EvalResult(
        metrics={"f1_macro": 0.9, "accuracy": 0.92, "f1/a": 0.95, "latency_p95_s": 0.01},
        predictions=["a", "b", "a"],
        references=["a", "b", "b"],
    )
    baseline = EvalResult(metrics={"f1_macro": 0.5}, predictions=["a", "a", "a"])
    interval = Interval(
        metric="f1_macro", delta=0.4, low=0.1, high=0.6, confidence=0.95, resamples=10, n=3
    )
    return Evaluation(
        candidate=candidate,
        baseline=baseline,
        champion=None,
        adversarial={"candidate": EvalResult(metrics={"f1_macro": 0.7})},
        intervals={"baseline": interval},
    )


def test_record_feedback_names_and_no_merged_file():
    tracker = FakeTracker()
    feedback = FeedbackMerge(
        batches=["b1", "b2"], new_batches=["b2"], rows=5, added=3, merged_path=Path("/raw.jsonl")
    )
    record.record_feedback(tracker, feedback)
    assert tracker.tags == {"tunegate.feedback.batches": "2", "tunegate.feedback.new_batches": "b2"}
    assert tracker.metrics == {
        "feedback_rows": 5,
        "feedback_added": 3,
        "feedback_duplicates": 0,
        "feedback_relabelled": 0,
    }
    assert "merged_path" not in tracker.dicts["data/feedback_batches.json"]


def test_record_data_both_files(tmp_path, prefect_artifacts):
    tracker = FakeTracker()
    docs = tmp_path / "docs" / "index.html"
    docs.parent.mkdir()
    docs.write_text("<html/>")
    report = ValidationReport(
        rows_in=10,
        accepted_lines=list(range(1, 10)),
        quarantined={3: "null text"},
        labels=["a", "b"],
        expectations=[ExpectationOutcome(expectation="not_null", column="text", success=False)],
        data_docs=str(docs),
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stage = DataStage(
        report=report,
        scrubbed={"data": _scrubbed(tmp_path, "data"), "test": _scrubbed(tmp_path, "test")},
    )
    record.record_data(tracker, stage, run_dir)
    assert sorted(tracker.artifacts) == ["data/data_quarantine.jsonl", "data/test_quarantine.jsonl"]
    assert (run_dir / "data_quarantine.jsonl").is_file()
    assert set(tracker.dicts) == {
        "data/validation_report.json",
        "data/pii_audit_data.json",
        "data/pii_audit_test.json",
    }
    assert tracker.dicts["data/validation_report.json"]["quarantined"] == {"3": "null text"}
    assert tracker.metrics == {
        f"pii/{f}/{k}": v
        for f in ("data", "test")
        for k, v in {
            "narrative/EMAIL": 2,
            "narrative/PERSON": 1,
            "rows_dropped": 0,
            "residual_hits": 0,
        }.items()
    }
    assert tracker.client.artifact_dirs == [(str(docs.parent), "data_docs")]
    assert [(a["kind"], a["key"]) for a in prefect_artifacts] == [
        ("create_table_artifact", "pii-audit"),
        ("create_link_artifact", "data-docs"),
    ]
    assert len(prefect_artifacts[0]["a"][0]) == 4  # one row per file, column and entity


def test_record_split_and_rows(tmp_path):
    tracker = FakeTracker()
    splits = _split(tmp_path)
    record.record_split(tracker, splits, Path("data/loans.jsonl"))
    record.record_rows(tracker, {"in": 10, "train": 2}, splits.dataset_version)
    assert tracker.artifacts == [f"data/splits/{p}.parquet" for p in ("train", "val", "test")]
    assert tracker.metrics == {
        "near_duplicates_val": 0,
        "near_duplicates_test": 1,
        "class_count/train/a": 1,
        "class_count/train/b": 1,
        "rows_in": 10,
        "rows_train": 2,
    }
    assert tracker.dicts["data/leakage_report.json"]["leakage_removed_from_train"] == 1
    assert tracker.tags == {"tunegate.dataset_version": "abc123"}
    (dataset,) = tracker.client.inputs
    assert dataset.dataset.digest == "abc123"
    assert RAW not in tracker.recorded()


def test_record_augmentation_and_adversarial(tmp_path, prefect_artifacts):
    tracker = FakeTracker()
    record.record_augmentation(tracker, None)
    record.record_adversarial(tracker, None)
    assert tracker.recorded() == FakeTracker().recorded()  # nothing for a skipped stage
    samples = tmp_path / "augmentation_samples.json"
    samples.write_text(json.dumps([{"strategy": "char", "original": "x", "augmented": "y"}]))
    augmented = AugmentResult(
        train_path=tmp_path / "train.parquet",
        rows_original=10,
        rows_added=4,
        per_strategy={"char": 3, "word": 1},
        per_class={"a": 4},
        near_duplicates_removed=2,
        skipped_strategies=[],
        sample_path=samples,
    )
    adversarial = AdversarialResult(
        train_path=tmp_path / "t.parquet",
        robust_test_path=None,
        reference="champion",
        train_attacked=8,
        train_flipped=2,
        test_attacked=5,
        test_flipped=1,
        attack_success_rate=0.25,
        per_operation={"char": 2},
    )
    record.record_augmentation(tracker, augmented)
    record.record_adversarial(tracker, adversarial)
    assert tracker.metrics == {
        "augment/char": 3,
        "augment/word": 1,
        "augment/near_duplicates_removed": 2,
        "adversarial/train_flipped": 2,
        "adversarial/train_attacked": 8,
        "adversarial/test_flipped": 1,
        "adversarial/attack_success_rate": 0.25,
    }
    assert tracker.tags == {"tunegate.adversarial_reference": "champion"}
    assert tracker.artifacts == ["augmentation/augmentation_samples.json"]
    assert [a["key"] for a in prefect_artifacts] == ["augmentation-samples"]


def test_record_training(tmp_path):
    tracker = FakeTracker()
    (tmp_path / "train").mkdir()
    history = [{"step": 1, "loss": 1.2}, {"step": 2, "eval_loss": 1.0, "eval_f1_macro": 0.5}]
    (tmp_path / "train" / "history.json").write_text(json.dumps(history))
    trained = TrainResult(
        model_dir=tmp_path / "train" / "model",
        epochs_run=2,
        steps=2,
        seconds=1.0,
        examples_per_second=10.0,
        overfitting_warning="val loss rose",
    )
    record.record_training(tracker, trained, tmp_path)
    assert tracker.artifacts == ["plots/loss_curves.png"]
    assert tracker.dicts["train/result.json"]["steps"] == 2
    assert tracker.tags == {"tunegate.overfitting_warning": "val loss rose"}


def test_record_evaluation_and_gate(tmp_path):
    tracker = FakeTracker()
    evaluation = _evaluation()
    record.record_evaluation(tracker, evaluation, tmp_path)
    assert tracker.metrics == {
        "test/candidate/f1_macro": 0.9,
        "test/candidate/accuracy": 0.92,
        "test/candidate/f1/a": 0.95,
        "test/candidate/latency_p95_s": 0.01,
        "test/baseline/f1_macro": 0.5,
        "adversarial/candidate/f1_macro": 0.7,
        "bootstrap/vs_baseline/f1_macro/delta": 0.4,
        "bootstrap/vs_baseline/f1_macro/low": 0.1,
        "bootstrap/vs_baseline/f1_macro/high": 0.6,
    }
    assert tracker.artifacts == ["evaluation/predictions.parquet"]
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert list(predictions.columns) == ["reference", "candidate", "baseline"]  # no input text

    decision = decide_promotion(
        evaluation.candidate.metrics,
        evaluation.baseline.metrics,
        None,
        GateSettings(),
        intervals=evaluation.intervals,
    )
    gate = FakeTracker()
    record.record_gate(gate, decision, evaluation, None, GateSettings())
    saved = gate.dicts["evaluation/gate_decision.json"]
    assert set(saved) == {
        "passed",
        "reasons",
        "task",
        "metric",
        "checks",
        "intervals",
        "champion_version",
        "settings",
    }
    assert saved["intervals"]["baseline"]["n"] == 3
    assert gate.tags == {
        "tunegate.gate": "passed",
        "tunegate.gate.failed_checks": "-",
        "tunegate.compared_with_champion": "-",
    }


def test_record_summary_writes_json_and_prefect_artifacts(tmp_path, prefect_artifacts):
    evaluation = _evaluation()
    decision = decide_promotion(
        evaluation.candidate.metrics, evaluation.baseline.metrics, None, GateSettings()
    )
    summary = RetrainSummary(
        mlflow_run_id="run-1",
        prefect_flow_run_id=None,
        dataset_version="abc123",
        rows={"in": 10},
        metrics={"candidate": evaluation.candidate.metrics, "baseline": None, "champion": None},
        gate={"passed": True},
        model={"name": "m", "version": "3", "promoted": True, "note": "first champion"},
        run_dir=str(tmp_path),
        tracking_uri="sqlite:///x.db",
    )
    record.record_summary(summary, evaluation, decision, tmp_path / "evaluation.md", GateSettings())
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert list(saved) == list(RetrainSummary.model_fields)
    markdown, table = prefect_artifacts
    assert (markdown["key"], table["key"]) == ("gate-decision", "evaluation")
    assert markdown["a"][0].startswith("# PROMOTED: m v3")
    rows = {row["metric"]: row for row in table["a"][0]}
    assert list(rows) == ["f1_macro", "accuracy", "latency_p95_s", "f1/a"]
    assert rows["f1_macro"] == {
        "metric": "f1_macro",
        "candidate": "0.9000",
        "baseline": "0.5000",
        "champion": "-",
        "target": ">= 0.8500",
    }
    assert rows["f1/a"]["target"] == ">= 0.0000"
    assert RAW not in json.dumps(prefect_artifacts, default=str)


HOSTILE = ["reverted_card_payment?", "Refund", "refund", "a/b #1 %50", "café 日本", "long " * 60]


def test_hostile_labels_become_escaped_metric_names_with_the_mapping_recorded(tmp_path):
    """A label ending in `?` once crashed the run at `class_count/train/<label>`."""
    tracker = FakeTracker()
    splits = _split(tmp_path)
    splits.class_counts = {"train": {label: i + 1 for i, label in enumerate(HOSTILE)}}
    record.record_split(tracker, splits, Path("data/intents.jsonl"))
    mapping = tracker.dicts["data/labels.json"]
    assert sorted(mapping.values()) == sorted(HOSTILE)
    assert len({key.lower() for key in mapping}) == len(HOSTILE)  # Refund and refund apart
    assert {tracker.metrics[f"class_count/train/{key}"] for key in mapping} == set(
        range(1, len(HOSTILE) + 1)
    )
    assert mapping["refund"] == "refund"  # an already safe label keeps its name

    evaluation = _evaluation()
    evaluation.candidate.labels = HOSTILE
    evaluation.candidate.metrics |= {f"f1/{label}": 0.5 for label in HOSTILE}
    evaluation.adversarial = {"candidate": evaluation.candidate}
    record.record_evaluation(tracker, evaluation, tmp_path)
    for key in mapping:
        assert tracker.metrics[f"test/candidate/f1/{key}"] == 0.5
        assert tracker.metrics[f"adversarial/candidate/f1/{key}"] == 0.5


def test_a_hostile_column_name_is_escaped_in_pii_metrics(tmp_path, prefect_artifacts):
    tracker = FakeTracker()
    scrubbed = _scrubbed(tmp_path, "data")
    scrubbed.audit["by_column"] = {"Notes (free text)?": {"EMAIL": 2}}
    report = ValidationReport(
        rows_in=10, accepted_lines=[1], quarantined={}, labels=["a"], expectations=[]
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record.record_data(tracker, DataStage(report, {"data": scrubbed}), run_dir)
    (column,) = tracker.dicts["data/pii_columns.json"]
    assert tracker.dicts["data/pii_columns.json"][column] == "Notes (free text)?"
    assert tracker.metrics[f"pii/data/{column}/EMAIL"] == 2
