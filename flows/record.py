"""Recording a stage's result in MLflow and Prefect: one `record_*` function per result kind.

The flow calls a stage, then the one function here that records what it returned. Every
metric, tag, artifact and Prefect artifact name the retrain flow writes is in this module, so
this is where to look up (or add) one. Only counts, metrics, paths of files the stages wrote
(already scrubbed) and identifiers are recorded: never a raw text.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from pydantic import BaseModel

from tasks.adversarial import AdversarialResult
from tasks.augment import AugmentResult
from tasks.evaluate import EvalResult
from tasks.feedback import FeedbackMerge
from tasks.gate import GateDecision, GateSettings, Interval
from tasks.metrics import name_keys, per_class_metrics
from tasks.pii import ScrubResult
from tasks.report import cell, gate_targets, md, save_json, table_keys
from tasks.search import SearchResult
from tasks.split import SplitResult
from tasks.train import TrainResult, plot_history
from tasks.validate import ValidationReport


class Tracker(Protocol):
    """What recording needs of `tasks.registry.Tracker` (a fake one in the unit tests)."""

    run_id: str
    client: object

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: dict[str, object]) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: dict, name: str) -> None: ...


class RetrainSummary(BaseModel):
    """What scripts read from `--summary-json`. Keys are stable."""

    mlflow_run_id: str
    prefect_flow_run_id: str | None
    dataset_version: str
    rows: dict[str, int]
    metrics: dict[str, dict[str, float] | None]
    gate: dict
    model: dict
    run_dir: str
    tracking_uri: str
    feedback: dict = {}  # batches (all merged), new_batches (first included by this run)
    timings: dict[str, float] = {}  # seconds per stage (flows.timing.STAGES), 0.0 when skipped
    search: dict | None = None  # tasks.search.SearchResult when search.enabled, else None
    # rows, candidate, champion: the held-out production corrections (None: the test split has
    # none); approval: decision, by, comment when gate.approval=required (else None)
    production_corrections: dict | None = None
    approval: dict | None = None
    # the review queue (review.url set): project_id, imported, selected; or error (the type)
    review: dict | None = None


@dataclass
class DataStage:
    """Validation and PII scrubbing of the data file and (if configured) the test file."""

    report: ValidationReport  # of the data file
    scrubbed: dict[str, ScrubResult]  # "data", and "test" when data.test_path is set

    @property
    def labels(self) -> list[str]:
        return self.report.labels

    def accepted(self, name: str) -> Path | None:
        """The scrubbed accepted rows of file `name` ("data" or "test"), None if not given."""
        return self.scrubbed[name].accepted_path if name in self.scrubbed else None

    @property
    def rows_in(self) -> int:
        return sum(s.rows_in for s in self.scrubbed.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(s.rows_quarantined for s in self.scrubbed.values())


@dataclass
class Evaluation:
    """Candidate, baseline and champion on one test split, with the paired intervals."""

    candidate: EvalResult
    baseline: EvalResult | None
    champion: EvalResult | None
    adversarial: dict[str, EvalResult]
    intervals: dict[str, Interval]
    # candidate (and champion) on the test rows that correct served predictions
    production: dict[str, EvalResult] = field(default_factory=dict)
    production_rows: int = 0

    def production_summary(self) -> dict | None:
        """The summary's `production_corrections`: rows and each system's figures."""
        if not self.production_rows:
            return None
        return {
            "rows": self.production_rows,
            **{name: dict(result.metrics) for name, result in self.production.items()},
        }

    def systems(self) -> list[tuple[str, EvalResult | None]]:
        return [
            ("candidate", self.candidate),
            ("baseline", self.baseline),
            ("champion", self.champion),
        ]


def record_feedback(tracker: Tracker, feedback: FeedbackMerge) -> None:
    """Which feedback batches this run included: tags, metrics and the full list."""
    tracker.set_tags(
        {
            "tunegate.feedback.batches": len(feedback.batches),
            "tunegate.feedback.new_batches": ",".join(feedback.new_batches)[:4900] or "-",
        }
    )
    tracker.log_metrics(
        {
            "feedback_rows": feedback.rows,
            "feedback_added": feedback.added,
            "feedback_duplicates": feedback.duplicates,
            "feedback_relabelled": feedback.relabelled,
        }
    )
    tracker.log_dict(
        feedback.model_dump(mode="json", exclude={"merged_path"}), "data/feedback_batches.json"
    )


def record_data(tracker: Tracker, data: DataStage, run_dir: Path) -> None:
    """Quarantine files, validation report, PII audit (counts only) and Data Docs."""
    for scrubbed in reversed(data.scrubbed.values()):
        target = run_dir / scrubbed.quarantine_path.name
        shutil.copyfile(scrubbed.quarantine_path, target)
        tracker.log_artifact(target, "data")
    report = data.report
    tracker.log_dict(
        {
            "rows_in": report.rows_in,
            "quarantined": {str(k): v for k, v in report.quarantined.items()},
            "expectations": [e.model_dump() for e in report.expectations],
        },
        "data/validation_report.json",
    )
    metrics: dict[str, float] = {}
    table = []
    columns = name_keys(c for s in data.scrubbed.values() for c in s.audit["by_column"])
    if any(key != column for column, key in columns.items()):
        tracker.log_dict({k: c for c, k in columns.items()}, "data/pii_columns.json")
    for name, scrubbed in data.scrubbed.items():
        audit = scrubbed.audit
        tracker.log_dict(audit, f"data/pii_audit_{name}.json")
        for column, counts in audit["by_column"].items():
            for entity, n in counts.items():
                metrics[f"pii/{name}/{columns[column]}/{entity}"] = n
                table.append({"file": name, "column": column, "entity": entity, "count": n})
        metrics[f"pii/{name}/rows_dropped"] = audit["rows_dropped"]
        metrics[f"pii/{name}/residual_hits"] = sum(audit["residual_hits"].values())
    tracker.log_metrics(metrics)
    create_table_artifact(
        table or [{"file": "data", "column": "-", "entity": "none found", "count": 0}],
        key="pii-audit",
        description="PII found and replaced, per file, column and entity type (counts only)",
    )
    if report.data_docs:
        site = Path(report.data_docs).parent
        tracker.client.log_artifacts(tracker.run_id, str(site), "data_docs")
        create_link_artifact(
            link=Path(report.data_docs).resolve().as_uri(),
            link_text="Great Expectations Data Docs",
            key="data-docs",
            description=f"Also in MLflow run {tracker.run_id} under data_docs/index.html",
        )


def record_split(tracker: Tracker, splits: SplitResult, source: Path) -> None:
    """The dataset as an MLflow input, the split files, class counts and the leakage report."""
    _log_dataset(tracker, splits.train_path, splits.dataset_version, source)
    for path in (splits.train_path, splits.val_path, splits.test_path):
        tracker.log_artifact(path, "data/splits")
    keys = name_keys(label for counts in splits.class_counts.values() for label in counts)
    record_label_keys(tracker, keys)
    tracker.log_metrics(
        {f"near_duplicates_{k}": v for k, v in splits.near_duplicates.items()}
        | {
            f"class_count/{part}/{keys[label]}": n
            for part, counts in splits.class_counts.items()
            for label, n in counts.items()
        }
    )
    tracker.log_dict(
        {
            "leakage_removed_from_train": splits.leakage_removed,
            "near_duplicates": splits.near_duplicates,
            "near_duplicate_lines (held-out line, train line)": splits.near_duplicate_lines,
        },
        "data/leakage_report.json",
    )


def record_label_keys(tracker: Tracker, keys: dict[str, str]) -> None:
    """`data/labels.json`: the key each label has in metric names (`class_count/train/<key>`,
    `test/candidate/f1/<key>`) -> the label. A label that is not a safe name (`card_lost?`,
    `Refund`) is escaped and hashed there (`tasks.metrics.name_key`); this file maps it back."""
    if keys:
        tracker.log_dict({key: label for label, key in keys.items()}, "data/labels.json")


def _log_dataset(tracker: Tracker, train_path: Path, version: str, source: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow.entities import DatasetInput, InputTag

    dataset = mlflow.data.from_pandas(
        pd.read_parquet(train_path), source=str(source), name="train", digest=version
    )
    tracker.client.log_inputs(
        tracker.run_id,
        datasets=[
            DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train")]
            )
        ],
    )


def record_augmentation(tracker: Tracker, augmented: AugmentResult | None) -> None:
    """Counts per strategy as metrics; the original -> augmented sample table in both UIs.

    The samples are rows of the scrubbed training split, so they hold no raw PII."""
    if augmented is None:
        return
    import pandas as pd

    tracker.log_metrics(
        {
            **{f"augment/{k}": v for k, v in augmented.per_strategy.items()},
            "augment/near_duplicates_removed": augmented.near_duplicates_removed,
        }
    )
    if augmented.sample_path is None:
        return
    samples = pd.read_json(augmented.sample_path, orient="records")
    if samples.empty:
        return
    tracker.log_artifact(augmented.sample_path, "augmentation")
    create_table_artifact(
        samples.to_dict(orient="records"),
        key="augmentation-samples",
        description="Augmentation: original -> augmented, a few per strategy "
        + json.dumps(augmented.per_strategy),
    )


def record_adversarial(tracker: Tracker, adversarial: AdversarialResult | None) -> None:
    if adversarial is None:
        return
    tracker.log_metrics(
        {
            "adversarial/train_flipped": adversarial.train_flipped,
            "adversarial/train_attacked": adversarial.train_attacked,
            "adversarial/test_flipped": adversarial.test_flipped,
            "adversarial/attack_success_rate": adversarial.attack_success_rate,
        }
    )
    tracker.set_tags({"tunegate.adversarial_reference": adversarial.reference})


def record_rows(tracker: Tracker, rows: dict[str, int], dataset_version: str) -> None:
    tracker.log_metrics({f"rows_{k}": v for k, v in rows.items()})
    tracker.set_tags({"tunegate.dataset_version": dataset_version})


def record_timings(tracker: Tracker, timings: dict[str, float]) -> None:
    """Seconds per stage as `timing/<stage>` metrics, beside the summary's `timings`."""
    tracker.log_metrics({f"timing/{stage}": seconds for stage, seconds in timings.items()})


