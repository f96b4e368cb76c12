"""The monitor flow, top to bottom (scheduled hourly by the `monitor` deployment):

watermark -> champion -> read the prediction log -> window stats -> reference (the champion's
training split) -> label shift -> input drift (Evidently, HTML report) -> live accuracy on
feedback -> decide -> record (MLflow run of `<model>-monitor`, Prefect artifacts) -> on an alarm:
the `tunegate.monitor.alarm` event, and with `monitor.rollback_on_alarm` the rollback.

A window runs from the previous finished monitor run's end (its `window_end` metric in the
tracking store, shared by every replica) to now, so no prediction is counted twice and none is
skipped when a run fails: the failed run writes no watermark and the next one reads its window.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.config import ConfigError, RetrainConfig, _read_raw, load_sections
from tasks.feedback import FeedbackSettings, FeedbackStore
from tasks.load import DataSettings
from tasks.monitor import (
    ALARM_EVENT,
    WATERMARK_METRIC,
    Alarm,
    DriftResult,
    MonitorSettings,
    Reading,
    alarm_payload,
    decide_task,
    drift_task,
    feedback_since,
    label_shift,
    last_window_end,
    live_accuracy,
    load_reference,
    read_window_task,
    window_stats,
)
from tasks.registry import (
    MLflowSettings,
    RegistryError,
    Tracker,
    champion_version,
    open_tracking,
    promotion_lock,
    rollback_champion,
    start_run,
)
from tasks.serving import ServingSettings, flags_store_url, prediction_log_url

__all__ = ["MonitorConfig", "MonitorSummary", "load_monitor_config", "monitor"]


class MonitorConfig(BaseModel):
    """The sections of the tunegate config the monitor reads (one file serves both flows)."""

    model_config = ConfigDict(extra="forbid")

    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    label_column: str = Field(
        default=DataSettings.model_fields["label_column"].default,
        description="data.label_column: the feedback rows' column holding a correction's label.",
    )
    work_dir: Path = Field(
        default=RetrainConfig.model_fields["work_dir"].default,
        description="work_dir: the prediction log's default home and the monitor's run files.",
    )

    @classmethod
    def of(cls, config: RetrainConfig) -> MonitorConfig:
        """The monitor's part of a retrain config (what `tunegate serve`/`deploy` hand it)."""
        return cls(
            mlflow=config.mlflow,
            feedback=config.feedback,
            monitor=config.monitor,
            serving=config.serving,
            label_column=config.data.label_column,
            work_dir=config.work_dir,
        )

    @property
    def log_url(self) -> str:
        """`monitor.log_url`, else where the model server writes (`serving.log_url`, else
        `<work_dir>/predictions`)."""
        return self.monitor.log_url or prediction_log_url(self.serving, self.work_dir)


def load_monitor_config(path: Path | None, overrides: list[str] | None = None) -> MonitorConfig:
    """`--config` + `--set` -> the monitor's sections; needs no `data.path`. Other sections of
    the file (train, gate, ...) are the retrain's and are not read here."""
    sections = load_sections(
        path,
        overrides,
        {
            "mlflow": MLflowSettings,
            "feedback": FeedbackSettings,
            "monitor": MonitorSettings,
            "serving": ServingSettings,
        },
    )
    raw = _read_raw(path, overrides)
    data = raw.get("data") or {}
    extra: dict[str, Any] = {}
    if isinstance(data, dict) and "label_column" in data:
        extra["label_column"] = data["label_column"]
    if "work_dir" in raw:
        extra["work_dir"] = raw["work_dir"]
    try:
        return MonitorConfig(**sections, **extra)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]).replace("label_column", "data.label_column")
        raise ConfigError(f"{key}: {err['msg']}") from None


class MonitorSummary(BaseModel):
    """What one monitor run found and did. Keys are stable (`tunegate monitor` prints them)."""

    model: str
    champion: str | None
    since: datetime | None = None
    until: datetime | None = None
    alarm: bool = False
    reasons: list[str] = Field(default_factory=list)
    numbers: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    event_id: str | None = None
    rolled_back_to: str | None = None
    note: str = ""
    report_path: str | None = None


