"""Watching the champion in production: window statistics, drift, live accuracy and the alarm.

The monitor flow (`flows/monitor.py`) reads the model server's prediction log
(`tasks.predictions`) and the feedback store for one time window and compares them with the
champion's training split, which the retrain run logged as `data/splits/train.parquet` (already
scrubbed), so the reference comes from the registry alone. Each measurement is a plain function;
`decide` turns them into an alarm with one check per threshold, like the gate: a check without
enough data is skipped and says so, it never raises a false alarm.

Only counts, rates, labels and identifiers leave this module; texts go into the Evidently
report only, and both sides of it are scrubbed (the log by the server, the split by the PII
stage). Feedback rows are read for their prediction id, label and flag and nothing else, so
whatever else a client put in a row is never copied.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import stage_logger
from tasks.feedback import FeedbackStore
from tasks.predictions import PredictionRecord
from tasks.progress import Progress

ALARM_EVENT = "tunegate.monitor.alarm"
REFERENCE_ARTIFACT = "data/splits/train.parquet"  # logged by flows.record.record_split
WATERMARK_METRIC = "window_end"  # epoch seconds; the next run starts here


class MonitorSettings(BaseModel):
    """What the monitor reads, how much of it, and the thresholds that raise the alarm."""

    model_config = ConfigDict(extra="forbid")

    log_url: str | None = Field(
        default=None,
        description="The model server's prediction log (any fsspec URL); None: "
        "<work_dir>/predictions, the server's default.",
    )
    window_s: float = Field(
        default=3600.0,
        gt=0,
        description="Length of the first window (s), when no earlier monitor run left a "
        "watermark; later runs start where the previous one ended.",
    )
    feedback_lookback_s: float = Field(
        default=86400.0,
        ge=0,
        description="How far before the window to look for the predictions that new feedback "
        "is about (s); match serving.feedback_window_s.",
    )
    min_predictions: int = Field(
        default=20,
        ge=1,
        description="Fewest logged predictions in the window for the drift and label checks; "
        "fewer: those checks are skipped.",
    )
    min_feedback: int = Field(
        default=10,
        ge=1,
        description="Fewest predictions with feedback for the live-accuracy check; fewer: skipped.",
    )
    reference_sample: int = Field(
        default=1000, ge=10, description="Training texts sampled as the drift reference."
    )
    max_current: int = Field(
        default=2000, ge=10, description="Logged texts sampled from the window for drift."
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Alarm above this share of requests answered with a 5xx status.",
    )
    max_p95_latency_ms: float = Field(
        default=5000.0, gt=0, description="Alarm above this p95 latency (ms)."
    )
    max_label_shift: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Alarm above this total-variation distance between the predicted labels' "
        "shares and the training split's (0 same, 1 disjoint).",
    )
    drift_threshold: float = Field(
        default=0.75,
        gt=0.5,
        le=1,
        description="Alarm above this input-drift score: the ROC AUC of Evidently's domain "
        "classifier telling window texts from training texts (0.5: indistinguishable).",
    )
    min_live_accuracy: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Alarm below this share of predictions with feedback that were right.",
    )
    rollback_on_alarm: bool = Field(
        default=False,
        description="On an alarm, roll the champion back to previous-champion (the server "
        "follows within serving.reload_interval_s).",
    )
    seed: int = Field(default=0, description="Seed of the reference and window samples.")


# --- measurements ---------------------------------------------------------------------------


class WindowStats(BaseModel):
    """Traffic of one window: counts, error rate, latency and predicted labels."""

    predictions: int
    errors: int
    error_rate: float | None
    p95_latency_ms: float | None
    label_counts: dict[str, int] = Field(default_factory=dict)
    versions: dict[str, int] = Field(default_factory=dict)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (`q` in 0..100): a value that was observed, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def window_stats(records: Iterable[PredictionRecord]) -> WindowStats:
    """Over the sampled records only: the others are kept for feedback and would skew rates."""
    sampled = [r for r in records if r.sampled]
    errors = sum(1 for r in sampled if r.status >= 500)
    labels = Counter(r.label for r in sampled if r.label is not None and r.status < 400)
    return WindowStats(
        predictions=len(sampled),
        errors=errors,
        error_rate=errors / len(sampled) if sampled else None,
        p95_latency_ms=percentile([r.latency_ms for r in sampled], 95),
        label_counts=dict(sorted(labels.items())),
        versions=dict(sorted(Counter(r.model_version for r in sampled).items())),
    )


def label_shift(live: dict[str, int], reference: dict[str, int]) -> float | None:
    """Total-variation distance between two label distributions (0..1), None if one is empty.

    A label the training split never had counts in full: the model should not produce it.
    """
    live_total, ref_total = sum(live.values()), sum(reference.values())
    if not live_total or not ref_total:
        return None
    labels = set(live) | set(reference)
    return 0.5 * sum(
        abs(live.get(k, 0) / live_total - reference.get(k, 0) / ref_total) for k in labels
    )


class LiveAccuracy(BaseModel):
    """Feedback about served predictions: how many were right."""

    with_feedback: int = 0  # predictions found in the log that feedback was about
    correct: int = 0
    flagged: int = 0  # `"flag": "wrong"` rows (each counts as wrong)
    unmatched: int = 0  # feedback rows whose prediction id is not in the log read
    accuracy: float | None = None


def live_accuracy(
    feedback: Iterable[dict], served: dict[str, str | None], label_column: str
) -> LiveAccuracy:
    """Share of corrected or flagged predictions whose served label equals the correction.

    `served` maps prediction id -> served label. When several rows are about one prediction the
    last one (newest batch) counts. Rows without a prediction id (ordinary training feedback)
    are not about a served prediction and are ignored.
    """
    verdicts: dict[str, bool] = {}
    flagged: set[str] = set()
    unmatched = 0
    for row in feedback:
        prediction_id = row.get("prediction_id")
        if not isinstance(prediction_id, str) or not prediction_id:
            continue
        if prediction_id not in served:
            unmatched += 1
            continue
        if row.get("flag") == "wrong":
            verdicts[prediction_id] = False
            flagged.add(prediction_id)
            continue
        label = row.get(label_column)
        if isinstance(label, str) and label:
            verdicts[prediction_id] = served[prediction_id] == label
            flagged.discard(prediction_id)
    n = len(verdicts)
    correct = sum(verdicts.values())
    return LiveAccuracy(
        with_feedback=n,
        correct=correct,
        flagged=len(flagged),
        unmatched=unmatched,
        accuracy=correct / n if n else None,
    )


def feedback_since(
    store: FeedbackStore, since: datetime | None, until: datetime | None = None
) -> list[dict]:
    """Rows of the batches stored in `[since, until)` (by file time), oldest batch first."""
    entries = store.fs.ls(f"{store.root.rstrip('/')}/batches", detail=True)
    found = []
    for entry in entries:
        name = entry["name"].replace("\\", "/").rsplit("/", 1)[-1]
        if not name.endswith(".jsonl") or ".tmp-" in name:
            continue
        stamp = _mtime(entry)
        if since is not None and stamp < since.timestamp():
            continue
        if until is not None and stamp >= until.timestamp():
            continue
        found.append((stamp, name.removesuffix(".jsonl")))
    rows: list[dict] = []
    for _, batch_id in sorted(found):
        rows.extend(store.read_batch(batch_id))
    return rows


def _mtime(entry: dict) -> float:
    value = entry.get("mtime") or entry.get("created") or entry.get("LastModified") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


class DriftResult(BaseModel):
    """Evidently's text drift of the window's inputs against the training texts."""

    score: float  # ROC AUC of the domain classifier (0.5: no drift)
    drifted: bool
    threshold: float
    method: str
    reference_rows: int
    current_rows: int
    html_path: Path | None = None


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    """At most `n` of `texts`, reproducibly."""
    if len(texts) <= n:
        return list(texts)
    return random.Random(seed).sample(texts, n)


def text_drift(
    reference: list[str], current: list[str], threshold: float, html_path: Path | None = None
) -> DriftResult:
    """Evidently 0.7's text content drift: a classifier trained to tell the two sets apart.

    Its ROC AUC is the score (`abs_text_content_drift`, no bootstrap, so the threshold is ours and
    reads the same whatever the window size). The HTML report shows the words and examples
    that tell them apart.
    """
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(text_columns=["text"])
    metric = ValueDrift(column="text", method="abs_text_content_drift", threshold=threshold)
    snapshot = Report([metric]).run(
        Dataset.from_pandas(pd.DataFrame({"text": current}), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame({"text": reference}), data_definition=definition),
    )
    score = float(snapshot.dict()["metrics"][0]["value"])
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return DriftResult(
        score=score,
        drifted=score > threshold,
        threshold=threshold,
        method="abs_text_content_drift (domain classifier ROC AUC)",
        reference_rows=len(reference),
        current_rows=len(current),
        html_path=html_path,
    )


# --- the reference: the champion's training split -------------------------------------------


class Reference(BaseModel):
    """Training texts (a sample) and label counts of the version being watched."""

    version: str
    run_id: str | None
    texts: list[str] = Field(default_factory=list)
    label_counts: dict[str, int] = Field(default_factory=dict)


def load_reference(
    client: object, name: str, version: str, dst: Path, sample_size: int, seed: int
) -> Reference:
    """The split its retrain run logged; an empty reference when the run logged none."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    run_id = client.get_model_version(name, version).run_id  # type: ignore[attr-defined]
    if not run_id:
        return Reference(version=version, run_id=None)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=REFERENCE_ARTIFACT,
            dst_path=str(dst),
            tracking_uri=client.tracking_uri,  # type: ignore[attr-defined]
        )
    except (MlflowException, OSError):
        return Reference(version=version, run_id=run_id)
    frame = pd.read_parquet(local)
    texts = [t for t in frame.get("text", pd.Series(dtype=str)).tolist() if isinstance(t, str)]
    counts: dict[str, int] = {}
    if "label" in frame.columns:
        counts = {str(k): int(v) for k, v in frame["label"].value_counts().sort_index().items()}
    return Reference(
        version=version,
        run_id=run_id,
        texts=sample(texts, sample_size, seed),
        label_counts=counts,
    )


