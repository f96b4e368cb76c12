"""The retrain flow, top to bottom:

(read feedback batches with the data) -> validate -> scrub PII -> split -> augment -> baseline -> train ->
evaluate (candidate, champion) -> gate -> register -> (a person approves: `gate.approval`) ->
promote.

`model.task: classification` (macro-F1; few-shot baseline) or `generation` (ROUGE; zero-shot
baseline; augmentation and adversarial examples are classification-only and skipped): what
differs is behind `flows.kinds.TaskKind`, chosen once per run. Each stage returns a typed
result; `flows.record` records it in MLflow and Prefect, one `record_*` per result.

Stages pass paths and small typed results, never models. Every stage logs to one MLflow run,
tagged with the Prefect flow-run id. The run's files live in `<work_dir>/<flow run id>/`. The
champion is pinned once per run (`fetch_champion`) and handed to every stage that compares
with it, so they all mean the same version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from flows.approval import ask_for_approval, needs_approval, rejected_state, require_approver
from flows.config import RetrainConfig
from flows.kinds import TaskKind, TrainingData, kind_for
from flows.production import gate_slice, score_production_slice
from flows.record import (
    DataStage,
    Evaluation,
    RetrainSummary,
    Tracker,
    record_adversarial,
    record_augmentation,
    record_data,
    record_evaluation,
    record_feedback,
    record_gate,
    record_report,
    record_rows,
    record_split,
    record_summary,
    record_timings,
    record_training,
)
from flows.search import run_search, search_plots, search_summary
from flows.timing import stage_seconds, start_timings, timed
from flows.train_remote import train_on_pool
from tasks import stage_logger
from tasks.dataset import batches_to_quarantine, merge_feedback_task
from tasks.evaluate import EvalResult
from tasks.feedback import FeedbackInput, FeedbackMerge, FeedbackStore
from tasks.gate import GateDecision, Interval, gate_task
from tasks.intervals import paired_bootstrap
from tasks.load import DataSettings
from tasks.locks import retrain_lock_name
from tasks.metrics import shown_metrics, tagged_metrics
from tasks.parity import int8_tags, parity_task, with_parity
from tasks.pii import ScrubResult, scrub_task
from tasks.pii.salt import require_salt
from tasks.registry import (
    Champion,
    Registration,
    fetch_champion,
    open_tracking,
    register_task,
    start_run,
)
from tasks.report import plot_comparison, write_report
from tasks.split import SplitResult, split_task
from tasks.train import TrainJob, TrainResult, train_task
from tasks.validate import ValidationReport, validate_task

__all__ = ["DataRefused", "RetrainSummary", "retrain"]


@flow(name="retrain", log_prints=True)
def retrain(config: RetrainConfig, only_new_feedback: bool = False) -> RetrainSummary:
    """Validate, scrub, split, augment, train, evaluate, gate and promote one model.

    `only_new_feedback` (set by the feedback-triggered deployment): finish at once when no
    feedback batch is pending, e.g. a queued run whose batches an earlier run already took.
    """
    logger = get_run_logger()
    require_salt(config.pii)  # a run that hashes PII needs its secret salt before any work
    require_approver(config.gate, _prefect_api_url())  # and an approval, someone to give it
    # Retrains of one registered model never overlap, whichever deployment started them
    # (`tunegate serve`/`deploy` create this limit with one slot; absent, it does not block).
    # The lock comes first: a feedback-triggered run looks for pending batches only once no
    # other run can be taking them.
    with concurrency(retrain_lock_name(config.mlflow.registered_model), occupy=1):
        if only_new_feedback and not FeedbackStore(config.feedback.store).pending_ids():
            logger.info("no new feedback since the last retrain: nothing to do")
            return Completed(message="no new feedback batches; nothing to retrain")
        return _locked_retrain(config, logger)


def _locked_retrain(config: RetrainConfig, logger: logging.Logger) -> RetrainSummary:
    """The run itself, under the retrain lock."""
    run_id = flow_run.get_id() or "local"
    run_dir = (Path(config.work_dir) / run_id).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    client = open_tracking(config.mlflow)
    tracker = start_run(client, config.mlflow, {"prefect.flow_run_id": run_id})
    logger.info("MLflow run %s; files in %s", tracker.run_id, run_dir)
    tracker.log_params(config.flat())
    try:
        summary = _run_stages(config, run_dir, tracker, logger)
    except DataRefused as exc:
        client.set_terminated(tracker.run_id, "FAILED")
        logger.error("stopped before training: %s", exc)
        return Failed(message=f"validation failed: {exc}")
    except BaseException:
        client.set_terminated(tracker.run_id, "FAILED")
        raise
    client.set_terminated(tracker.run_id, "FINISHED")
    if summary.approval is not None and summary.approval["decision"] != "approve":
        return rejected_state(summary)  # a person said no (or nobody answered)
    # The final state's name says at a glance in the UI whether the champion moved.
    model = summary.model
    return Completed(
        data=summary,
        name="Promoted" if model["promoted"] else "Rejected",
        message=f"{model['name']} v{model['version']}: {model['note']}",
    )


class DataRefused(Exception):
    """A table-level validation failure: stop the flow before training, without a traceback."""


def _prefect_api_url() -> str | None:
    """The flow's edge reads the Prefect setting; unset means only a temporary server runs."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _run_stages(
    config: RetrainConfig, run_dir: Path, tracker: Tracker, logger: logging.Logger
) -> RetrainSummary:
    """The recipe: each stage, then the record of what it returned."""
    timings = start_timings()
    kind = kind_for(config)
    feedback, data = _prepare_data(config, run_dir)
    record_feedback(tracker, feedback)
    record_data(tracker, data, run_dir)

    with timed("split"):
        splits = split_task(data.accepted("data"), config.split, run_dir, data.accepted("test"))
    record_split(tracker, splits, config.data.path)

    champion = fetch_champion(
        config.mlflow.tracking_uri, config.mlflow.registered_model, run_dir / "champion"
    )
    training = kind.prepare_training(config, splits, data.labels, champion, run_dir)
    record_augmentation(tracker, training.augmented)
    record_adversarial(tracker, training.adversarial)
    rows = _rows(data, splits, training, feedback)
    record_rows(tracker, rows, splits.dataset_version)

    with timed("baseline"):
        baseline = kind.baseline(config, splits, data.labels)
    with timed("train"):
        trained = _train(config, kind, training, splits, data.labels, run_dir, tracker, logger)
    record_training(tracker, trained, run_dir)

    with timed("evaluate"):
        evaluation = _evaluate(
            config, kind, trained.model_dir, splits, training, data.labels, champion, baseline
        )
        score_production_slice(config, data, splits, evaluation)
    record_evaluation(tracker, evaluation, run_dir)

    with timed("gate"):
        decision = _gate(config, evaluation, trained.model_dir, splits.test_path, run_dir)
    record_gate(tracker, decision, evaluation, champion.version, config.gate)
    with timed("evaluate"):  # the report belongs to the evaluation's cost
        report_path, plots = _report(kind, evaluation, decision, run_dir)
    record_report(tracker, report_path, plots)

    with timed("register"):
        registration = _register(
            config, tracker, trained.model_dir, splits, evaluation, decision, champion
        )
    approval = None
    if needs_approval(config.gate, decision):  # gate.approval=required: a person decides
        registration, approval = ask_for_approval(
            config,
            tracker,
            registration,
            evaluation,
            decision,
            splits.test_path,
            report_path,
            run_dir,
            champion.version,
            logger,
        )
    summary = _summary(
        config,
        tracker,
        splits,
        rows,
        evaluation,
        decision,
        champion,
        registration,
        feedback,
        run_dir,
    )
    summary.production_corrections = evaluation.production_summary()
    summary.approval = None if approval is None else approval.model_dump()
    summary.timings = stage_seconds(timings)
    record_timings(tracker, summary.timings)
    _mark_feedback_included(config, feedback, tracker.run_id)
    if config.review.url is not None:
        summary.review = _queue_for_review(config, splits, evaluation, registration, data.labels)
        tracker.set_tags({"tunegate.review": _review_tag(summary.review)})
    record_summary(summary, evaluation, decision, report_path, config.gate)
    return summary


