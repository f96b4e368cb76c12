"""The feedback webhook's answers, in-process (its Prefect API on a closed port), and the
`tunegate webhook` command's refusal to start without a secret."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tasks.feedback import sign

pytestmark = pytest.mark.unit


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


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
    from tunegate.cli import main

    monkeypatch.delenv("TUNEGATE_WEBHOOK_SECRET", raising=False)
    assert main(["webhook", "--set", "data.path=x.jsonl"]) == 2
    assert "TUNEGATE_WEBHOOK_SECRET" in capsys.readouterr().err