# --- the decision ---------------------------------------------------------------------------


class Reading(BaseModel):
    """Every number one monitor run measured (what the alarm event and the artifacts carry)."""

    model_name: str
    champion: str
    since: datetime
    until: datetime
    window: WindowStats
    label_shift: float | None = None
    drift: DriftResult | None = None
    accuracy: LiveAccuracy = Field(default_factory=LiveAccuracy)
    reference_rows: int = 0

    def numbers(self) -> dict[str, float]:
        """Flat metrics (MLflow names: fixed ASCII keys, never a label)."""
        out = {
            "predictions": self.window.predictions,
            "errors": self.window.errors,
            "error_rate": self.window.error_rate,
            "p95_latency_ms": self.window.p95_latency_ms,
            "label_shift": self.label_shift,
            "drift_score": self.drift.score if self.drift else None,
            "drifted": float(self.drift.drifted) if self.drift else None,
            "with_feedback": self.accuracy.with_feedback,
            "feedback_flagged": self.accuracy.flagged,
            "feedback_unmatched": self.accuracy.unmatched,
            "live_accuracy": self.accuracy.accuracy,
            "reference_rows": self.reference_rows,
        }
        return {k: float(v) for k, v in out.items() if v is not None}


class Check(BaseModel):
    name: str
    passed: bool
    detail: str
    skipped: bool = False
    value: float | None = None
    threshold: float | None = None

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("OK" if self.passed else "ALARM")


