"""The retrain flow, top to bottom:

(merge feedback batches) -> validate -> scrub PII -> split -> augment -> baseline -> train ->
evaluate (candidate, champion) -> gate -> register and promote.

`model.task: classification` (macro-F1; few-shot baseline) or `generation` (ROUGE; zero-shot
baseline; augmentation and adversarial examples are classification-only and skipped).

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
from tasks.adversarial import adversarial_task, champion_model_dir, robust_metrics
from tasks.augment import AugmentResult, augment_task
from tasks.evaluate import (
    EvalResult,
    baseline_task,
    evaluate_candidate_task,
    evaluate_classifier_on,
    evaluate_generation_task,
    evaluate_generator,
    evaluate_predictions,
    gate_targets,
    generation_baseline_task,
    headline_keys,
    paired_bootstrap,
    plot_comparison,
    plot_confusion,
    save_json,
    write_report,
)
from tasks.feedback import FeedbackStore, merge_feedback_task, remove_merged
from tasks.gate import HEADLINE as HEADLINE_METRIC
from tasks.gate import GateDecision, GateSettings, Interval, gate_task
from tasks.models import TextClassifier
from tasks.pii import ScrubResult, scrub_task
from tasks.registry import (
    Tracker,
    load_champion,
    open_tracking,
    register_task,
    start_run,
)
from tasks.split import split_task
from tasks.train import TrainJob, plot_history, train_task
from tasks.validate import ValidationReport, validate_task

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
    # The final state's name says at a glance in the UI whether the champion moved.
    model = summary.model
    return Completed(
        data=summary,
        name="Promoted" if model["promoted"] else "Rejected",
        message=f"{model['name']} v{model['version']}: {model['note']}",
    )


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
    # Both are cached on the file's content + settings under <work_dir>/cache/data: a re-run
    # on unchanged data and config skips them (Prefect cache keys).
    data_cache = Path(config.work_dir).resolve() / "cache" / "data"
    try:
        report = validate_task(data, config.validate_, data_cache)
        if not report.passed:
            raise DataRefused("; ".join(report.problems))
        scrubbed = scrub_task(data, report, config.pii, data_cache, "data")
    finally:
        remove_merged(feedback, merge_tmp)  # the combined file holds raw text
    _log_feedback(tracker, feedback)
    _check_scrubbed(scrubbed, config)
    rows_in, quarantined = scrubbed.rows_in, scrubbed.rows_quarantined
    generation = config.model.task == "generation"
    test_accepted = None
    audits = {"data": scrubbed.audit}
    if config.data.test_path is not None:
        test_data = config.data.model_copy(
            update={"path": config.data.test_path, "labels": report.labels or None}
        )
        test_report = validate_task(test_data, config.validate_, data_cache)
        if not test_report.passed:
            raise DataRefused("data.test_path: " + "; ".join(test_report.problems))
        test_scrubbed = scrub_task(test_data, test_report, config.pii, data_cache, "test")
        _check_scrubbed(test_scrubbed, config)
        test_accepted = test_scrubbed.accepted_path
        rows_in += test_scrubbed.rows_in
        quarantined += test_scrubbed.rows_quarantined
        audits["test"] = test_scrubbed.audit
        tracker.log_artifact(_copy_into(test_scrubbed.quarantine_path, run_dir), "data")
    tracker.log_artifact(_copy_into(scrubbed.quarantine_path, run_dir), "data")
    _log_data_stage(tracker, report, audits, run_dir)
    labels = report.labels

    # 3. split, versioned by content; exact leakage removed from train, near-duplicates reported.
    splits = split_task(scrubbed.accepted_path, config.split, run_dir, test_accepted)
    _log_dataset(tracker, splits.train_path, splits.dataset_version, config.data.path)
    for path in (splits.train_path, splits.val_path, splits.test_path):
        tracker.log_artifact(path, "data/splits")
    tracker.log_metrics(
        {f"near_duplicates_{k}": v for k, v in splits.near_duplicates.items()}
        | {
            f"class_count/{part}/{label}": n
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

    # 4. augment the training split only; near-duplicates of val/test texts are dropped.
    # Classification only: a perturbed input would no longer match its generation target.
    train_path, robust_path, added = splits.train_path, None, 0
    if generation:
        logger.info("generation: augmentation and adversarial examples are skipped")
    else:
        augmented = augment_task(
            splits.train_path,
            config.augment,
            run_dir,
            [splits.val_path, splits.test_path],
            config.model.base_model,
        )
        _log_augmentation(tracker, augmented)
        train_path, added = augmented.train_path, augmented.rows_added

    # 4b. adversarial examples against the champion (else the base model with its head): flips
    # join the training split; the test split's hardest perturbations form the robustness slice.
    adversarial_added = 0
    if config.adversarial.enabled and not generation:
        adversarial = adversarial_task(
            train_path,
            splits.test_path,
            champion_model_dir(
                config.mlflow.tracking_uri, config.mlflow.registered_model, run_dir / "champion"
            ),
            config.model.base_model,
            labels,
            config.model.max_length,
            config.adversarial,
            run_dir / "adversarial",
        )
        train_path, robust_path = adversarial.train_path, adversarial.robust_test_path
        adversarial_added = adversarial.train_flipped
        tracker.log_metrics(
            {
                "adversarial/train_flipped": adversarial.train_flipped,
                "adversarial/train_attacked": adversarial.train_attacked,
                "adversarial/test_flipped": adversarial.test_flipped,
                "adversarial/attack_success_rate": adversarial.attack_success_rate,
            }
        )
        tracker.set_tags({"tunegate.adversarial_reference": adversarial.reference})
    rows = {
        "in": rows_in,
        "accepted": rows_in - quarantined,
        "quarantined": quarantined,
        "scrubbed_records_with_pii": scrubbed.audit["records_with_pii"],
        **splits.sizes,
        "augmented": added,
        "adversarial": adversarial_added,
        "leakage_removed": splits.leakage_removed,
        "feedback_added": feedback.added,
        "feedback_duplicates": feedback.duplicates,
    }
    tracker.log_metrics({f"rows_{k}": v for k, v in rows.items()})
    tracker.set_tags({"tunegate.dataset_version": splits.dataset_version})

    # 5. baseline, cached per dataset version: the untuned base model with a few-shot head
    # (classification), or prompted zero-shot exactly as the fine-tuned model will be (generation).
    if generation:
        baseline = generation_baseline_task(
            Path(config.work_dir) / "cache",
            config.model,
            splits.dataset_version,
            splits.test_path,
            config.evaluate,
        )
    else:
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
    job = TrainJob(
        train_path=train_path,
        val_path=splits.val_path,
        labels=None if generation else labels,
        model=config.model,
        lora=config.lora,
        train=config.train,
        out_dir=run_dir / "train",
    )
    if config.train.work_pool:
        trained = train_on_pool(job, config.storage, config.mlflow, tracker, run_dir.name, logger)
    else:
        # In a child process; a retried task or flow run resumes from the last checkpoint.
        trained = train_task.with_options(retries=config.train.retries)(
            job,
            sink=lambda step, values: tracker.log_metrics(
                {f"train/{k}": v for k, v in values.items()}, step
            ),
        )
    curves = plot_history(run_dir / "train" / "history.json", run_dir / "loss_curves.png")
    tracker.log_artifact(curves, "plots")
    tracker.log_dict(trained.model_dump(mode="json"), "train/result.json")
    if trained.overfitting_warning:
        tracker.set_tags({"tunegate.overfitting_warning": trained.overfitting_warning})

    # 7. evaluate candidate and champion on the same test split (and the adversarial slice).
    champion_version, champion_model = load_champion(
        config.mlflow.tracking_uri, config.mlflow.registered_model
    )
    champion = None

    def champion_predict(texts: list[str]) -> list[str]:
        """The registered champion's pyfunc: an `output` column (generation) or `label`."""
        column = "output" if generation else "label"
        return champion_model.predict(_frame(texts))[column].tolist()

    if generation:
        candidate = evaluate_generation_task(trained.model_dir, splits.test_path, config.evaluate)
        if champion_model is not None:
            champion = evaluate_generator(champion_predict, splits.test_path, config.evaluate)
    else:
        candidate = evaluate_candidate_task(trained.model_dir, splits.test_path, config.evaluate)
        if champion_model is not None:
            champion = evaluate_predictions(champion_predict, splits.test_path, labels)
    adversarial_path = None if generation else config.evaluate.adversarial_path
    if robust_path is not None or adversarial_path is not None:
        candidate_predict = TextClassifier(trained.model_dir).predict  # loaded once for both
    if robust_path is not None:
        # the robustness slice, beside the clean metrics, for the gate and the summary
        candidate.metrics.update(robust_metrics(candidate_predict, robust_path, labels))
        if champion is not None:
            champion.metrics.update(robust_metrics(champion_predict, robust_path, labels))
    adversarial = {}
    if adversarial_path is not None:
        predictors = {"candidate": candidate_predict}
        if champion_model is not None:
            predictors["champion"] = champion_predict
        adversarial = {
            name: evaluate_classifier_on(predict, adversarial_path, labels)
            for name, predict in predictors.items()
        }
    intervals = _intervals(candidate, baseline, champion, config)
    for name, result in (("candidate", candidate), ("baseline", baseline), ("champion", champion)):
        if result is not None:
            tracker.log_metrics({f"test/{name}/{k}": v for k, v in result.metrics.items()})
    for name, result in adversarial.items():
        tracker.log_metrics({f"adversarial/{name}/{k}": v for k, v in result.metrics.items()})
    for name, interval in intervals.items():
        tracker.log_metrics(
            {
                f"bootstrap/vs_{name}/{interval.metric}/{k}": getattr(interval, k)
                for k in ("delta", "low", "high")
            }
        )
    _save_predictions(candidate, baseline, champion, run_dir / "predictions.parquet")
    tracker.log_artifact(run_dir / "predictions.parquet", "evaluation")

    # 8. gate: a pure decision; recorded as tags, a JSON artifact and in the report.
    decision: GateDecision = gate_task(
        candidate.metrics,
        _metrics(baseline),
        _metrics(champion),
        config.gate,
        config.model.task,
        intervals,
    )
    gate_record = {
        "passed": decision.passed,
        "reasons": decision.reasons,
        "task": decision.task,
        "metric": decision.metric,
        "checks": [c.model_dump() for c in decision.checks],
        "intervals": {k: v.model_dump() for k, v in intervals.items()},
        "champion_version": champion_version,
        "settings": config.gate.model_dump(),
    }
    tracker.log_dict(gate_record, "evaluation/gate_decision.json")
    tracker.set_tags(
        {
            "tunegate.gate": "passed" if decision.passed else "failed",
            "tunegate.gate.failed_checks": ",".join(decision.failed) or "-",
            "tunegate.compared_with_champion": champion_version or "-",
        }
    )
    plots = [plot_comparison(candidate, baseline, champion, run_dir / "comparison.png", intervals)]
    if not generation:
        plots.append(
            plot_confusion(candidate, run_dir / "confusion_matrix.png", "Candidate (test split)")
        )
    report_path = write_report(
        candidate,
        baseline,
        champion,
        run_dir / "evaluation.md",
        decision=decision,
        intervals=intervals,
        adversarial=adversarial,
        plots=[str(p) for p in plots],
    )
    tracker.log_artifact(report_path, "evaluation")
    for plot in plots:
        tracker.log_artifact(plot, "plots")

    # 9. register every candidate; move `champion` only when the gate passed.
    registration = register_task(
        config.mlflow.tracking_uri,
        config.mlflow.registered_model,
        tracker.run_id,
        trained.model_dir,
        tags={
            "dataset_version": splits.dataset_version,
            "config_digest": _config_digest(config),
            "task": config.model.task,
            "gate_failed_checks": ",".join(decision.failed) or "-",
            "mlflow_run_id": tracker.run_id,
            **{
                k: f"{candidate.metrics[k]:.4f}"
                for k in (
                    "f1_macro",
                    "accuracy",
                    "f1_weighted",
                    "rouge1",
                    "rougeL",
                    "latency_p95_s",
                )
                if k in candidate.metrics
            },
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
        gate={
            "passed": decision.passed,
            "reasons": decision.reasons,
            "failed": decision.failed,
            "champion_version": champion_version,
        },
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
    _prefect_artifacts(summary, candidate, baseline, champion, decision, report_path, config.gate)
    return summary


def _check_scrubbed(scrubbed: ScrubResult, config: RetrainConfig) -> None:
    """Rows dropped by the PII stage count against validate.max_quarantine_fraction too."""
    fraction = scrubbed.rows_quarantined / max(scrubbed.rows_in, 1)
    if fraction > config.validate_.max_quarantine_fraction:
        raise DataRefused(
            f"{scrubbed.rows_quarantined} of {scrubbed.rows_in} rows quarantined after PII "
            f"scrubbing ({fraction:.0%}), more than validate.max_quarantine_fraction="
            f"{config.validate_.max_quarantine_fraction}"
        )


def _copy_into(path: Path, run_dir: Path) -> Path:
    import shutil

    target = run_dir / path.name
    shutil.copyfile(path, target)
    return target


def _log_data_stage(
    tracker: Tracker, report: ValidationReport, audits: dict[str, dict], run_dir: Path
) -> None:
    """Validation report, PII audit (counts only) and Data Docs to MLflow and Prefect."""
    from prefect.artifacts import create_link_artifact

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
    for name, audit in audits.items():
        tracker.log_dict(audit, f"data/pii_audit_{name}.json")
        for column, counts in audit["by_column"].items():
            for entity, n in counts.items():
                metrics[f"pii/{name}/{column}/{entity}"] = n
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


def _log_augmentation(tracker: Tracker, augmented: AugmentResult) -> None:
    """Counts per strategy as metrics; the original -> augmented sample table in both UIs."""
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
    shown = {
        "f1_macro": "macro-F1",
        "accuracy": "accuracy",
        "rouge1": "ROUGE-1",
        "rougeL": "ROUGE-L",
        "latency_p95_s": "p95 latency (s)",
    }
    lines = [
        f"Fine-tuned from `{config.model.base_model}` ({config.train.method}, r={config.lora.r}) "
        f"for {config.model.task} on dataset version `{version}`.",
        "",
        "Test: "
        + ", ".join(
            f"{name} {candidate.metrics[key]:.4f}"
            for key, name in shown.items()
            if key in candidate.metrics
        )
        + ".",
        "",
        f"Config digest `{_config_digest(config)}`.",
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
    decision: GateDecision,
    report_path: Path,
    gate_settings: GateSettings,
) -> None:
    """A metrics table (candidate, baseline, champion, target) and the gate decision."""
    keys = headline_keys(candidate) + [k for k in candidate.metrics if k.startswith("f1/")]
    targets = gate_targets(decision, gate_settings, keys)

    def cell(result: EvalResult | None, key: str) -> str:
        return f"{result.metrics[key]:.4f}" if result and key in result.metrics else "-"

    rows = ["| metric | candidate | baseline | champion | target |", "|---|---|---|---|---|"]
    for key in keys:
        rows.append(
            f"| {key} | {cell(candidate, key)} | {cell(baseline, key)} | {cell(champion, key)} "
            f"| {targets.get(key, '')} |"
        )
    model = summary.model
    verdict = "PROMOTED" if model["promoted"] else "REJECTED"
    create_markdown_artifact(
        f"# {verdict}: {model['name']} v{model['version']}\n\n{model['note']}\n\n"
        + "\n".join(rows)
        + "\n\n## Gate\n\n"
        + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\nMLflow run `{summary.mlflow_run_id}`, dataset `{summary.dataset_version}`, "
        f"report `{report_path}`.\n\nRows: " + json.dumps(summary.rows),
        key="gate-decision",
        description="Gate decision",
    )
    create_table_artifact(
        [
            {
                "metric": key,
                "candidate": cell(candidate, key),
                "baseline": cell(baseline, key),
                "champion": cell(champion, key),
                "target": targets.get(key, ""),
            }
            for key in keys
        ],
        key="evaluation",
        description="Test-split metrics",
    )


def _intervals(
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
    config: RetrainConfig,
) -> dict[str, Interval]:
    """Paired bootstrap intervals of the headline metric, candidate minus baseline / champion."""
    if config.evaluate.bootstrap_resamples == 0:
        return {}
    out = {}
    for name, other in (("baseline", baseline), ("champion", champion)):
        if other is not None and other.predictions:
            out[name] = paired_bootstrap(
                candidate,
                other,
                HEADLINE_METRIC[config.model.task],
                config.evaluate.bootstrap_resamples,
                config.evaluate.bootstrap_confidence,
                seed=config.split.seed,
            )
    return out


def _save_predictions(
    candidate: EvalResult,
    baseline: EvalResult | None,
    champion: EvalResult | None,
    path: Path,
) -> Path:
    """Per-example predictions of every system (no input text), for later paired comparisons."""
    import pandas as pd

    frame = pd.DataFrame({"reference": candidate.references, "candidate": candidate.predictions})
    for name, result in (("baseline", baseline), ("champion", champion)):
        if result is not None and len(result.predictions) == len(frame):
            frame[name] = result.predictions
    frame.to_parquet(path)
    return path


def _config_digest(config: RetrainConfig) -> str:
    import hashlib

    blob = json.dumps(config.flat(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
