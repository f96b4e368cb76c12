"""The retrain flow, top to bottom:

(merge feedback batches) -> validate -> scrub PII -> split -> augment -> baseline -> train -> evaluate (candidate, champion)
-> gate -> register and promote.

Stages pass paths and small typed results, never models. Every stage logs to one MLflow run,
tagged with the Prefect flow-run id. The run's files live in `<work_dir>/<flow run id>/`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import BaseModel

from flows.config import RetrainConfig
from flows.train_remote import train_on_pool
from tasks.augment import augment_task
from tasks.evaluate import (
    EvalResult,
    baseline_task,
    evaluate_candidate_task,
    evaluate_predictions,
    plot_confusion,
    save_json,
    write_report,
)
from tasks.feedback import FeedbackStore, merge_feedback_task, remove_merged
from tasks.gate import GateDecision, gate_task
from tasks.pii import scrub_task
from tasks.registry import (
    Tracker,
    load_champion,
    open_tracking,
    register_task,
    start_run,
)
from tasks.split import split_task
from tasks.train import plot_history, train_task
from tasks.validate import validate_task

HEADLINE = ("f1_macro", "accuracy")


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


def _metrics(result: EvalResult | None) -> dict[str, float] | None:
    return None if result is None else dict(result.metrics)


@flow(name="retrain", log_prints=True)
def retrain(config: RetrainConfig, only_new_feedback: bool = False) -> RetrainSummary:
    """Validate, scrub, split, augment, train, evaluate, gate and promote one model.

    `only_new_feedback` (set by the feedback-triggered deployment): finish at once when no
    feedback batch is pending, e.g. a queued run whose batches an earlier run already took.
    """
    logger = get_run_logger()
    if only_new_feedback and not FeedbackStore(config.feedback.store).pending_ids():
        logger.info("no new feedback since the last retrain: nothing to do")
        return Completed(message="no new feedback batches; nothing to retrain")
    run_id = flow_run.get_id() or "local"
    run_dir = (Path(config.work_dir) / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    client = open_tracking(config.mlflow)
    tracker = start_run(client, config.mlflow, {"prefect.flow_run_id": run_id})
    logger.info("MLflow run %s; files in %s", tracker.run_id, run_dir)
    tracker.log_params(config.flat())
    try:
        # Retrains of one registered model never overlap, whichever deployment started them
        # (`tunegate serve`/`deploy` create this limit with one slot; absent, it does not block).
        with concurrency(retrain_lock_name(config.mlflow.registered_model), occupy=1):
            summary = _run_stages(config, run_dir, tracker, logger)
    except DataRefused as exc:
        client.set_terminated(tracker.run_id, "FAILED")
        logger.error("stopped before training: %s", exc)
        return Failed(message=f"validation failed: {exc}")
    except BaseException:
        client.set_terminated(tracker.run_id, "FAILED")
        raise
    client.set_terminated(tracker.run_id, "FINISHED")
    return summary


def retrain_lock_name(registered_model: str) -> str:
    return f"tunegate-retrain-{registered_model}"


class DataRefused(Exception):
    """A table-level validation failure: stop the flow before training, without a traceback."""


def _run_stages(
    config: RetrainConfig, run_dir: Path, tracker: Tracker, logger: logging.Logger
) -> RetrainSummary:
    # 0. feedback: stored batches merged with the data file, so 1-2 apply to them as well.
    feedback, merge_tmp = merge_feedback_task(config.data, config.feedback, run_dir.name)
    data = config.data
    if feedback.merged_path is not None:
        data = config.data.model_copy(update={"path": feedback.merged_path})
    # 1. validate (Great Expectations) and 2. scrub PII, for the data file and the test file.
    try:
        report = validate_task(data, config.validate_, run_dir)
        if not report.passed:
            raise DataRefused("; ".join(report.problems))
        scrubbed = scrub_task(data, report, config.pii, run_dir, "data")
    finally:
        remove_merged(feedback, merge_tmp)  # the combined file holds raw text
    _log_feedback(tracker, feedback)
    rows_in, quarantined = report.rows_in, report.rows_quarantined
    test_accepted = None
    if config.data.test_path is not None:
        test_data = config.data.model_copy(
            update={"path": config.data.test_path, "labels": report.labels}
        )
        test_report = validate_task(test_data, config.validate_, run_dir)
        if not test_report.passed:
            raise DataRefused("data.test_path: " + "; ".join(test_report.problems))
        test_scrubbed = scrub_task(test_data, test_report, config.pii, run_dir, "test")
        test_accepted = test_scrubbed.accepted_path
        rows_in += test_report.rows_in
        quarantined += test_report.rows_quarantined
        tracker.log_artifact(test_scrubbed.quarantine_path, "data")
    tracker.log_artifact(scrubbed.quarantine_path, "data")
    tracker.log_dict(scrubbed.audit, "data/pii_audit.json")
    tracker.log_dict(
        {
            "rows_in": report.rows_in,
            "quarantined": {str(k): v for k, v in report.quarantined.items()},
            "expectations": [e.model_dump() for e in report.expectations],
        },
        "data/validation_report.json",
    )
    labels = report.labels

    # 3. split, versioned by content.
    splits = split_task(scrubbed.accepted_path, config.split, run_dir, test_accepted)
    _log_dataset(tracker, splits.train_path, splits.dataset_version, config.data.path)
    for path in (splits.train_path, splits.val_path, splits.test_path):
        tracker.log_artifact(path, "data/splits")

    # 4. augment the training split only.
    augmented = augment_task(splits.train_path, config.augment, run_dir)
    rows = {
        "in": rows_in,
        "accepted": rows_in - quarantined,
        "quarantined": quarantined,
        "scrubbed_records_with_pii": scrubbed.audit["records_with_pii"],
        **splits.sizes,
        "augmented": augmented.rows_added,
        "leakage_removed": splits.leakage_removed,
        "feedback_added": feedback.added,
        "feedback_duplicates": feedback.duplicates,
    }
    tracker.log_metrics({f"rows_{k}": v for k, v in rows.items()})
    tracker.set_tags({"tunegate.dataset_version": splits.dataset_version})

    # 5. baseline: the untuned base model with a few-shot head, cached per dataset version.
    baseline = baseline_task(
        Path(config.work_dir) / "cache",
        config.model.base_model,
        splits.dataset_version,
        splits.train_path,
        splits.test_path,
        labels,
        config.evaluate,
        config.split.seed,
    )

    # 6. train: here, or as its own deployment on `train.work_pool` (see flows/train_remote.py).
    if config.train.work_pool:
        trained = train_on_pool(
            augmented.train_path,
            splits.val_path,
            labels,
            config.model,
            config.lora,
            config.train,
            config.storage,
            config.mlflow,
            tracker,
            run_dir.name,
            run_dir / "train",
            logger,
        )
    else:
        trained = train_task(
            augmented.train_path,
            splits.val_path,
            labels,
            config.model,
            config.lora,
            config.train,
            run_dir / "train",
            sink=lambda step, values: tracker.log_metrics(
                {f"train/{k}": v for k, v in values.items()}, step
            ),
        )
    curves = plot_history(run_dir / "train" / "history.json", run_dir / "loss_curves.png")
    tracker.log_artifact(curves, "plots")

    # 7. evaluate candidate and champion on the same test split.
    candidate = evaluate_candidate_task(trained.model_dir, splits.test_path, config.evaluate)
    champion_version, champion_model = load_champion(
        config.mlflow.tracking_uri, config.mlflow.registered_model
    )
    champion = None
    if champion_model is not None:
        champion = evaluate_predictions(
            lambda texts: champion_model.predict(_frame(texts))["label"].tolist(),
            splits.test_path,
            labels,
        )
    for name, result in (("candidate", candidate), ("baseline", baseline), ("champion", champion)):
        if result is not None:
            tracker.log_metrics({f"test/{name}/{k}": v for k, v in result.metrics.items()})
    report_path = write_report(candidate, baseline, champion, run_dir / "evaluation.md")
    confusion = plot_confusion(
        candidate, run_dir / "confusion_matrix.png", "Candidate (test split)"
    )
    tracker.log_artifact(report_path, "evaluation")
    tracker.log_artifact(confusion, "plots")

    # 8. gate.
    decision: GateDecision = gate_task(
        candidate.metrics, _metrics(baseline), _metrics(champion), config.gate
    )
    gate_record = {"passed": decision.passed, "reasons": decision.reasons}
    tracker.log_dict(gate_record, "evaluation/gate_decision.json")
    tracker.set_tags({"tunegate.gate": "passed" if decision.passed else "failed"})

    # 9. register every candidate; move `champion` only when the gate passed.
    registration = register_task(
        config.mlflow.tracking_uri,
        config.mlflow.registered_model,
        tracker.run_id,
        trained.model_dir,
        tags={
            "dataset_version": splits.dataset_version,
            "gate": "passed" if decision.passed else "failed",
            "f1_macro": f"{candidate.metrics['f1_macro']:.4f}",
        },
        description=_model_card(config, splits.dataset_version, candidate, decision),
        gate_passed=decision.passed,
        expected_champion=champion_version,
    )

    summary = RetrainSummary(
        mlflow_run_id=tracker.run_id,
        prefect_flow_run_id=flow_run.get_id(),
        dataset_version=splits.dataset_version,
        rows=rows,
        metrics={
            "candidate": _metrics(candidate),
            "baseline": _metrics(baseline),
            "champion": _metrics(champion),
        },
        gate={**gate_record, "champion_version": champion_version},
        model={
            "name": registration.name,
            "version": registration.version,
            "aliases": registration.aliases,
            "promoted": registration.promoted,
            "note": registration.note,
        },
        run_dir=str(run_dir),
        tracking_uri=config.mlflow.tracking_uri,
        feedback={"batches": feedback.batches, "new_batches": feedback.new_batches},
    )
    save_json(summary.model_dump(), run_dir / "summary.json")
    if feedback.new_batches:  # only now: a failed run leaves them pending for the next one
        FeedbackStore(config.feedback.store).mark_included(
            feedback.new_batches, flow_run.get_id() or "local", tracker.run_id
        )
    _prefect_artifacts(summary, candidate, baseline, champion)
    return summary


def _log_feedback(tracker: Tracker, feedback) -> None:  # noqa: ANN001 - FeedbackMerge
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


def _frame(texts: list[str]):  # noqa: ANN202
    import pandas as pd

    return pd.DataFrame({"text": texts})


def _log_dataset(tracker: Tracker, train_path: Path, version: str, source: Path) -> None:
    import mlflow
    import pandas as pd

    dataset = mlflow.data.from_pandas(
        pd.read_parquet(train_path), source=str(source), name="train", digest=version
    )
    from mlflow.entities import DatasetInput, InputTag

    tracker.client.log_inputs(
        tracker.run_id,
        datasets=[
            DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train")]
            )
        ],
    )


def _model_card(
    config: RetrainConfig, version: str, candidate: EvalResult, decision: GateDecision
) -> str:
    lines = [
        f"Fine-tuned from `{config.model.base_model}` ({config.train.method}, r={config.lora.r}) "
        f"for {config.model.task} on dataset version `{version}`.",
        "",
        f"Test macro-F1 {candidate.metrics['f1_macro']:.4f}, accuracy {candidate.metrics['accuracy']:.4f}, "
        f"p95 latency {candidate.metrics.get('latency_p95_s', float('nan')):.3f}s.",
        "",
        "Gate: " + ("passed" if decision.passed else "failed"),
        *[f"- {r}" for r in decision.reasons],
    ]
    return "\n".join(lines)


def _prefect_artifacts(
    summary: RetrainSummary,
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
) -> None:
    rows = []
    for key in ("f1_macro", "accuracy", "f1_weighted", "latency_p95_s"):
        rows.append(
            {
                "metric": key,
                "candidate": round(candidate.metrics.get(key, float("nan")), 4),
                "baseline": round(baseline.metrics[key], 4)
                if baseline and key in baseline.metrics
                else None,
                "champion": round(champion.metrics[key], 4)
                if champion and key in champion.metrics
                else None,
            }
        )
    create_table_artifact(rows, key="evaluation", description="Test-split metrics")
    verdict = "PROMOTED" if summary.model["promoted"] else "NOT PROMOTED"
    create_markdown_artifact(
        f"# {verdict}: {summary.model['name']} v{summary.model['version']}\n\n"
        + "\n".join(f"- {r}" for r in summary.gate["reasons"])
        + f"\n\nMLflow run `{summary.mlflow_run_id}`, dataset `{summary.dataset_version}`.\n\n"
        + "Rows: "
        + json.dumps(summary.rows),
        key="gate-decision",
        description="Gate decision",
    )