def record_training(tracker: Tracker, trained: TrainResult, run_dir: Path) -> None:
    """Loss curves, the full training result and the overfitting warning."""
    curves = plot_history(run_dir / "train" / "history.json", run_dir / "loss_curves.png")
    tracker.log_artifact(curves, "plots")
    tracker.log_dict(trained.model_dump(mode="json"), "train/result.json")
    tracker.set_tags({f"train.runtime.{k}": v for k, v in trained.runtime.items()})
    if trained.overfitting_warning:
        tracker.set_tags({"tunegate.overfitting_warning": trained.overfitting_warning})


def record_search(
    tracker: Tracker, result: SearchResult, trials: list[dict], run_dir: Path
) -> None:
    """The search's figures as metrics, the best parameters as tags, the plots, `search.json`
    (the summary's `search`) and a Prefect table of this run's trials."""
    tracker.log_metrics(
        {
            "search/trials_run": result.trials_run,
            "search/pruned": result.pruned,
            "search/failed": result.failed,
            "search/trials_in_study": result.trials_in_study,
            "search/best_validation": result.best_validation_metric,
            "search/wall_seconds": result.wall_seconds,
        }
    )
    tracker.set_tags(
        {
            "tunegate.search.study": result.study_name,
            "tunegate.search.best_trial": result.best_trial,
            **{f"tunegate.search.best.{k}": v for k, v in result.best_params.items()},
        }
    )
    (run_dir / "search").mkdir(parents=True, exist_ok=True)
    path = save_json(result.model_dump(), run_dir / "search" / "search.json")
    tracker.log_artifact(path, "search")
    for plot in result.plots:
        tracker.log_artifact(Path(plot), "search")
    if trials:
        create_table_artifact(
            [
                {k: t[k] for k in ("number", "state", "value", "seconds", "mlflow_run_id")}
                for t in trials
            ],
            key="search-trials",
            description=f"Trials of study {result.study_name} run by this retrain "
            f"(best: trial {result.best_trial}, validation {result.metric} "
            f"{result.best_validation_metric:.4f})",
        )


