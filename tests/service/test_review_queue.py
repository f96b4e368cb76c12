"""The Label Studio review queue against real servers: Label Studio (`tunegate review-server`,
SQLite), and in the end-to-end test also Prefect, MLflow, `tunegate serve`, the webhook and the
model server of the session's stack."""

from __future__ import annotations

import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.servers import (
    LABELS,
    REVIEW_TOKEN,
    TRIGGER_MAX_WAIT_S,
    LabelStudioServer,
    Stack,
    free_port,
    wait_for,
)

pytestmark = pytest.mark.service

HOSTILE = ['a"b', "<c>&'d", "$text", "ünï code", "x/y?z"]


def test_review_server_creates_and_reuses_a_project_with_hostile_labels(
    label_studio: LabelStudioServer,
):
    from tasks.review.client import ReviewQueue

    queue = ReviewQueue(label_studio.url, label_studio.token)
    project_id, created = queue.ensure_project(
        "smoke <model> & co", "classification", HOSTILE, None
    )
    assert created
    again, created_again = queue.ensure_project(
        "smoke <model> & co", "classification", HOSTILE, None
    )
    assert (again, created_again) == (project_id, False)  # found by its title
    project = queue.client.projects.get(id=project_id)
    root = ET.fromstring(project.label_config)
    assert [c.get("value") for c in root.iter("Choice")] == HOSTILE
    assert project.title == "tunegate smoke <model> & co"


# --- end to end: predictions -> Label Studio -> annotation -> webhook -> feedback -> retrain ---

NAME = "svc-review"
PII = {
    "email": "lucia.fernandez@example.org",
    "name": "Lucia Fernandez",
    "phone": "+1 415 555 0199",
}
TEXTS = [
    f"Applicant {PII['name']} asks about a loan, email {PII['email']}",
    f"call {PII['phone']} about the stable salary income",
    "Several missed payments on the credit file in the last year",
    "Thin file with one short trade line and moderate utilisation",
    "Bankruptcy discharged recently and collections still open",
    "Applicant reports stable salary income and low existing debt",
    "Two open credit cards with high balances and a new car loan",
    "Long employment history and savings covering six months",
]


