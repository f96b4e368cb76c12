"""The review flow (deployment `review-scheduled`, and at the end of every retrain when
`review.url` is set): select examples for people to check and queue them in Label Studio.

read the prediction log and the feedback stores of the last `review.lookback_s` -> select
(low confidence, flagged, corrected, a random sample; at the end of a retrain also the test
split's disagreements and worst errors) -> the model's project (created or reused, labelling
interface from the config, webhook back to tunegate) -> import the new items as tasks with the
model's answer as a prediction -> record (a Prefect artifact with counts only).

Texts are the scrubbed ones (prediction log, feedback rows, scrubbed test split): no raw PII
enters Label Studio. The API key and the webhook token are read from the environment here, at
the flow's edge, under the names the config gives.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.config import ConfigError, RetrainConfig, _read_raw, load_sections
from tasks.feedback import FeedbackSettings, FeedbackStore
from tasks.models import ModelSettings
from tasks.monitor import feedback_since
from tasks.predictions import read_records
from tasks.registry import MLflowSettings
from tasks.review.selection import ReviewItem, merge_items, select_production, select_test
from tasks.review.settings import ReviewSettings
from tasks.serving import ServingSettings, flags_store_url, prediction_log_url

__all__ = ["ReviewConfig", "ReviewSummary", "TestExamples", "load_review_config", "review"]

PROJECT_TAG = "tunegate.review.project_id"


class ReviewConfig(BaseModel):
    """The sections of the tunegate config the review reads (one file serves every flow)."""

    model_config = ConfigDict(extra="forbid")

    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    task: Literal["classification", "generation"] = Field(
        default=ModelSettings.model_fields["task"].default,
        description="model.task: a choice of labels or a text area in Label Studio.",
    )
    text_column: str = Field(
        default="text", description="data.text_column: the feedback rows' text column."
    )
    labels: list[str] | None = Field(
        default=None, description="data.labels: the choices (required for classification)."
    )
    work_dir: Path = Field(
        default=RetrainConfig.model_fields["work_dir"].default,
        description="work_dir: the prediction log's default home.",
    )

    @classmethod
    def of(cls, config: RetrainConfig, labels: list[str] | None = None) -> ReviewConfig:
        """The review's part of a retrain config; `labels` those the run found in the data."""
        return cls(
            mlflow=config.mlflow,
            feedback=config.feedback,
            serving=config.serving,
            review=config.review,
            task=config.model.task,
            text_column=config.data.text_column,
            labels=labels or config.data.labels,
            work_dir=config.work_dir,
        )

    @property
    def log_url(self) -> str:
        return prediction_log_url(self.serving, self.work_dir)


def load_review_config(path: Path | None, overrides: list[str] | None = None) -> ReviewConfig:
    """`--config` + `--set` -> the review's sections; needs no `data.path`."""
    sections = load_sections(
        path,
        overrides,
        {
            "mlflow": MLflowSettings,
            "feedback": FeedbackSettings,
            "serving": ServingSettings,
            "review": ReviewSettings,
        },
    )
    raw = _read_raw(path, overrides)
    extra: dict[str, Any] = {}
    data, model = raw.get("data") or {}, raw.get("model") or {}
    if isinstance(data, dict):
        extra.update({k: data[k] for k in ("text_column", "labels") if k in data})
    if isinstance(model, dict) and "task" in model:
        extra["task"] = model["task"]
    if "work_dir" in raw:
        extra["work_dir"] = raw["work_dir"]
    try:
        return ReviewConfig(**sections, **extra)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        key = {
            "task": "model.task",
            "text_column": "data.text_column",
            "labels": "data.labels",
        }.get(key, key)
        raise ConfigError(f"{key}: {err['msg']}") from None


class TestExamples(BaseModel):
    """A retrain's scrubbed test split with the candidate's and the champion's answers."""

    __test__ = False  # not a pytest class

    texts: list[str]
    references: list[str]
    candidate: list[str]
    champion: list[str] | None = None
    candidate_scores: list[float] | None = None  # generation: ROUGE-L per example
    candidate_version: str