def record_evaluation(tracker: Tracker, evaluation: Evaluation, run_dir: Path) -> None:
    """Test metrics per system, adversarial-file metrics, bootstrap intervals, predictions."""
    labels = evaluation.candidate.labels  # per-class entries go by label key (data/labels.json)
    for name, result in evaluation.systems():
        if result is not None:
            metrics = per_class_metrics(result.metrics, labels)
            tracker.log_metrics({f"test/{name}/{k}": v for k, v in metrics.items()})
    for name, result in evaluation.adversarial.items():
        metrics = per_class_metrics(result.metrics, labels)
        tracker.log_metrics({f"adversarial/{name}/{k}": v for k, v in metrics.items()})
    for name, result in evaluation.production.items():
        metrics = per_class_metrics(result.metrics, labels)
        tracker.log_metrics({f"production/{name}/{k}": v for k, v in metrics.items()})
    if evaluation.production_rows:
        tracker.log_metrics({"production/rows": evaluation.production_rows})
    for name, interval in evaluation.intervals.items():
        tracker.log_metrics(
            {
                f"bootstrap/vs_{name}/{interval.metric}/{k}": getattr(interval, k)
                for k in ("delta", "low", "high")
            }
        )
    path = _save_predictions(evaluation, run_dir / "predictions.parquet")
    tracker.log_artifact(path, "evaluation")


