"""The feedback webhook's answers, in-process: Standard Webhooks signatures (any client of the
spec can sign), malformed headers refused with 401 (never 500), ids refused as replays across
restarts, the debounce counting what the store holds, `ref` bodies, and the `tunegate webhook`
command's refusal to start without a proper secret."""

from __future__ import annotations

import base64
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from deployments.signature import sign_headers

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"unit-test-secret-32-bytes-long!!").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingEvents:
    """A Prefect API that takes every event; the first `fail` calls raise after the write."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[dict] = []
        self.fail = fail

    async def emit(self, event: dict) -> bool:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the Prefect client fell over")
        self.events.append(event)
        return True


def _config(tmp_path: Path, *sets: str):
    from flows.config import load_config

    base = tmp_path / "base.jsonl"
    base.write_text(_jsonl([{"text": f"row {i}", "label": "good"} for i in range(3)]).decode())
    return load_config(
        None,
        [
            f"data.path={base}",
            "data.labels=[good, bad]",
            f"feedback.store={tmp_path / 'store'}",
            "feedback.trigger_min_rows=2",
            "webhook.max_body_bytes=2000",
            *sets,
        ],
    )


def _client(config, events=None, raise_server_exceptions: bool = True):
    from fastapi.testclient import TestClient

    from deployments.webhook import PrefectEvents, create_app

    if events is None:
        events = PrefectEvents(f"http://127.0.0.1:{_closed_port()}/api", timeout_s=1)
    app = create_app(config, SECRET, events)
    return TestClient(app, raise_server_exceptions=raise_server_exceptions)


@pytest.fixture
def webhook(tmp_path):
    with _client(_config(tmp_path)) as client:
        yield client, tmp_path / "store"


def _post(client, body: bytes, msg_id: str = "msg_1", secret: str = SECRET, **headers):
    return client.post(
        "/feedback", content=body, headers={**sign_headers(secret, body, msg_id), **headers}
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
    assert _post(client, body).status_code == 409  # same webhook-id
    duplicate = _post(client, body, msg_id="msg_2")
    assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
    assert len(list((store / "batches").glob("*.jsonl"))) == 1


def test_a_plain_standard_webhooks_client_can_sign(webhook):
    """The package's own signer, as a sender's code would call it: no tunegate helper."""
    client, _ = webhook
    body = _jsonl([{"text": "signed elsewhere", "label": "bad"}])
    now = datetime.now(tz=UTC)
    signature = Webhook(SECRET).sign("evt_42", now, body.decode())
    headers = {
        "webhook-id": "evt_42",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": f"v1,{'A' * 43}= {signature}",  # a rotated-out secret's entry first
    }
    response = client.post("/feedback", content=body, headers=headers)
    assert response.status_code == 202, response.text


def test_webhook_refusals_write_nothing(webhook):
    client, store = webhook
    before = _written(store)
    body = _jsonl([{"text": "x", "label": "good"}])
    assert client.post("/feedback", content=body).status_code == 401  # unsigned
    assert _post(client, body, secret=OTHER).status_code == 401
    tampered = sign_headers(SECRET, body, "msg_t")
    assert client.post("/feedback", content=body + b" ", headers=tampered).status_code == 401
    stale = sign_headers(SECRET, body, "msg_s", int(time.time()) - 301)
    assert client.post("/feedback", content=body, headers=stale).status_code == 401
    assert _post(client, b"x" * 2001, msg_id="big").status_code == 413
    malformed = _post(client, body + b"{oops\n", msg_id="bad")
    assert malformed.status_code == 422
    assert malformed.json()["detail"] == [
        "line 2: malformed JSON (Expecting property name enclosed in double quotes)"
    ]
    assert _written(store) == before
    assert _post(client, body, msg_id="bad").status_code == 202  # refused ids are not kept


def test_the_id_is_signed_so_a_captured_request_cannot_be_replayed_under_a_fresh_id(webhook):
    client, store = webhook
    body = _jsonl([{"text": "captured", "label": "bad"}])
    captured = sign_headers(SECRET, body, "msg_original")
    assert client.post("/feedback", content=body, headers=captured).status_code == 202
    before = _written(store)
    replayed = {**captured, "webhook-id": "msg_fresh"}
    response = client.post("/feedback", content=body, headers=replayed)
    assert response.status_code == 401 and "No matching signature" in response.json()["detail"]
    assert _written(store) == before


def test_a_replayed_id_is_refused_after_a_restart(tmp_path):
    config = _config(tmp_path)
    body = _jsonl([{"text": "once only", "label": "bad"}])
    headers = sign_headers(SECRET, body, "msg_restart")
    with _client(config) as first:
        assert first.post("/feedback", content=body, headers=headers).status_code == 202
    with _client(config) as second:  # a new process on the same store
        again = second.post("/feedback", content=body, headers=headers)
        assert again.status_code == 409, again.text


def _entry(digest: bytes) -> str:
    return "v1," + base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "v1,ünïcödé-digest"},  # non-ASCII digest
        {"webhook-signature": "v1,@@@@"},
        {"webhook-signature": "v1"},  # no comma
        {"webhook-signature": "v1,abc,def"},
        {"webhook-signature": ","},
        {"webhook-signature": "  "},
        {"webhook-signature": "v2," + "A" * 43 + "="},  # only an unknown version
        {"webhook-signature": _entry(b"\x00" * 31)},  # a digest of the wrong length
        {"webhook-timestamp": "99999999999999999999999"},  # absurd timestamps
        {"webhook-timestamp": "1e300"},
        {"webhook-timestamp": "nan"},
        {"webhook-timestamp": "-1"},
        {"webhook-timestamp": "0"},
        {"webhook-timestamp": " 17"},
        {"webhook-timestamp": ""},
        {"webhook-id": ""},  # missing parts
        {"webhook-id": "has space"},
        {"webhook-id": "x" * 257},
    ],
)
def test_malformed_signature_headers_get_401_never_500(webhook, change):
    client, store = webhook
    body = _jsonl([{"text": "x", "label": "good"}])
    before = _written(store)
    headers = {**sign_headers(SECRET, body, "msg_m"), **change}
    headers = {k: v for k, v in headers.items() if v != ""}
    response = client.post(
        "/feedback",
        content=body,
        headers={k: v.encode("utf-8") for k, v in headers.items()},  # raw bytes, as a client may
    )
    assert response.status_code == 401, response.text
    assert _written(store) == before


def test_non_ascii_id_and_non_utf8_body_get_401(webhook):
    client, _ = webhook
    body = _jsonl([{"text": "x", "label": "good"}])
    headers = {**sign_headers(SECRET, body, "msg_a"), "webhook-id": "idé"}
    raw = {k: v.encode("utf-8") for k, v in headers.items()}
    assert client.post("/feedback", content=body, headers=raw).status_code == 401
    binary = b'{"text": "\xff\xfe", "label": "good"}\n'
    headers = sign_headers(SECRET, b"placeholder", "msg_b")
    assert client.post("/feedback", content=binary, headers=headers).status_code == 401


def test_a_batch_stored_but_not_signalled_is_counted_by_the_debounce(tmp_path, monkeypatch):
    """A failure right after the write (500): the stored batch still counts towards the next."""
    from tasks.feedback import FeedbackStore

    original = FeedbackStore.remember_delivery
    failures = iter([OSError("disk full")])

    def remember_once_failing(self, delivery_id, batch_id):
        if failure := next(failures, None):
            raise failure
        return original(self, delivery_id, batch_id)

    monkeypatch.setattr(FeedbackStore, "remember_delivery", remember_once_failing)
    events = RecordingEvents()
    with _client(_config(tmp_path), events, raise_server_exceptions=False) as client:
        first = _post(client, _jsonl([{"text": "lost signal", "label": "bad"}]), msg_id="m1")
        assert first.status_code == 500
        assert len(list((tmp_path / "store" / "batches").glob("*.jsonl"))) == 1  # stored
        assert events.events == []
        second = _post(client, _jsonl([{"text": "next one", "label": "good"}]), msg_id="m2")
    assert second.status_code == 202, second.text
    assert second.json()["trigger"] == "signalled"  # 1 + 1 rows reach trigger_min_rows=2
    (event,) = events.events
    assert event["payload"]["pending_rows"] == 2
    assert event["resource"]["tunegate.feedback.ready"] == "true"


def test_a_failed_event_leaves_the_batch_counted_and_the_next_request_signals(tmp_path):
    events = RecordingEvents(fail=1)
    with _client(_config(tmp_path), events, raise_server_exceptions=False) as client:
        assert (
            _post(client, _jsonl([{"text": "a", "label": "bad"}]), msg_id="m1").status_code == 500
        )
        second = _post(client, _jsonl([{"text": "b", "label": "bad"}]), msg_id="m2")
    assert second.json()["trigger"] == "signalled"
    assert [e["payload"]["pending_rows"] for e in events.events] == [2]


def test_debounce_counts_batches_written_by_another_process_and_drops_included_ones(tmp_path):
    from tasks.feedback import FeedbackStore

    config = _config(tmp_path, "feedback.trigger_min_rows=3")
    store = FeedbackStore(config.feedback.store)
    events = RecordingEvents()
    with _client(config, events) as client:
        elsewhere = store.write_batch([{"text": "from a sidecar", "label": "bad"}])
        taken = _post(client, _jsonl([{"text": "a", "label": "bad"}]), msg_id="m1")
        assert taken.json()["trigger"] == "waiting"
        assert events.events[-1]["payload"]["pending_rows"] == 2
        store.mark_included([elsewhere.batch_id, taken.json()["batch_id"]], "run", "mlrun")
        third = _post(client, _jsonl([{"text": "b", "label": "bad"}]), msg_id="m2")
    assert third.json()["trigger"] == "waiting"
    assert events.events[-1]["payload"]["pending_rows"] == 1  # the included ones left the count


def test_webhook_reads_a_batch_dropped_in_incoming_and_nothing_else(webhook):
    client, store = webhook
    (store / "incoming").mkdir()
    (store / "incoming" / "drop.jsonl").write_bytes(_jsonl([{"text": "ref", "label": "bad"}]))
    response = _post(client, json.dumps({"ref": "incoming/drop.jsonl"}).encode())
    assert response.status_code == 202 and response.json()["rows"] == 1
    (store / "merged").mkdir(exist_ok=True)
    (store / "merged" / "run.jsonl").write_bytes(_jsonl([{"text": "raw", "label": "bad"}]))
    (store / "incoming" / "link.jsonl").symlink_to(store / "merged" / "run.jsonl")
    batch = f"batches/{response.json()['batch_id']}.jsonl"
    for number, ref in enumerate(
        [
            "../base.jsonl",
            "merged/run.jsonl",
            batch,
            "incoming/../merged/run.jsonl",
            "incoming/link.jsonl",
            "/etc/passwd",
            "file:///etc/passwd",
        ]  # fmt: skip
    ):
        refused = _post(client, json.dumps({"ref": ref}).encode(), msg_id=f"r{number}")
        assert refused.status_code == 422, (ref, refused.text)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "is not set"),
        ("k3y", "whsec_"),
        ("whsec_not*base64", "whsec_"),
        ("whsec_YWJj", "24-64"),
    ],
)
def test_webhook_refuses_to_start_without_a_standard_webhooks_secret(
    monkeypatch, capsys, value, needle
):
    from tunegate.cli import main

    if value is None:
        monkeypatch.delenv("TUNEGATE_WEBHOOK_SECRET", raising=False)
    else:
        monkeypatch.setenv("TUNEGATE_WEBHOOK_SECRET", value)
    assert main(["webhook", "--set", "data.path=x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "TUNEGATE_WEBHOOK_SECRET" in err and needle in err
    if value:
        assert value not in err  # the secret is never echoed
