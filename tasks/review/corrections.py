"""Label Studio's webhook payload -> one feedback row, deduplicated by (task, annotation).

Label Studio posts `{"action": "ANNOTATION_CREATED" | "ANNOTATION_UPDATED", "annotation":
{...}, "task": {...}, "project": {...}}` (its `webhooks.serializers_for_hooks`: the annotation
with `id`, `result`, `was_cancelled`; the task with `id` and the `data` this queue imported).
The row carries the scrubbed text the task was created with, the reviewer's answer, the
prediction id (so the gate's production slice finds it) and where it came from.

An update with the same answer writes nothing; a changed answer writes a new batch whose row
has the same text, so the retrain's merge replaces the earlier answer (tasks/dataset.py keys
rows by text). The answer last written per (task, annotation) is kept in the store's `review/`
ledger (`FeedbackStore.review_answer`).
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from tasks.load import DataSettings
from tasks.review.labelling import CHOICES, TEXT, TEXTAREA

ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


class PayloadRefused(Exception):
    """The payload cannot become a feedback row (HTTP 422); the message names the key."""


class Answer(BaseModel):
    """One reviewer's answer to one task."""

    task_id: str
    annotation_id: str
    text: str
    answer: str
    prediction_id: str | None = None
    model_version: str | None = None
    item_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.task_id}:{self.annotation_id}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.answer.encode()).hexdigest()

    def row(self, data: DataSettings, revision: int) -> dict:
        """The feedback row in the data's columns (`revision` counts changed answers, so an
        answer changed back still makes a new batch that replaces the one in between)."""
        row = {
            data.text_column: self.text,
            data.y_column: self.answer,
            "review_task": self.task_id,
            "review_annotation": self.annotation_id,
            "review_revision": revision,
        }
        if self.prediction_id:
            row["prediction_id"] = self.prediction_id
        if self.model_version:
            row["model_version"] = self.model_version
        return row


def parse_annotation(payload: object, data: DataSettings) -> Answer | None:
    """The answer in a webhook payload; None for an action or annotation that is no answer
    (another action, a skipped task, an empty result)."""
    if not isinstance(payload, dict):
        raise PayloadRefused("body: expected a JSON object (Label Studio's webhook payload)")
    if payload.get("action") not in ACTIONS:
        return None
    annotation, task = payload.get("annotation"), payload.get("task")
    if not isinstance(annotation, dict) or not isinstance(task, dict):
        raise PayloadRefused(
            "annotation, task: missing; enable 'send payload' on the Label Studio webhook"
        )
    if annotation.get("was_cancelled"):
        return None
    for key, value in (("annotation.id", annotation.get("id")), ("task.id", task.get("id"))):
        if not isinstance(value, int | str) or isinstance(value, bool) or str(value) == "":
            raise PayloadRefused(f"{key}: missing")
    task_data = task.get("data")
    text = task_data.get(TEXT) if isinstance(task_data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise PayloadRefused(f"task.data.{TEXT}: missing; not a task of a tunegate review project")
    answer = _answer(annotation.get("result"))
    if answer is None:
        return None
    if data.labels is not None and data.target_column is None and answer not in data.labels:
        raise PayloadRefused("annotation.result: the chosen label is not one of data.labels")
    return Answer(
        task_id=str(task["id"]),
        annotation_id=str(annotation["id"]),
        text=text,
        answer=answer,
        prediction_id=_text_or_none(task_data.get("prediction_id")),
        model_version=_text_or_none(task_data.get("model_version")),
        item_id=_text_or_none(task_data.get("item_id")),
    )


def _answer(result: object) -> str | None:
    if not isinstance(result, list):
        raise PayloadRefused("annotation.result: expected a list of regions")
    for region in result:
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            continue
        value = region["value"]
        if region.get("from_name") == CHOICES and isinstance(value.get("choices"), list):
            choices = [c for c in value["choices"] if isinstance(c, str)]
            return choices[0] if choices else None
        if region.get("from_name") == TEXTAREA and isinstance(value.get("text"), list):
            text = "\n".join(t for t in value["text"] if isinstance(t, str)).strip()
            return text or None
    return None


def _text_or_none(value: object) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None