def _save_predictions(evaluation: Evaluation, path: Path) -> Path:
    """Per-example predictions of every system (no input text), for later paired comparisons."""
    import pandas as pd

    candidate = evaluation.candidate
    frame = pd.DataFrame({"reference": candidate.references, "candidate": candidate.predictions})
    for name, result in evaluation.systems()[1:]:
        if result is not None and len(result.predictions) == len(frame):
            frame[name] = result.predictions
    frame.to_parquet(path)
    return path


def record_gate(
    tracker: Tracker,
    decision: GateDecision,
    evaluation: Evaluation,
    champion_version: str | None,
    settings: GateSettings,
) -> None:
    """The decision as a JSON artifact (every check with its numbers) and as run tags."""
    tracker.log_dict(
        {
            "passed": decision.passed,
            "reasons": decision.reasons,
            "task": decision.task,
            "metric": decision.metric,
            "checks": [c.model_dump() for c in decision.checks],
            "intervals": {k: v.model_dump() for k, v in evaluation.intervals.items()},
            "champion_version": champion_version,
            "settings": settings.model_dump(),
        },
        "evaluation/gate_decision.json",
    )
    tracker.set_tags(
        {
            "tunegate.gate": "passed" if decision.passed else "failed",
            "tunegate.gate.failed_checks": ",".join(decision.failed) or "-",
            "tunegate.compared_with_champion": champion_version or "-",
        }
    )


def record_report(tracker: Tracker, report_path: Path, plots: list[Path]) -> None:
    tracker.log_artifact(report_path, "evaluation")
    for plot in plots:
        tracker.log_artifact(plot, "plots")


def record_summary(
    summary: RetrainSummary,
    evaluation: Evaluation,
    decision: GateDecision,
    report_path: Path,
    settings: GateSettings,
) -> None:
    """`summary.json` in the run folder; the gate-decision and evaluation Prefect artifacts."""
    save_json(summary.model_dump(), Path(summary.run_dir) / "summary.json")
    candidate = evaluation.candidate
    keys = table_keys(candidate) + [k for k in candidate.metrics if k.startswith("f1/")]
    targets = gate_targets(decision, settings, keys)
    cells = {
        key: {name: cell(result, key) for name, result in evaluation.systems()} for key in keys
    }
    rows = ["| metric | candidate | baseline | champion | target |", "|---|---|---|---|---|"]
    for key in keys:
        row = cells[key]
        rows.append(
            f"| {md(key)} | {row['candidate']} | {row['baseline']} | {row['champion']} "
            f"| {targets.get(key, '')} |"
        )
    model = summary.model
    verdict = "PROMOTED" if model["promoted"] else "REJECTED"
    create_markdown_artifact(
        f"# {verdict}: {model['name']} v{model['version']}\n\n{model['note']}\n\n"
        + "\n".join(rows)
        + "\n\n## Gate\n\n"
        + "\n".join(f"- {md(r)}" for r in decision.reasons)
        + f"\n\nMLflow run `{summary.mlflow_run_id}`, dataset `{summary.dataset_version}`, "
        f"report `{report_path}`.\n\nRows: " + json.dumps(summary.rows),
        key="gate-decision",
        description="Gate decision",
    )
    create_table_artifact(
        [{"metric": key, **cells[key], "target": targets.get(key, "")} for key in keys],
        key="evaluation",
        description="Test-split metrics",
    )