class ReviewSummary(BaseModel):
    """What one review run queued. Counts and ids only (no texts)."""

    model: str
    project_id: int | None = None
    project_url: str | None = None
    project_created: bool = False
    webhook_id: int | None = None
    selected: dict[str, int] = Field(default_factory=dict)  # reason -> items (before the cap)
    already_queued: int = 0
    imported: int = 0
    task_ids: list[int] = Field(default_factory=list)
    note: str = ""


def _secret(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(f"{name} is not set: export {what} (the config names the variable)")
    return value


@flow(name="review", log_prints=True)
def review(config: ReviewConfig, test: TestExamples | None = None) -> ReviewSummary:
    """Queue the examples people should check in the model's Label Studio project."""
    from tasks.review.client import ReviewQueue

    settings = config.review
    name = config.mlflow.registered_model
    if settings.url is None:
        return ReviewSummary(model=name, note="review.url not set: no review queue")
    if config.task == "classification" and not config.labels:
        raise ConfigError("data.labels: required for a classification review queue")
    api_key = _secret(settings.api_key_env, "the Label Studio API token")
    token = None
    if settings.webhook_url is not None:
        token = _secret(settings.webhook_token_env, "the token Label Studio sends to the webhook")
    logger = get_run_logger()

    queue = ReviewQueue(settings.url, api_key, settings.timeout_s)
    queue.ping()
    items = _select(config, test)
    client = _mlflow(config.mlflow)
    project_id, created = queue.ensure_project(
        name, config.task, config.labels, _known_project(client, name)
    )
    _remember_project(client, name, project_id)
    webhook_id = None
    if settings.webhook_url is not None and token is not None:
        webhook_id = queue.ensure_webhook(project_id, settings.webhook_url, token)
    queued = queue.queued_ids(project_id)
    chosen = merge_items(items, settings.max_tasks, queued)
    task_ids = queue.import_items(project_id, name, config.task, chosen)
    summary = ReviewSummary(
        model=name,
        project_id=project_id,
        project_url=f"{settings.url}/projects/{project_id}",
        project_created=created,
        webhook_id=webhook_id,
        selected=dict(Counter(r for item in items for r in item.reasons)),
        already_queued=len({i.item_id for i in items} & queued),
        imported=len(task_ids),
        task_ids=task_ids,
    )
    summary.note = (
        f"{summary.imported} tasks queued in {summary.project_url} "
        f"({summary.already_queued} selected ones already there)"
    )
    logger.info("%s", summary.note)
    _record(summary)
    return summary


def _select(config: ReviewConfig, test: TestExamples | None) -> list[ReviewItem]:
    settings = config.review
    until = datetime.now(UTC)
    since = until - timedelta(seconds=settings.lookback_s)
    store = config.feedback.store
    items = select_production(
        read_records(config.log_url, since, until),
        feedback_since(FeedbackStore(store), since, until),
        feedback_since(FeedbackStore(flags_store_url(store)), since, until),
        config.text_column,
        settings,
        config.mlflow.registered_model,
        seed_key=f"{until:%Y-%m-%dT%H}",
    )
    if test is not None:
        items += select_test(
            test.texts,
            test.references,
            test.candidate,
            test.champion,
            test.candidate_scores,
            settings,
            test.candidate_version,
        )
    return items


def _mlflow(settings: MLflowSettings) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(settings.tracking_uri)


def _known_project(client: Any, name: str) -> int | None:
    """The project id kept on the registered model (None before its first version)."""
    from mlflow.exceptions import MlflowException

    try:
        value = client.get_registered_model(name).tags.get(PROJECT_TAG)
    except MlflowException:
        return None
    return int(value) if value and str(value).isdigit() else None


def _remember_project(client: Any, name: str, project_id: int) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_tag(name, PROJECT_TAG, str(project_id))
    except MlflowException:  # no registered model yet: the title finds the project meanwhile
        pass


def _record(summary: ReviewSummary) -> None:
    from prefect.artifacts import create_markdown_artifact

    rows = "\n".join(f"| {reason} | {n} |" for reason, n in sorted(summary.selected.items()))
    create_markdown_artifact(
        f"# Review queue: {summary.imported} new tasks\n\n"
        f"Label Studio project: {summary.project_url}\n\n"
        "| selected because | examples |\n|---|---|\n"
        + (rows or "| - | 0 |")
        + f"\n\n{summary.already_queued} selected examples were already queued.",
        key="review-queue",
        description="Examples queued for people to check",
    )