@flow(name="monitor", log_prints=True)
def monitor(config: MonitorConfig) -> MonitorSummary:
    """Measure the champion's live traffic since the last run; alarm (and roll back) on a breach."""
    logger = get_run_logger()
    settings = config.monitor
    name = config.mlflow.registered_model
    until = datetime.now(UTC)
    tracking = config.mlflow.model_copy(update={"experiment": f"{name}-monitor"})
    client = open_tracking(tracking)
    champion = champion_version(client, name)
    if champion is None:
        logger.info("%s has no champion: nothing to watch", name)
        return Completed(
            data=MonitorSummary(model=name, champion=None, note="no champion"),
            message=f"{name} has no champion; nothing to watch",
        )
    experiment_id = client.get_experiment_by_name(tracking.experiment).experiment_id
    since = last_window_end(client, experiment_id) or until - timedelta(seconds=settings.window_s)
    run_name = flow_run.get_id() or f"local-{until:%Y%m%dT%H%M%S}"
    run_dir = (Path(config.work_dir) / "monitor" / run_name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker = start_run(
        client,
        tracking,
        {
            "prefect.flow_run_id": str(flow_run.get_id() or "local"),
            "tunegate.monitor.model": name,
            "tunegate.monitor.champion": champion,
            "tunegate.monitor.since": since.isoformat(),
            "tunegate.monitor.until": until.isoformat(),
        },
    )
    logger.info(
        "watching %s v%s from %s to %s; MLflow run %s", name, champion, since, until, tracker.run_id
    )
    try:
        summary = _watch(config, client, tracker, champion, since, until, run_dir)
    except BaseException:
        client.set_terminated(tracker.run_id, "FAILED")
        raise
    client.set_terminated(tracker.run_id, "FINISHED")
    return Completed(
        data=summary,
        name="Alarm" if summary.alarm else "Calm",
        message=summary.note,
    )


def _watch(
    config: MonitorConfig,
    client: Any,
    tracker: Tracker,
    champion: str,
    since: datetime,
    until: datetime,
    run_dir: Path,
) -> MonitorSummary:
    """The recipe: measure, decide, record, then act."""
    settings = config.monitor
    name = config.mlflow.registered_model
    records, served = read_window_task(
        config.log_url, since, until, settings.feedback_lookback_s, name
    )
    stats = window_stats(records)
    reference = load_reference(
        client, name, champion, run_dir / "reference", settings.reference_sample, settings.seed
    )
    texts = [r.text for r in records if r.sampled and r.status < 400]
    drift = drift_task(reference.texts, texts, settings, run_dir / "drift.html")
    feedback = feedback_since(FeedbackStore(config.feedback.store), since, until)
    feedback += feedback_since(FeedbackStore(flags_store_url(config.feedback.store)), since, until)
    reading = Reading(
        model_name=name,
        champion=champion,
        since=since,
        until=until,
        window=stats,
        label_shift=label_shift(stats.label_counts, reference.label_counts),
        drift=drift,
        accuracy=live_accuracy(feedback, served, config.label_column),
        reference_rows=len(reference.texts),
    )
    alarm = decide_task(reading, settings)
    report = _record(tracker, reading, alarm, settings, run_dir)
    summary = MonitorSummary(
        model=name,
        champion=champion,
        since=since,
        until=until,
        alarm=alarm.alarm,
        reasons=alarm.reasons,
        numbers=reading.numbers(),
        mlflow_run_id=tracker.run_id,
        report_path=str(report),
        note=_calm_note(alarm),
    )
    if alarm.alarm:
        summary.note = "ALARM " + "; ".join(
            f"{c.name}: {c.detail}" for c in alarm.checks if not c.passed
        )
        summary.event_id = _emit_alarm(reading, alarm, tracker.run_id)
        if settings.rollback_on_alarm:
            summary.rolled_back_to, outcome = _rollback(client, name, champion)
            summary.note += f"; {outcome}"
            tracker.set_tags({"tunegate.monitor.rollback": outcome})
    # Written last: a run that failed before this point leaves its window to the next run.
    tracker.log_metrics({WATERMARK_METRIC: until.timestamp()})
    get_run_logger().info("%s", summary.note)
    return summary


def _calm_note(alarm: Alarm) -> str:
    ran = [c.name for c in alarm.checks if not c.skipped]
    if not ran:
        return "calm: no traffic or feedback in the window; every check skipped"
    return "calm: " + ", ".join(ran) + " within limits"


def _record(
    tracker: Tracker, reading: Reading, alarm: Alarm, settings: MonitorSettings, run_dir: Path
) -> Path:
    """Numbers as metrics, thresholds as params, the reading, the drift report; the Prefect
    artifacts (markdown with the numbers, a link to the drift report). Counts, rates, labels
    and identifiers only: the one file with texts is Evidently's report of scrubbed texts."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from tasks.report import save_json

    tracker.log_params({f"monitor.{k}": v for k, v in settings.model_dump().items()})
    tracker.log_metrics(reading.numbers())
    tracker.set_tags(
        {
            "tunegate.monitor.alarm": "true" if alarm.alarm else "false",
            "tunegate.monitor.breached": ",".join(alarm.breached) or "-",
        }
    )
    reading_path = save_json(
        {
            "reading": reading.model_dump(mode="json"),
            "alarm": alarm.alarm,
            "checks": [c.model_dump() for c in alarm.checks],
        },
        run_dir / "reading.json",
    )
    tracker.log_artifact(reading_path, "monitor")
    drift: DriftResult | None = reading.drift
    if drift is not None and drift.html_path is not None:
        tracker.log_artifact(drift.html_path, "monitor")
        create_link_artifact(
            link=Path(drift.html_path).resolve().as_uri(),
            link_text="Evidently input-drift report",
            key="monitor-drift-report",
            description=f"Also in MLflow run {tracker.run_id} under monitor/drift.html",
        )
    rows = ["| check | status | value | threshold |", "|---|---|---|---|"]
    for check in alarm.checks:
        value = "-" if check.value is None else f"{check.value:.4g}"
        threshold = "-" if check.threshold is None else f"{check.threshold:.4g}"
        rows.append(f"| {check.name} | {check.status} | {value} | {threshold} |")
    window = reading.window
    create_markdown_artifact(
        f"# {'ALARM' if alarm.alarm else 'Calm'}: {reading.model_name} v{reading.champion}\n\n"
        f"Window {reading.since:%Y-%m-%d %H:%M:%S} to {reading.until:%Y-%m-%d %H:%M:%S} UTC: "
        f"{window.predictions} predictions, {window.errors} errors, "
        f"{reading.accuracy.with_feedback} with feedback.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(f"- {r}" for r in alarm.reasons)
        + f"\n\nMLflow run `{tracker.run_id}` (experiment `{reading.model_name}-monitor`): "
        "`monitor/reading.json`"
        + (", `monitor/drift.html`" if drift is not None and drift.html_path else "")
        + ".",
        key="monitor",
        description="Monitor reading",
    )
    return reading_path


def _emit_alarm(reading: Reading, alarm: Alarm, run_id: str) -> str | None:
    from prefect.events import emit_event

    event = emit_event(
        event=ALARM_EVENT,
        resource={
            "prefect.resource.id": f"tunegate.model.{reading.model_name}",
            "prefect.resource.name": reading.model_name,
            "tunegate.model.version": reading.champion,
        },
        payload=alarm_payload(reading, alarm, run_id),
    )
    return str(event.id) if event is not None else None


def _rollback(client: Any, name: str, watched: str) -> tuple[str | None, str]:
    """Back to previous-champion, only if the champion is still the version this run watched
    (a version promoted meanwhile was not measured and is left alone)."""
    try:
        with promotion_lock(name):
            current = champion_version(client, name)
            if current != watched:
                return None, f"not rolled back: champion moved to v{current} during the run"
            outcome = rollback_champion(client, name, lock=nullcontext())
    except RegistryError as exc:
        return None, f"not rolled back: {exc}"
    return outcome.champion, outcome.note
