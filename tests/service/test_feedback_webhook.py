"""Feedback signed with Standard Webhooks against real servers: the webhook stores the batch, emits the event, the
deployment trigger starts a retrain on `tunegate serve`, and the model lands in the MLflow
server's registry. Replays, refusals and a burst of concurrent deliveries."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.servers import (
    SECRET,
    TRIGGER_MIN_ROWS,
    Stack,
    feedback_rows,
    jsonl,
    signed_post,
    wait_for,
)

pytestmark = pytest.mark.service

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _included(stack: Stack) -> set[str]:
    return {p.stem for p in (stack.store / "included").glob("*.json")}


def _settled(stack: Stack, deployment: str) -> list[dict] | None:
    runs = stack.flow_runs(deployment)
    if runs and all(r["state_type"] in TERMINAL for r in runs):
        return runs
    return None


def _new_batches_by_run(stack: Stack) -> dict[str, list[str]]:
    """MLflow run id -> the feedback batches it included first (from its tags)."""
    client = MlflowClient(stack.mlflow_uri)
    experiment = client.get_experiment_by_name("tunegate")
    out = {}
    for run in client.search_runs([experiment.experiment_id], max_results=500):
        value = run.data.tags.get("tunegate.feedback.new_batches", "-")
        out[run.info.run_id] = [] if value == "-" else value.split(",")
    return out


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_signed_batch_starts_a_retrain_that_registers_a_model_then_replays_do_nothing(
    stack: Stack,
):
    rows = feedback_rows(TRIGGER_MIN_ROWS, "first")  # exactly the row threshold: signals
    body = jsonl(rows)
    delivery = f"first-{uuid.uuid4().hex}"
    response = signed_post(stack.webhook_url, body, delivery)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["rows"] == TRIGGER_MIN_ROWS
    assert answer["trigger"] == "signalled"
    batch_id = answer["batch_id"]
    assert [p.stem for p in stack.batch_files()] == [batch_id]

    runs = wait_for(
        lambda: _settled(stack, "retrain-on-feedback"),
        420,
        "the feedback-triggered run did not finish",
        stack.services.procs[2],
        every=2,
        explain=stack.automation_events,
    )
    assert [r["state_type"] for r in runs] == ["COMPLETED"], runs
    assert _included(stack) == {batch_id}

    client = MlflowClient(stack.mlflow_uri)
    versions = [  # the session's other tests (approval) register to the same model
        v
        for v in client.search_model_versions(f"name='{stack.registered_model}'")
        if client.get_run(v.run_id).data.tags.get("prefect.flow_run_id") == runs[0]["id"]
    ]
    assert len(versions) == 1
    run = client.get_run(versions[0].run_id)
    assert run.data.tags["prefect.flow_run_id"] == runs[0]["id"]
    assert run.data.tags["tunegate.feedback.new_batches"] == batch_id
    assert run.data.metrics["feedback_rows"] == TRIGGER_MIN_ROWS
    assert run.data.metrics["feedback_added"] == TRIGGER_MIN_ROWS

    # the same delivery again: refused; the same content under a new delivery id: stored once
    again = signed_post(stack.webhook_url, body, delivery)
    assert again.status_code == 409, again.text
    retry = signed_post(stack.webhook_url, body, f"retry-{uuid.uuid4().hex}")
    assert retry.status_code == 200, retry.text
    assert retry.json()["duplicate"] is True and retry.json()["batch_id"] == batch_id
    assert [p.stem for p in stack.batch_files()] == [batch_id]
    time.sleep(8)  # a trigger would create a run within a second or two
    assert len(stack.flow_runs("retrain-on-feedback")) == 1


def test_refused_requests_write_nothing_and_trigger_nothing(stack: Stack):
    before_files = sorted(p.name for p in stack.store.rglob("*"))
    before_runs = len(stack.flow_runs("retrain-on-feedback"))
    body = jsonl(feedback_rows(TRIGGER_MIN_ROWS, "refused"))

    unsigned = httpx.post(stack.webhook_url, content=body, timeout=30)
    assert unsigned.status_code == 401
    from deployments.signature import sign_headers

    headers = sign_headers(SECRET, body, "t1")
    tampered = httpx.post(
        stack.webhook_url,
        content=body.replace(b"low_risk", b"decline"),
        headers=headers,
        timeout=30,
    )
    assert tampered.status_code == 401
    fresh_id = httpx.post(  # a captured request under a fresh id: the id is signed
        stack.webhook_url, content=body, headers={**headers, "webhook-id": "t2"}, timeout=30
    )
    assert fresh_id.status_code == 401
    malformed_header = httpx.post(
        stack.webhook_url,
        content=body,
        headers={**headers, "webhook-signature": "v1,ünï".encode(), "webhook-id": "h1"},
        timeout=30,
    )
    assert malformed_header.status_code == 401
    other = "whsec_" + base64.b64encode(b"not-the-secret-but-32-bytes-long").decode()
    wrong_secret = signed_post(stack.webhook_url, body, "w1", secret=other)
    assert wrong_secret.status_code == 401
    stale = signed_post(stack.webhook_url, body, "s1", timestamp=int(time.time()) - 301)
    assert stale.status_code == 401
    oversized = signed_post(stack.webhook_url, b"x" * 70_000, "o1")  # webhook.max_body_bytes
    assert oversized.status_code == 413
    malformed = signed_post(
        stack.webhook_url,
        body.replace(b'"risk_label": "decline"', b'"risk_label": "maybe"', 1) + b"{not json\n",
        "m1",
    )
    assert malformed.status_code == 422
    detail = malformed.json()["detail"]
    assert detail[0].startswith("line 4: ") and detail[-1].startswith(
        f"line {TRIGGER_MIN_ROWS + 1}: malformed JSON"
    )

    time.sleep(5)
    assert sorted(p.name for p in stack.store.rglob("*")) == before_files
    assert len(stack.flow_runs("retrain-on-feedback")) == before_runs
    # a refused delivery id was not remembered: the corrected batch under it is accepted later
    assert not any(r.status_code == 409 for r in (unsigned, tampered, fresh_id, stale, malformed))


def test_burst_of_20_batches_queues_retrains_never_concurrent_each_batch_once(stack: Stack):
    before = _included(stack)
    bodies = [jsonl(feedback_rows(4, f"burst{i}")) for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: signed_post(stack.webhook_url, b), bodies))
    assert [r.status_code for r in responses] == [202] * 20, [r.text for r in responses]
    burst = {r.json()["batch_id"] for r in responses}
    assert len(burst) == 20
    assert sum(r.json()["trigger"] == "signalled" for r in responses) == 20 * 4 // TRIGGER_MIN_ROWS

    # the first test's run + one per signal; the signal's run may be created after the first
    # burst run has already taken every batch (the automation lags under load), so wait for it
    expected = 1 + 20 * 4 // TRIGGER_MIN_ROWS
    wait_for(
        lambda: (
            burst <= _included(stack)
            and len(_settled(stack, "retrain-on-feedback") or []) >= expected
        ),
        600,
        f"the burst's batches were not all included by {expected} settled runs",
        stack.services.procs[2],
        every=2,
        explain=stack.automation_events,
    )
    runs = _settled(stack, "retrain-on-feedback")
    assert all(r["state_type"] == "COMPLETED" for r in runs), runs

    # every batch included by exactly one MLflow run
    by_run = _new_batches_by_run(stack)
    counts = {b: sum(b in batches for batches in by_run.values()) for b in burst | before}
    assert set(counts.values()) == {1}, counts

    # never concurrent: each run started after the previous one ended
    ran = sorted((r for r in runs if r["start_time"]), key=lambda r: _time(r["start_time"]))
    for earlier, later in zip(ran, ran[1:], strict=False):
        assert _time(later["start_time"]) >= _time(earlier["end_time"]), (earlier, later)
    # queued, not dropped: runs waited for the deployment's single slot
    waited = 0
    for run in runs:
        states = stack.prefect("GET", f"/flow_run_states/?flow_run_id={run['id']}")
        waited += any(s["name"] == "AwaitingConcurrencySlot" for s in states)
    assert waited >= 1
    print(json.dumps({"feedback_runs": len(runs), "waited_for_slot": waited}))