def _champion(stack: Stack, base: Path, out: Path) -> str:
    """A random 2-layer BERT classifier (uncertain: scores near 1/4) as the champion of NAME."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from tasks.models import ModelCard, write_labels
    from tasks.registry import MLflowSettings, log_model, open_tracking, register_version, start_run

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    ModelCard(base_model=str(base), method="full", max_length=48).write(out)
    write_labels(out, LABELS)
    settings = MLflowSettings(
        tracking_uri=stack.mlflow_uri, experiment="review", registered_model=NAME
    )
    client = open_tracking(settings)
    tracker = start_run(client, settings, {})
    uri = log_model(tracker, out, settings.tracking_uri)
    version = register_version(client, NAME, uri, tracker.run_id, {"gate": "passed"}, "")
    client.set_registered_model_alias(NAME, "champion", version)
    return version


def _review_batches(stack: Stack, task_id: int) -> list[dict]:
    from tasks.feedback import FeedbackStore

    store = FeedbackStore(str(stack.store))
    rows = [(b, store.read_batch(b)) for b in store.batch_ids()]
    return [r[0] | {"batch": b} for b, r in rows if r and r[0].get("review_task") == str(task_id)]


def test_low_confidence_and_flagged_predictions_reach_label_studio_and_answers_come_back(
    stack: Stack, label_studio: LabelStudioServer, tiny_model_dir: Path, monkeypatch
):
    started = time.time()
    root = stack.root / "review"
    version = _champion(stack, tiny_model_dir, root / "model")
    port = free_port()
    log_url = root / "predictions"
    serve_config = {
        "data": {"text_column": "narrative", "label_column": "risk_label"},
        "model": {"device": "cpu"},
        "mlflow": {"tracking_uri": stack.mlflow_uri, "registered_model": NAME},
        "feedback": {"store": str(stack.store)},
        "serving": {"port": port, "log_url": str(log_url), "log_flush_s": 0.5},
    }
    config_path = root / "serve.yaml"
    config_path.write_text(yaml.safe_dump(serve_config))
    server = stack.services.start(
        "review-model-server",
        [sys.executable, "-m", "tunegate", "serve-model", "--config", str(config_path)],
        port,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        stack.services.wait_healthy(server, f"{url}/health", timeout=300)
        _end_to_end(stack, label_studio, url, log_url, version, monkeypatch)
    finally:
        if server.popen.poll() is None:
            os.killpg(server.popen.pid, signal.SIGTERM)
    print(f"[review] end to end in {time.time() - started:.1f}s", flush=True)


def _end_to_end(
    stack: Stack,
    label_studio: LabelStudioServer,
    url: str,
    log_url: Path,
    version: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from label_studio_sdk import LabelStudio
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.review import ReviewConfig, review
    from tasks.dataset import merge_records
    from tasks.feedback import FeedbackStore
    from tasks.load import DataSettings
    from tasks.review.settings import ReviewSettings

    server = next(p for p in stack.services.procs if p.name == "review-model-server")

    # traffic with PII in it; the lower half of the scores is "low confidence", one more flagged
    answer = httpx.post(f"{url}/v1/predict", json={"inputs": TEXTS}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    scores = sorted(p["score"] for p in predictions)
    threshold = (scores[3] + scores[4]) / 2
    assert scores[3] < scores[4], "need distinct scores to split at"
    low = {p["id"] for p in predictions if p["score"] < threshold}
    flagged = next(p["id"] for p in predictions if p["score"] > threshold)
    flag = httpx.post(f"{url}/v1/feedback", json={"prediction_id": flagged, "flag": "wrong"})
    assert flag.status_code == 202, flag.text
    wait_for(
        lambda: sum(1 for f in log_url.rglob("*.jsonl") for _ in f.open()) >= len(TEXTS),
        30,
        "the prediction log was not flushed",
        server,
    )

    monkeypatch.setenv("REVIEW_TEST_LS_KEY", label_studio.token)
    monkeypatch.setenv("REVIEW_TEST_HOOK_TOKEN", REVIEW_TOKEN)
    config = ReviewConfig(
        mlflow={"tracking_uri": stack.mlflow_uri, "registered_model": NAME},
        feedback={"store": str(stack.store)},
        serving={"log_url": str(log_url)},
        review=ReviewSettings(
            url=label_studio.url,
            api_key_env="REVIEW_TEST_LS_KEY",
            webhook_token_env="REVIEW_TEST_HOOK_TOKEN",
            webhook_url=stack.webhook_url.removesuffix("/feedback") + "/label-studio",
            min_confidence=threshold,
            random_sample=0,
        ),
        task="classification",
        text_column="narrative",
        labels=LABELS,
    )
    with temporary_settings({PREFECT_API_URL: stack.prefect_api}):
        summary = review(config)
        again = review(config)
    assert summary.project_created and summary.imported == len(low) + 1
    assert summary.selected == {"low_confidence": len(low), "flagged": 1}
    assert again.project_id == summary.project_id and not again.project_created
    assert again.imported == 0 and again.already_queued == len(low) + 1

    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    tasks = {t.data["item_id"]: t for t in ls.tasks.list(project=summary.project_id, fields="all")}
    assert set(tasks) == {f"pred:{i}" for i in low | {flagged}}
    for item_id, task in tasks.items():
        (prediction,) = task.predictions
        assert prediction.model_version == version
        (region,) = prediction.result
        assert region["value"]["choices"][0] in LABELS
        assert task.data["reason"] == (
            "flagged as wrong" if item_id == f"pred:{flagged}" else "low confidence"
        )
        assert task.data["model_version"] == version

    # an answer through Label Studio's API -> its webhook -> one feedback batch
    task = tasks[f"pred:{sorted(low)[0]}"]
    result = [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [LABELS[3]]},
        }
    ]
    before_runs = {r["id"] for r in stack.flow_runs("retrain-on-feedback")}
    annotation = ls.annotations.create(id=task.id, result=result)
    wait_for(lambda: _review_batches(stack, task.id), 30, "no batch from the webhook")
    (row,) = _review_batches(stack, task.id)
    assert row["risk_label"] == LABELS[3] and row["prediction_id"] == sorted(low)[0]
    # Without Redis, Label Studio calls its webhooks inside the API request, in order: when the
    # update returns, tunegate has answered it.
    ls.annotations.update(id=annotation.id, result=result)  # the same answer again: nothing
    assert len(_review_batches(stack, task.id)) == 1
    changed = [{**result[0], "value": {"choices": [LABELS[2]]}}]
    ls.annotations.update(id=annotation.id, result=changed)  # a changed answer: one more
    wait_for(lambda: len(_review_batches(stack, task.id)) == 2, 30, "no batch for the change")
    assert len(_review_batches(stack, task.id)) == 2  # and the unchanged update wrote none

    # the debounce (feedback.trigger_max_wait_s) signals; retrain-on-feedback starts
    new_run = wait_for(
        lambda: [r for r in stack.flow_runs("retrain-on-feedback") if r["id"] not in before_runs],
        TRIGGER_MAX_WAIT_S + 60,
        "the review answer did not start retrain-on-feedback",
        every=1,
    )
    run_id = new_run[0]["id"]
    state = wait_for(
        lambda: (
            (r := stack.prefect("GET", f"/flow_runs/{run_id}"))["state_type"]
            not in ("SCHEDULED", "PENDING")
            and r["state_type"]
        ),
        90,
        "tunegate serve did not pick up the triggered retrain",
        every=1,
    )
    assert state in ("RUNNING", "COMPLETED"), state  # it runs on (the session's end stops it)
    store = FeedbackStore(str(stack.store))
    data = DataSettings(
        path=stack.root / "loans.jsonl",
        text_column="narrative",
        label_column="risk_label",
        id_column="application_id",
        labels=LABELS,
    )
    merged, _ = merge_records(data, store, store.active_ids())
    held = [r for r in merged.records.values() if r.get("prediction_id") == sorted(low)[0]]
    assert [r["risk_label"] for r in held] == [LABELS[2]]  # the later answer replaced the first

    # no raw PII anywhere in Label Studio's database
    stored = b"".join(p.read_bytes() for p in label_studio.data_dir.rglob("*") if p.is_file())
    for kind, value in PII.items():
        assert value.encode() not in stored, f"raw {kind} in Label Studio's data"
    assert b"Applicant" in stored  # the scrubbed texts are there