def _queue_for_review(
    config: RetrainConfig,
    splits: SplitResult,
    evaluation: Evaluation,
    registration: Registration,
    labels: list[str],
) -> dict:
    """The review flow with this run's test split (disagreements, worst errors) as a subflow.

    Best-effort: the model is registered and promoted (or not) already, so a Label Studio
    outage must not fail the run; it is logged as a warning and recorded (the error's type and
    HTTP status only: an API error's body could echo a task's text).
    """
    import pandas as pd

    from flows.review import ReviewConfig, TestExamples, review

    try:
        candidate, champion = evaluation.candidate, evaluation.champion
        test = TestExamples(
            texts=pd.read_parquet(splits.test_path, columns=["text"])["text"].astype(str).tolist(),
            references=candidate.references,
            candidate=candidate.predictions,
            champion=champion.predictions if champion is not None else None,
            candidate_scores=candidate.per_example.get("rougeL"),
            candidate_version=registration.version,
        )
        summary = review(ReviewConfig.of(config, labels), test=test)
    except Exception as exc:  # noqa: BLE001 - recorded and warned, never fatal (see above)
        status = getattr(exc, "status_code", None)
        error = type(exc).__name__ + (f" (HTTP {status})" if status else "")
        stage_logger().warning("review queue not updated: %s; the run goes on", error)
        return {"error": error}
    return summary.model_dump(include={"project_id", "project_url", "imported", "selected"})