class Alarm(BaseModel):
    alarm: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        return [f"{c.status} {c.name}: {c.detail}" for c in self.checks]

    @property
    def breached(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def _above(name: str, value: float | None, limit: float, what: str, missing: str) -> Check:
    if value is None:
        return Check(name=name, passed=True, skipped=True, detail=missing, threshold=limit)
    ok = value <= limit
    return Check(
        name=name,
        passed=ok,
        value=value,
        threshold=limit,
        detail=f"{what} {value:.4g} {'<=' if ok else '>'} {limit:.4g}",
    )


def decide(reading: Reading, settings: MonitorSettings) -> Alarm:
    """One check per threshold; the alarm is raised when any check that ran failed."""
    window = reading.window
    enough = window.predictions >= settings.min_predictions
    few = f"{window.predictions} predictions in the window, fewer than monitor.min_predictions"
    checks = [
        _above(
            "error_rate",
            window.error_rate,
            settings.max_error_rate,
            "5xx share",
            "no predictions logged in the window",
        ),
        _above(
            "p95_latency",
            window.p95_latency_ms,
            settings.max_p95_latency_ms,
            "p95 latency (ms)",
            "no predictions logged in the window",
        ),
        _above(
            "label_shift",
            reading.label_shift if enough else None,
            settings.max_label_shift,
            "label distribution distance",
            few if not enough else "no labels (generation, or no label counts in the reference)",
        ),
        _above(
            "input_drift",
            reading.drift.score if reading.drift and enough else None,
            settings.drift_threshold,
            "drift score (domain classifier AUC)",
            few if not enough else "no reference texts logged by the champion's run",
        ),
    ]
    accuracy = reading.accuracy
    if accuracy.accuracy is None or accuracy.with_feedback < settings.min_feedback:
        checks.append(
            Check(
                name="live_accuracy",
                passed=True,
                skipped=True,
                threshold=settings.min_live_accuracy,
                detail=f"{accuracy.with_feedback} predictions with feedback, fewer than "
                "monitor.min_feedback",
            )
        )
    else:
        ok = accuracy.accuracy >= settings.min_live_accuracy
        checks.append(
            Check(
                name="live_accuracy",
                passed=ok,
                value=accuracy.accuracy,
                threshold=settings.min_live_accuracy,
                detail=f"{accuracy.correct}/{accuracy.with_feedback} right = "
                f"{accuracy.accuracy:.4g} {'>=' if ok else '<'} {settings.min_live_accuracy:.4g}",
            )
        )
    return Alarm(alarm=any(not c.passed for c in checks), checks=checks)


def alarm_payload(reading: Reading, alarm: Alarm, mlflow_run_id: str) -> dict:
    """The `tunegate.monitor.alarm` event's payload: numbers, breached checks, reasons."""
    return {
        "model": reading.model_name,
        "champion": reading.champion,
        "since": reading.since.isoformat(),
        "until": reading.until.isoformat(),
        "breached": alarm.breached,
        "reasons": alarm.reasons,
        "numbers": reading.numbers(),
        "mlflow_run_id": mlflow_run_id,
    }


# --- the watermark --------------------------------------------------------------------------


def last_window_end(client: object, experiment_id: str) -> datetime | None:
    """Where the newest finished run of this monitor experiment stopped reading (None: first).

    Kept in the tracking store, which every replica of the monitor shares. The experiment is
    the model's own (`<model>-monitor`), so no user string goes into the filter."""
    runs = client.search_runs(  # type: ignore[attr-defined]
        [experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=[f"metrics.{WATERMARK_METRIC} DESC"],
        max_results=1,
    )
    if not runs or WATERMARK_METRIC not in runs[0].data.metrics:
        return None
    return datetime.fromtimestamp(runs[0].data.metrics[WATERMARK_METRIC], UTC)


# --- tasks ----------------------------------------------------------------------------------
# Never cached nor persisted: each run reads a new window, and the results hold logged texts
# that should live in the prediction log only.


@task(name="monitor-read-log", cache_policy=NO_CACHE, persist_result=False)
def read_window_task(
    log_url: str, since: datetime, until: datetime, lookback_s: float, model_name: str
) -> tuple[list[PredictionRecord], dict[str, str | None]]:
    """The window's records of `model_name`, and id -> label over the lookback for feedback."""
    from datetime import timedelta

    from tasks.predictions import read_records

    window: list[PredictionRecord] = []
    served: dict[str, str | None] = {}
    progress = Progress("monitor-read-log")
    for record in read_records(log_url, since - timedelta(seconds=lookback_s), until):
        progress.advance()
        if record.model_name != model_name:
            continue
        served[record.prediction_id] = record.label
        if record.time >= since:
            window.append(record)
    progress.done()
    return window, served


@task(name="monitor-drift", cache_policy=NO_CACHE, persist_result=False)
def drift_task(
    reference: list[str], current: list[str], settings: MonitorSettings, html_path: Path | None
) -> DriftResult | None:
    """None when either side has fewer than `monitor.min_predictions` texts."""
    if len(reference) < settings.min_predictions or len(current) < settings.min_predictions:
        return None
    result = text_drift(
        reference,
        sample(current, settings.max_current, settings.seed),
        settings.drift_threshold,
        html_path,
    )
    stage_logger(__name__).info(
        "drift: score %.3f over %d reference / %d window texts",
        result.score,
        result.reference_rows,
        result.current_rows,
    )
    return result


@task(name="monitor-decide", cache_policy=NO_CACHE, persist_result=False)
def decide_task(reading: Reading, settings: MonitorSettings) -> Alarm:
    return decide(reading, settings)
