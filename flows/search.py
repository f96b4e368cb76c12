"""The search stage: the train stage as an Optuna study when `search.enabled` is true.

`run_search` opens (or resumes) the study for this dataset version and config, asks it for
trials `search.parallel` at a time, runs each as a Prefect task (`trial_task`) and a nested
MLflow run under the retrain's run (params, `train/*` curves by step, tag
`tunegate.search.state` = complete | pruned | failed), and tells the study how each ended. A
trial trains like the ordinary stage (a child process, forked from a preloaded forkserver with
`search.preload_workers`; or the `train-remote/<pool>` deployment when `train.work_pool` is
set) with `TrainJob.trial` set, so its worker (local or on the pool) reports each validation
evaluation to the study and stops when the pruner says so.

The best complete trial by validation metric is the candidate as it is (not retrained): its
`TrainResult` goes on to the unchanged evaluation, gate and registration.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from pydantic import BaseModel

from flows.config import RetrainConfig
from flows.record import Tracker, record_search
from flows.train_remote import train_on_pool
from tasks.registry import MLflowSettings, open_tracking
from tasks.registry import Tracker as MLflowTracker
from tasks.search import (
    RESULT_ATTR,
    SearchResult,
    apply_params,
    best_trial,
    check_pool_storage,
    finished,
    open_study,
    plot_search,
    recover_interrupted,
    redact,
    storage_url,
    study_name,
    suggest,
)
from tasks.storage import StorageSettings
from tasks.train import TrainingError, TrainJob, TrainResult, run_training
from tasks.train.pruning import TrialPruned
from tasks.train.settings import TrialRef

TRIAL_RESULT = "trial_result.json"
STATE_TAG = "tunegate.search.state"


class TrialOutcome(BaseModel):
    """How one trial ended, for the study and the search summary."""

    number: int
    state: Literal["complete", "pruned", "failed"]
    value: float | None = None
    result_path: str | None = None
    mlflow_run_id: str
    message: str = ""
    seconds: float


@task(name="search-trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)
def trial_task(
    job: TrainJob,
    number: int,
    params: dict[str, Any],
    mlflow: MLflowSettings,
    parent_run_id: str,
    storage: StorageSettings,
    pool_prefix: str,
    preload: bool = False,
) -> TrialOutcome:
    """One trial: a nested MLflow run around one training run; pruned is an outcome, not a
    failure, so the Prefect task completes either way."""
    return run_trial(job, number, params, mlflow, parent_run_id, storage, pool_prefix, preload)


def run_trial(
    job: TrainJob,
    number: int,
    params: dict[str, Any],
    mlflow: MLflowSettings,
    parent_run_id: str,
    storage: StorageSettings,
    pool_prefix: str,
    preload: bool = False,
) -> TrialOutcome:
    client = open_tracking(mlflow)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=f"trial-{number}",
        tags={
            "mlflow.parentRunId": parent_run_id,
            "tunegate.search.study": job.trial.study_name if job.trial else "-",
            "tunegate.search.trial": str(number),
        },
    )
    tracker = MLflowTracker(client, run.info.run_id)
    tracker.log_params(params)
    started = time.perf_counter()
    state, value, result_path, message = "complete", None, None, ""
    try:
        if job.train.work_pool:
            logger = logging.getLogger("flows.search")
            result = train_on_pool(
                job, storage, mlflow, tracker, f"{pool_prefix}/trial-{number}", logger
            )
        else:
            result = run_training(
                job,
                sink=lambda step, values: tracker.log_metrics(
                    {f"train/{k}": v for k, v in values.items()}, step
                ),
                preload=preload,
            )
        value = result.best_metric
        path = Path(job.out_dir) / TRIAL_RESULT
        path.write_text(result.model_dump_json(indent=1))
        result_path = str(path)
        tracker.log_metrics({f"val/{result.metric}": value, "train/seconds": result.seconds})
    except TrialPruned as exc:
        state, message = "pruned", str(exc)
    except TrainingError as exc:
        state, message = "failed", str(exc)
    shutil.rmtree(Path(job.out_dir) / "checkpoints", ignore_errors=True)
    tracker.set_tags({STATE_TAG: state, **({"tunegate.search.note": message} if message else {})})
    client.set_terminated(run.info.run_id, "FAILED" if state == "failed" else "FINISHED")
    return TrialOutcome(
        number=number,
        state=state,
        value=value,
        result_path=result_path,
        mlflow_run_id=run.info.run_id,
        message=message,
        seconds=time.perf_counter() - started,
    )


def _finished(future: Any) -> bool:
    """Whether a trial's future is done, from the local future where there is one: the API's
    task-run state arrives through Prefect's events and can lag, or never come when the event
    stream drops, which left a finished trial polled forever."""
    wrapped = getattr(future, "wrapped_future", None)
    return wrapped.done() if wrapped is not None else future.state.is_final()


def run_search(
    config: RetrainConfig,
    job: TrainJob,
    tracker: Tracker,
    dataset_version: str,
    run_dir: Path,
    logger: logging.Logger | logging.LoggerAdapter,
) -> TrainResult:
    """Run the remaining trials of the study; the best trial's training result is the candidate."""
    from optuna.trial import TrialState

    settings = config.search
    storage = storage_url(settings, config.mlflow.tracking_uri, config.work_dir)
    if config.train.work_pool:
        check_pool_storage(storage, config.train.work_pool)
    name = study_name(dataset_version, config.flat())
    study = open_study(settings, storage, name)
    requeued = recover_interrupted(study)
    before = finished(study)
    budget = max(settings.trials - before, 0)
    logger.info(
        "search: study %s in %s, %d of %d trials already done%s; running %d",
        name,
        redact(storage),
        before,
        settings.trials,
        f", re-queued interrupted trials {requeued}" if requeued else "",
        budget,
    )
    space = settings.space_for(config.train.method)
    root = Path(config.work_dir).resolve() / "search" / name
    started = time.monotonic()
    deadline = started + settings.timeout_minutes * 60 if settings.timeout_minutes else None
    outcomes: list[TrialOutcome] = []
    running: list[tuple[Any, Any]] = []
    launched = 0
    while True:
        while (
            len(running) < settings.parallel
            and launched < budget
            and (deadline is None or time.monotonic() < deadline)
        ):
            trial = study.ask()
            params = suggest(trial, space)
            try:
                trial_job = _trial_job(job, trial, params, settings, storage, name, root)
            except TrainingError:
                study.tell(trial, state=TrialState.FAIL)
                raise
            logger.info("search: trial %d: %s", trial.number, _shown(params))
            future = trial_task.submit(
                trial_job,
                trial.number,
                params,
                config.mlflow,
                tracker.run_id,
                config.storage,
                run_dir.name,
                settings.preload_workers,
            )
            running.append((trial, future))
            launched += 1
        if not running:
            break
        wait([f for _, f in running], timeout=2)
        for trial, future in [(t, f) for t, f in running if _finished(f)]:
            running.remove((trial, future))
            outcome = future.result()
            _tell(study, trial, outcome)
            outcomes.append(outcome)
            logger.info(
                "search: trial %d %s%s in %.0fs",
                outcome.number,
                outcome.state,
                f", validation {outcome.value:.4f}" if outcome.value is not None else "",
                outcome.seconds,
            )
    best = best_trial(study)
    if best is None:
        failures = [o.message for o in outcomes if o.state == "failed"]
        raise TrainingError(
            "search: no trial completed with its adapter on disk"
            + (f"; the first failure: {failures[0]}" if failures else "")
            + "; raise search.trials or widen search.space"
        )
    trained = TrainResult.model_validate_json(Path(best.user_attrs[RESULT_ATTR]).read_text())
    # The retrain's run folder gets the candidate's curves, where `record_training` reads them.
    (run_dir / "train").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(
        Path(trained.model_dir).parent / "history.json", run_dir / "train" / "history.json"
    )
    result = SearchResult(
        study_name=name,
        storage=redact(storage),
        metric=trained.metric,
        trials_run=len(outcomes),
        pruned=sum(o.state == "pruned" for o in outcomes),
        failed=sum(o.state == "failed" for o in outcomes),
        trials_in_study=finished(study),
        resumed_from=before,
        best_trial=best.number,
        best_params=dict(best.params),
        best_validation_metric=float(best.value),
        wall_seconds=time.monotonic() - started,
        plots=[str(p) for p in plot_search(study, run_dir / "search")],
    )
    record_search(tracker, result, [o.model_dump() for o in outcomes], run_dir)
    logger.info(
        "search: best trial %d (validation %s %.4f): %s",
        best.number,
        trained.metric,
        best.value,
        _shown(best.params),
    )
    return trained