def _review_tag(review: dict) -> str:
    if "error" in review:
        return f"failed: {review['error']}"
    return f"queued {review['imported']} in project {review['project_id']}"


def _mark_feedback_included(config: RetrainConfig, feedback: FeedbackMerge, run_id: str) -> None:
    """Only at the end: a failed run leaves its new batches pending for the next one."""
    if feedback.new_batches:
        FeedbackStore(config.feedback.store).mark_included(
            feedback.new_batches, flow_run.get_id() or "local", run_id
        )


def _prepare_data(config: RetrainConfig, run_dir: Path) -> tuple[FeedbackMerge, DataStage]:
    """The data file and the feedback batches read as records, then validated + scrubbed
    (and the test file). Nothing merged is written: every row keeps its file and line.

    Validation and scrubbing are cached on the content + settings under
    `<work_dir>/cache/data`: a re-run on unchanged data and config skips them.
    """
    feedback = merge_feedback_task(config.data, config.feedback, run_dir.name)
    cache = Path(config.work_dir).resolve() / "cache" / "data"
    feedback = _quarantine_bad_batches(config, cache, feedback, run_dir.name)
    report, scrubbed = _clean_file(config.data, config, cache, "data", feedback.source)
    stage = DataStage(report=report, scrubbed={"data": scrubbed})
    if config.data.test_path is not None:
        test_data = config.data.model_copy(
            update={"path": config.data.test_path, "labels": report.labels or None}
        )
        stage.scrubbed["test"] = _clean_file(test_data, config, cache, "test")[1]
    return feedback, stage


def _quarantine_bad_batches(
    config: RetrainConfig, cache: Path, feedback: FeedbackMerge, run_name: str
) -> FeedbackMerge:
    """A batch whose rows are mostly quarantined is quarantined itself, with its reason, and
    its rows leave the run, so one bad batch does not fail every later retrain on
    `validate.max_quarantine_fraction`: the limit applies to the rest."""
    if feedback.source is None:
        return feedback
    with timed("validate"):
        report = validate_task(config.data, config.validate_, cache, feedback.source)
    bad = batches_to_quarantine(
        report.sources,
        report.quarantined,
        report.accepted_lines,
        config.feedback.max_batch_quarantine_fraction,
    )
    if not bad:
        return feedback
    store = FeedbackStore(config.feedback.store)
    for batch_id, reason in bad.items():
        store.quarantine_batch(batch_id, reason, flow_run.get_id() or run_name)
        get_run_logger().warning("feedback batch %s quarantined: %s", batch_id, reason)
    again = merge_feedback_task(config.data, config.feedback, run_name)
    again.quarantined_batches = bad
    return again


