"""Feedback batches: signatures, record checks, the content-addressed store, merging, the
webhook's answers (in-process, its Prefect API on a closed port), and the deployments file."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tasks.feedback import (
    FeedbackStore,
    RecordsRefused,
    SignatureRefused,
    merge_feedback,
    parse_records,
    sign,
    verify_signature,
)
from tasks.load import DataSettings

pytestmark = pytest.mark.unit

DATA = DataSettings(
    path=Path("unused.jsonl"),
    text_column="text",
    label_column="label",
    labels=["good", "bad"],
)


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_signature_accepts_any_matching_v1_and_refuses_tampered_stale_or_missing():
    body = b'{"text": "a", "label": "good"}\n'
    now = time.time()
    header = sign("s3cret", body, int(now))
    verify_signature("s3cret", header, body, now, 300)
    rotated = f"t={int(now)},v1={'0' * 64},v1={header.split('v1=')[1]}"
    verify_signature("s3cret", rotated, body, now, 300)
    with pytest.raises(SignatureRefused, match="does not match"):
        verify_signature("s3cret", header, body + b" ", now, 300)
    with pytest.raises(SignatureRefused, match="does not match"):
        verify_signature("other", header, body, now, 300)
    with pytest.raises(SignatureRefused, match="older than 300"):
        verify_signature("s3cret", sign("s3cret", body, int(now) - 301), body, now, 300)
    with pytest.raises(SignatureRefused, match="missing"):
        verify_signature("s3cret", None, body, now, 300)
    with pytest.raises(SignatureRefused, match="malformed"):
        verify_signature("s3cret", "v1=abc", body, now, 300)


def test_parse_records_reads_json_and_jsonl_and_names_bad_lines():
    rows = [{"text": "fine", "label": "good"}, {"text": "also", "label": "bad"}]
    assert parse_records(_jsonl(rows), DATA) == rows
    assert parse_records(json.dumps(rows).encode(), DATA) == rows
    assert parse_records(json.dumps({"records": rows}).encode(), DATA) == rows
    body = _jsonl(rows) + b"\n{broken\n" + _jsonl([{"text": "", "label": "good"}, {"text": "x"}])
    body += _jsonl([{"text": "x", "label": "maybe"}])
    with pytest.raises(RecordsRefused) as refused:
        parse_records(body, DATA)
    problems = refused.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 4", "line 5", "line 6", "line 7"]
    assert "malformed JSON" in problems[0] and "allowed labels" in problems[3]
    with pytest.raises(RecordsRefused, match="record 2"):
        parse_records(json.dumps([rows[0], "text"]).encode(), DATA)


def test_store_writes_content_addressed_batches_once(tmp_path):
    store = FeedbackStore(str(tmp_path / "store"))
    rows = [{"text": "a", "label": "good"}, {"label": "bad", "text": "b"}]
    first = store.write_batch(rows)
    again = store.write_batch([dict(reversed(list(r.items()))) for r in rows])  # key order
    assert not first.duplicate and again.duplicate and first.batch_id == again.batch_id
    files = list((tmp_path / "store" / "batches").iterdir())
    assert [f.name for f in files] == [f"{first.batch_id}.jsonl"]  # no temporary file left
    assert store.pending_ids() == [first.batch_id]
    store.mark_included([first.batch_id], "flow-run", "mlflow-run")
    assert store.pending_ids() == [] and store.included_ids() == {first.batch_id}
    assert not store.delivery_seen("d1")
    store.remember_delivery("d1", first.batch_id)
    assert store.delivery_seen("d1")


def test_store_works_on_an_fsspec_url():
    store = FeedbackStore(f"memory://tunegate-test-{time.time_ns()}")
    batch = store.write_batch([{"text": "a", "label": "good"}])
    assert batch.location.startswith("memory://")
    assert store.read_batch(batch.batch_id) == [{"label": "good", "text": "a"}]
    assert store.pending_ids() == [batch.batch_id]


def test_merge_drops_duplicates_applies_relabels_and_keeps_unreadable_lines(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_text(
        '{"id": 1, "text": "Kept as it is", "label": "good"}\n'
        '{"id": 2, "text": "Relabelled later", "label": "good"}\n'
        "{not json\n"
    )
    data = DATA.model_copy(update={"path": base, "id_column": "id"})
    store = FeedbackStore(str(tmp_path / "store"))
    store.write_batch(
        [
            {"id": 9, "text": "kept  as it IS", "label": "good", "extra": "dropped column"},
            {"id": 10, "text": "Relabelled later", "label": "bad"},
            {"id": 11, "text": "Brand new", "label": "bad"},
        ]
    )
    merged = merge_feedback(data, store, tmp_path / "merged.jsonl")
    assert (merged.rows, merged.added, merged.duplicates, merged.relabelled) == (3, 2, 1, 1)
    assert merged.new_batches == merged.batches and len(merged.batches) == 1
    lines = (tmp_path / "merged.jsonl").read_text().splitlines()
    assert lines[-1] == "{not json"
    records = [json.loads(x) for x in lines[:-1]]
    assert records == [
        {"id": 1, "text": "Kept as it is", "label": "good"},
        {"id": 10, "text": "Relabelled later", "label": "bad"},
        {"id": 11, "text": "Brand new", "label": "bad"},
    ]
    store.mark_included(merged.batches, "r", "m")
    again = merge_feedback(data, store, tmp_path / "merged2.jsonl")
    assert again.batches == merged.batches and again.new_batches == []


def test_merge_without_batches_leaves_the_data_alone(tmp_path):
    merged = merge_feedback(DATA, FeedbackStore(str(tmp_path / "s")), tmp_path / "m.jsonl")
    assert merged.merged_path is None and not (tmp_path / "m.jsonl").exists()


# --- the webhook app, in-process -------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def webhook(tmp_path):
    from fastapi.testclient import TestClient

    from deployments.webhook import PrefectEvents, create_app
    from flows.config import load_config

    base = tmp_path / "base.jsonl"
    base.write_text(_jsonl([{"text": f"row {i}", "label": "good"} for i in range(3)]).decode())
    config = load_config(
        None,
        [
            f"data.path={base}",
            "data.labels=[good, bad]",
            f"feedback.store={tmp_path / 'store'}",
            "feedback.trigger_min_rows=2",
            "webhook.max_body_bytes=2000",
        ],
    )
    unreachable = PrefectEvents(f"http://127.0.0.1:{_closed_port()}/api", timeout_s=1)
    with TestClient(create_app(config, "k3y", unreachable)) as client:
        yield client, tmp_path / "store"


def _post(client, body: bytes, delivery: str = "d1", secret: str = "k3y", **headers):
    return client.post(
        "/feedback",
        content=body,
        headers={
            "X-Tunegate-Delivery": delivery,
            "X-Tunegate-Signature": sign(secret, body),
            **headers,
        },
    )


def _written(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def test_webhook_accepts_stores_and_reports_trigger_pending_without_prefect(webhook):
    client, store = webhook
    body = _jsonl([{"text": "new one", "label": "bad"}, {"text": "other", "label": "good"}])
    response = _post(client, body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["rows"] == 2 and answer["trigger"] == "pending"
    assert (store / "batches" / f"{answer['batch_id']}.jsonl").is_file()
    assert _post(client, body).status_code == 409  # same delivery id
    duplicate = _post(client, body, delivery="d2")
    assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
    assert len(list((store / "batches").glob("*.jsonl"))) == 1


def test_webhook_refusals_write_nothing(webhook):
    client, store = webhook
    before = _written(store)
    body = _jsonl([{"text": "x", "label": "good"}])
    assert (
        client.post("/feedback", content=body, headers={"X-Tunegate-Delivery": "a"}).status_code
        == 401
    )
    assert _post(client, body, secret="wrong").status_code == 401
    assert _post(client, b"x" * 2001, delivery="big").status_code == 413
    malformed = _post(client, body + b"{oops\n", delivery="bad")
    assert malformed.status_code == 422
    assert malformed.json()["detail"] == [
        "line 2: malformed JSON (Expecting property name enclosed in double quotes)"
    ]
    assert _post(client, body, delivery="").status_code == 400
    assert _written(store) == before
    assert _post(client, body, delivery="bad").status_code == 202  # refused ids are not kept


def test_webhook_reads_a_batch_referenced_in_the_store(webhook):
    client, store = webhook
    (store / "incoming").mkdir()
    (store / "incoming" / "drop.jsonl").write_bytes(_jsonl([{"text": "ref", "label": "bad"}]))
    response = _post(client, json.dumps({"ref": "incoming/drop.jsonl"}).encode())
    assert response.status_code == 202 and response.json()["rows"] == 1
    outside = _post(client, json.dumps({"ref": "../base.jsonl"}).encode(), delivery="d9")
    assert outside.status_code == 422


def test_webhook_refuses_to_start_without_a_secret(monkeypatch, capsys):
    from flows.cli import main

    monkeypatch.delenv("TUNEGATE_WEBHOOK_SECRET", raising=False)
    assert main(["webhook", "--set", "data.path=x.jsonl"]) == 2
    assert "TUNEGATE_WEBHOOK_SECRET" in capsys.readouterr().err


# --- deployments -----------------------------------------------------------------------------


def test_prefect_yaml_defines_scheduled_manual_and_triggered_retrains(tmp_path):
    from deployments.deploy import build_deployments, load_specs
    from flows.config import load_config

    specs = {s.name: s for s in load_specs()}
    assert set(specs) == {"retrain-scheduled", "retrain-manual", "retrain-on-feedback"}
    base = tmp_path / "base.jsonl"
    base.write_text('{"text": "a", "label": "good"}\n')
    config = load_config(None, [f"data.path={base}"])
    built = {d.name: d for d in build_deployments(config, list(specs.values()))}
    for deployment in built.values():
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.parameters["config"]["data"]["path"] == str(base.resolve())
    assert built["retrain-scheduled"].schedules[0].schedule.cron == "0 3 * * 1"
    trigger = built["retrain-on-feedback"].triggers[0]
    assert trigger.expect == {"tunegate.feedback.landed"}
    assert built["retrain-on-feedback"].parameters["only_new_feedback"] is True
    # the UI form: the typed config, with each setting's description and default
    schema = built["retrain-manual"]._parameter_openapi_schema.model_dump()
    definitions = schema["definitions"]
    epochs = definitions["TrainSettings"]["properties"]["epochs"]
    assert epochs["description"] and "default" in epochs
    assert "store" in definitions["FeedbackSettings"]["properties"]
