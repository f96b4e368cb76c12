"""The Label Studio side of the review queue, behind one small class over `label-studio-sdk`.

One project per registered model (title `tunegate <model>`, the model's full name in the
description), found again by the id kept as a tag on the registered model or by its title;
its label config rebuilt from the config on every run; the webhook that sends annotations to
tunegate registered once (its token header refreshed); items imported as tasks with the model's
answer as a prediction (Label Studio's pre-annotation).
"""

from __future__ import annotations

from typing import Any

from tasks.review.labelling import TEXT, labelling_config, pre_annotation, project_title
from tasks.review.selection import ReviewItem

TOKEN_HEADER = "X-Tunegate-Review-Token"
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
REASON_TEXT = {
    "corrected": "corrected through /v1/feedback",
    "flagged": "flagged as wrong",
    "low_confidence": "low confidence",
    "disagreement": "candidate and champion disagree",
    "worst_error": "one of the candidate's worst test errors",
    "random_sample": "random sample of ordinary traffic",
}


class ReviewQueue:
    """A Label Studio server, as the review flow uses it."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout_s)

    def ping(self) -> None:
        """Fail fast (an `httpx` error) when Label Studio does not answer its health check."""
        import httpx

        httpx.get(f"{self.url}/health", timeout=self.timeout_s).raise_for_status()

    def ensure_project(
        self, model_name: str, task: str, labels: list[str] | None, known_id: int | None
    ) -> tuple[int, bool]:
        """The model's project (created if missing) with the config's labelling interface;
        returns (project id, created)."""
        config = labelling_config(task, labels)
        title = project_title(model_name)
        description = f"tunegate review queue of the registered model {model_name!r}"
        project = self._find(known_id, title, description)
        if project is None:
            created = self.client.projects.create(
                title=title, description=description, label_config=config
            )
            return int(created.id), True
        if (project.label_config or "").strip() != config.strip():
            self.client.projects.update(id=project.id, label_config=config)
        return int(project.id), False

    def _find(self, known_id: int | None, title: str, description: str) -> Any:
        from label_studio_sdk.core.api_error import ApiError

        if known_id is not None:
            try:
                return self.client.projects.get(id=known_id)
            except ApiError as exc:
                if exc.status_code != 404:
                    raise
        for project in self.client.projects.list(title=title):
            if project.title == title and (project.description or "") == description:
                return project
        return None

    def ensure_webhook(self, project_id: int, url: str, token: str) -> int:
        """The project's webhook to `url`, sending the token header and the payload."""
        headers = {TOKEN_HEADER: token}
        for hook in self.client.webhooks.list(project=str(project_id)):
            if hook.url == url:
                if (hook.headers or {}) != headers or not hook.is_active:
                    self.client.webhooks.update(
                        id=hook.id, url=url, headers=headers, is_active=True, send_payload=True
                    )
                return int(hook.id)
        hook = self.client.webhooks.create(
            project=project_id,
            url=url,
            headers=headers,
            send_payload=True,
            send_for_all_actions=False,
            actions=WEBHOOK_ACTIONS,
            is_active=True,
        )
        return int(hook.id)

    def queued_ids(self, project_id: int) -> set[str]:
        """Item ids of the tasks already in the project (never imported twice)."""
        out = set()
        for task in self.client.tasks.list(project=project_id, fields="all", page_size=500):
            item = (task.data or {}).get("item_id")
            if isinstance(item, str):
                out.add(item)
        return out

    def import_items(
        self, project_id: int, model_name: str, task: str, items: list[ReviewItem]
    ) -> list[int]:
        """The items as tasks with their pre-annotations; returns the new task ids."""
        if not items:
            return []
        answer = self.client.projects.import_tasks(
            id=project_id,
            request=[task_payload(model_name, task, item) for item in items],
            return_task_ids=True,
        )
        return [int(i) for i in (answer.task_ids or [])]


def task_payload(model_name: str, task: str, item: ReviewItem) -> dict:
    """One Label Studio task: the scrubbed text, why it was chosen, the model's answer."""
    return {
        "data": {
            TEXT: item.text,
            "item_id": item.item_id,
            "model_name": model_name,
            "model_version": item.model_version,
            "prediction_id": item.prediction_id or "",
            "reason": ", ".join(REASON_TEXT[r] for r in item.reasons),
        },
        "predictions": [
            {
                "model_version": item.model_version,
                **({"score": item.score} if item.score is not None else {}),
                "result": pre_annotation(task, item.output),
            }
        ],
    }