def _clean_file(
    data: DataSettings,
    config: RetrainConfig,
    cache: Path,
    name: str,
    feedback: FeedbackInput | None = None,
) -> tuple[ValidationReport, ScrubResult]:
    """Validate (Great Expectations) and scrub PII from one file (+ its feedback batches);
    refuse it as a whole when validation fails or more rows were quarantined than
    `validate.max_quarantine_fraction`."""
    where = "" if name == "data" else "data.test_path: "
    with timed("validate"):
        report = validate_task(data, config.validate_, cache, feedback)
    if not report.passed:
        raise DataRefused(where + "; ".join(report.problems))
    with timed("scrub"):
        scrubbed = scrub_task(data, report, config.pii, cache, name)
    # rows dropped by the PII stage count against the quarantine limit too
    fraction = scrubbed.rows_quarantined / max(scrubbed.rows_in, 1)
    if fraction > config.validate_.max_quarantine_fraction:
        raise DataRefused(
            f"{scrubbed.rows_quarantined} of {scrubbed.rows_in} rows quarantined after PII "
            f"scrubbing ({fraction:.0%}), more than validate.max_quarantine_fraction="
            f"{config.validate_.max_quarantine_fraction}"
        )
    return report, scrubbed


def _rows(
    data: DataStage, splits: SplitResult, training: TrainingData, feedback: FeedbackMerge
) -> dict[str, int]:
    """Every row accounted for, from the input files to the training split (summary `rows`)."""
    return {
        "in": data.rows_in,
        "accepted": data.rows_in - data.rows_quarantined,
        "quarantined": data.rows_quarantined,
        "scrubbed_records_with_pii": data.scrubbed["data"].audit["records_with_pii"],
        **splits.sizes,
        "augmented": training.rows_augmented,
        "adversarial": training.rows_adversarial,
        "leakage_removed": splits.leakage_removed,
        "feedback_added": feedback.added,
        "feedback_duplicates": feedback.duplicates,
    }


def _train(
    config: RetrainConfig,
    kind: TaskKind,
    training: TrainingData,
    splits: SplitResult,
    labels: list[str],
    run_dir: Path,
    tracker: Tracker,
    logger: logging.Logger,
) -> TrainResult:
    """Here (in a child process; a retry resumes from the last checkpoint) or as its own
    deployment on `train.work_pool` (see flows/train_remote.py)."""
    job = TrainJob(
        train_path=training.train_path,
        val_path=splits.val_path,
        labels=kind.train_labels(labels),
        model=config.model,
        lora=config.lora,
        train=config.train,
        out_dir=run_dir / "train",
    )
    if config.search.enabled:  # an Optuna study; its best trial is the candidate
        return run_search(config, job, tracker, splits.dataset_version, run_dir, logger)
    if config.train.work_pool:
        return train_on_pool(job, config.storage, config.mlflow, tracker, run_dir.name, logger)
    return train_task.with_options(retries=config.train.retries)(
        job,
        sink=lambda step, values: tracker.log_metrics(
            {f"train/{k}": v for k, v in values.items()}, step
        ),
    )


def _evaluate(
    config: RetrainConfig,
    kind: TaskKind,
    model_dir: Path,
    splits: SplitResult,
    training: TrainingData,
    labels: list[str],
    champion: Champion,
    baseline: EvalResult,
) -> Evaluation:
    """Candidate and champion on the same test split (and the robustness slice), with paired
    bootstrap intervals of the headline metric against baseline and champion."""
    scores = kind.score(config, model_dir, splits, training, labels, champion)
    evaluation = Evaluation(
        candidate=scores.candidate,
        baseline=baseline,
        champion=scores.champion,
        adversarial=scores.adversarial,
        intervals={},
    )
    evaluation.intervals = _intervals(evaluation, kind.headline, config)
    return evaluation


def _intervals(evaluation: Evaluation, metric: str, config: RetrainConfig) -> dict[str, Interval]:
    """Paired bootstrap intervals of the headline metric, candidate minus baseline / champion."""
    if config.evaluate.bootstrap_resamples == 0:
        return {}
    out = {}
    for name, other in evaluation.systems()[1:]:
        if other is not None and other.predictions:
            out[name] = paired_bootstrap(
                evaluation.candidate,
                other,
                metric,
                config.evaluate.bootstrap_resamples,
                config.evaluate.bootstrap_confidence,
                seed=config.split.seed,
            )
    return out


def _metrics(result: EvalResult | None) -> dict[str, float] | None:
    return None if result is None else dict(result.metrics)