def _trial_job(
    job: TrainJob,
    trial: Any,  # noqa: ANN401 - optuna.Trial
    params: dict[str, Any],
    settings: Any,  # noqa: ANN401 - SearchSettings
    storage: str,
    name: str,
    root: Path,
) -> TrainJob:
    lora, train = apply_params(job.lora, job.train, params)
    out_dir = root / f"trial-{trial.number:03d}"
    trial.set_user_attr("out_dir", str(out_dir))
    trial.set_user_attr(RESULT_ATTR, str(out_dir / TRIAL_RESULT))
    ref = TrialRef(
        storage=storage,
        study_name=name,
        trial_id=trial._trial_id,
        number=trial.number,
        pruner=settings.pruner,
        startup_trials=settings.startup_trials,
        warmup_evals=settings.warmup_evals,
    )
    # On a work pool the trial travels as the deployment's `trial` parameter (`train_on_pool`).
    return job.model_copy(update={"lora": lora, "train": train, "out_dir": out_dir, "trial": ref})


def _tell(study: Any, trial: Any, outcome: TrialOutcome) -> None:  # noqa: ANN401
    from optuna.trial import TrialState

    trial.set_user_attr("mlflow_run_id", outcome.mlflow_run_id)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def search_summary(run_dir: Path) -> dict | None:
    """The summary's `search` (written by `record_search`); None when the run did not search."""
    path = run_dir / "search" / "search.json"
    return (
        SearchResult.model_validate_json(path.read_text()).model_dump() if path.is_file() else None
    )


def search_plots(run_dir: Path) -> list[Path]:
    """The search's plots for the evaluation report (none when the run did not search)."""
    summary = search_summary(run_dir)
    return [Path(p) for p in summary["plots"]] if summary else []