def _gate(
    config: RetrainConfig,
    evaluation: Evaluation,
    model_dir: Path,
    test_path: Path,
    run_dir: Path,
) -> GateDecision:
    """A pure decision from the metrics; recorded as tags, a JSON artifact and in the report.
    A candidate that passes is then checked for parity: the pyfunc a server would load must
    answer as the evaluated model did (tasks/parity.py), else the gate fails."""
    decision = gate_task(
        evaluation.candidate.metrics,
        _metrics(evaluation.baseline),
        _metrics(evaluation.champion),
        config.gate,
        config.model.task,
        evaluation.intervals,
        gate_slice(evaluation),
    )
    if not decision.passed:
        return decision
    parity = parity_task(
        model_dir,
        test_path,
        evaluation.candidate,
        config.evaluate.parity_min_agreement,
        run_dir / "parity",
    )
    return with_parity(decision, parity)


def _report(
    kind: TaskKind, evaluation: Evaluation, decision: GateDecision, run_dir: Path
) -> tuple[Path, list[Path]]:
    """`evaluation.md` with the comparison plot and the task's own plots."""
    plots = [
        plot_comparison(
            evaluation.candidate,
            evaluation.baseline,
            evaluation.champion,
            run_dir / "comparison.png",
            evaluation.intervals,
        ),
        *kind.plots(evaluation.candidate, run_dir),
        *search_plots(run_dir),
    ]
    report_path = write_report(
        evaluation.candidate,
        evaluation.baseline,
        evaluation.champion,
        run_dir / "evaluation.md",
        decision=decision,
        intervals=evaluation.intervals,
        adversarial=evaluation.adversarial,
        plots=[str(p) for p in plots],
        production=evaluation.production,
    )
    return report_path, plots


def _register(
    config: RetrainConfig,
    tracker: Tracker,
    model_dir: Path,
    splits: SplitResult,
    evaluation: Evaluation,
    decision: GateDecision,
    champion: Champion,
) -> Registration:
    """Register every candidate; move `champion` only when the gate passed and the champion
    is still the version this run compared with."""
    metrics = evaluation.candidate.metrics
    return register_task(
        config.mlflow.tracking_uri,
        config.mlflow.registered_model,
        tracker.run_id,
        model_dir,
        tags={
            "dataset_version": splits.dataset_version,
            "config_digest": _config_digest(config),
            "task": config.model.task,
            "gate_failed_checks": ",".join(decision.failed) or "-",
            "mlflow_run_id": tracker.run_id,
            **tagged_metrics(config.model.task, metrics),
            **int8_tags(decision.int8_agreement, config.evaluate.parity_min_agreement),
        },
        description=_model_card(config, splits.dataset_version, metrics, decision),
        gate_passed=decision.passed,
        expected_champion=champion.version,
        awaiting_approval=needs_approval(config.gate, decision),
    )


def _summary(
    config: RetrainConfig,
    tracker: Tracker,
    splits: SplitResult,
    rows: dict[str, int],
    evaluation: Evaluation,
    decision: GateDecision,
    champion: Champion,
    registration: Registration,
    feedback: FeedbackMerge,
    run_dir: Path,
) -> RetrainSummary:
    return RetrainSummary(
        mlflow_run_id=tracker.run_id,
        prefect_flow_run_id=flow_run.get_id(),
        dataset_version=splits.dataset_version,
        rows=rows,
        metrics={name: _metrics(result) for name, result in evaluation.systems()},
        gate={
            "passed": decision.passed,
            "reasons": decision.reasons,
            "failed": decision.failed,
            "champion_version": champion.version,
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
        search=search_summary(run_dir),
    )


def _model_card(
    config: RetrainConfig, version: str, metrics: dict[str, float], decision: GateDecision
) -> str:
    lines = [
        f"Fine-tuned from `{config.model.base_model}` ({config.train.method}, r={config.lora.r}) "
        f"for {config.model.task} on dataset version `{version}`.",
        "",
        "Test: " + shown_metrics(config.model.task, metrics) + ".",
        "",
        f"Config digest `{_config_digest(config)}`.",
        "",
        "Gate: " + ("passed" if decision.passed else "failed"),
        *[f"- {r}" for r in decision.reasons],
    ]
    return "\n".join(lines)


def _config_digest(config: RetrainConfig) -> str:
    blob = json.dumps(config.flat(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
