"""`tunegate serve-model` as a real uvicorn process on loopback, against a real MLflow store.

Two tiny versions are registered (a random 2-layer BERT, each with its classifier biased to
another label, so an answer shows which version gave it), v1 as champion. The test sends
traffic with PII in it, reads /metrics, moves the alias to v2 while a client sends requests
continuously (the server must answer with v2 within its reload interval plus the load, and no
request may fail), sends a correction to /v1/feedback (a pending batch in the store) and bad
requests (4xx, the server keeps serving), then stops the server and scans the prediction log,
/metrics and the store for the raw PII it sent.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.servers import REPO, Services, free_port, wait_for

pytestmark = pytest.mark.service

NAME = "svc-serve"
LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]
RELOAD_S = 1.0
PII = {
    "email": "maria.gonzalez@example.org",
    "phone": "+1 415 555 0134",
    "card": "4111 1111 1111 1111",
    "name": "Maria Gonzalez",
}
TEXTS = [
    f"Applicant {PII['name']} asks for a loan, email {PII['email']}",
    f"call back on {PII['phone']} about the stable income",
    f"paid the deposit with card {PII['card']} and has no debt",
]


def _version_folder(base: Path, out: Path, favourite: int) -> Path:
    """A `full`-method tunegate folder whose classifier leans to LABELS[favourite]."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from tasks.models import ModelCard, write_labels

    torch.manual_seed(favourite)
    model = BertForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[favourite] = 8.0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    ModelCard(base_model=str(base), method="full", max_length=48).write(out)
    write_labels(out, LABELS)
    return out


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_model_dir) -> dict:
    from tasks.registry import MLflowSettings, log_model, open_tracking, register_version, start_run

    root = tmp_path_factory.mktemp("model-server")
    settings = MLflowSettings(
        tracking_uri=f"sqlite:///{root}/mlflow.db",
        artifact_location=str(root / "artifacts"),
        experiment="serve",
        registered_model=NAME,
    )
    client = open_tracking(settings)
    versions = []
    for favourite in (0, 3):
        folder = _version_folder(tiny_model_dir, root / f"v{favourite}", favourite)
        tracker = start_run(client, settings, {})
        uri = log_model(tracker, folder, settings.tracking_uri)
        versions.append(register_version(client, NAME, uri, tracker.run_id, {"gate": "passed"}, ""))
    client.set_registered_model_alias(NAME, "champion", versions[0])
    return {"root": root, "settings": settings, "client": client, "versions": versions}


def test_serve_swap_feedback_and_no_raw_pii(registry):
    root, settings, client = registry["root"], registry["settings"], registry["client"]
    v1, v2 = registry["versions"]
    port = free_port()
    store = root / "feedback"
    log_url = root / "predictions"
    config = {
        "data": {"text_column": "narrative", "label_column": "risk_label"},
        "model": {"device": "cpu"},
        "mlflow": settings.model_dump(),
        "feedback": {"store": str(store)},
        "serving": {
            "port": port,
            "reload_interval_s": RELOAD_S,
            "log_url": str(log_url),
            "log_flush_s": 0.5,
            "max_wait_ms": 5,
            "max_inputs": 16,
        },
    }
    config_path = root / "serve.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": ""}
    services = Services(root, env)
    url = f"http://127.0.0.1:{port}"
    try:
        server = services.start(
            "model-server",
            [sys.executable, "-m", "tunegate", "serve-model", "--config", str(config_path)],
            port,
        )
        services.wait_healthy(server, f"{url}/health", timeout=300)
        http = httpx.Client(base_url=url, timeout=30)

        # traffic, both protocols
        ids = []
        for _ in range(3):
            answer = http.post("/v1/predict", json={"inputs": TEXTS})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model"] == {"name": NAME, "version": v1}
            assert {p["label"] for p in body["predictions"]} == {LABELS[0]}
            ids += [p["id"] for p in body["predictions"]]
        scored = http.post(
            "/invocations",
            json={"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
        )
        assert scored.status_code == 200 and len(scored.json()["predictions"]) == 3
        metrics = http.get("/metrics").text
        assert 'tunegate_requests_total{endpoint="/v1/predict",status="200"} 3.0' in metrics
        assert f'tunegate_predictions_total{{label="{LABELS[0]}"}} 12.0' in metrics
        assert (
            f'tunegate_model_info{{alias="champion",model="{NAME}",version="{v1}"}} 1.0' in metrics
        )
        assert 'tunegate_request_latency_seconds_count{endpoint="/v1/predict"} 3.0' in metrics

        # hot swap under continuous traffic
        seen: list[tuple[float, int, str | None]] = []
        stop = threading.Event()

        def client_loop() -> None:
            with httpx.Client(base_url=url, timeout=30) as own:
                while not stop.is_set():
                    try:
                        r = own.post("/v1/predict", json={"inputs": TEXTS[:2]})
                        version = r.json()["model"]["version"] if r.status_code == 200 else None
                        seen.append((time.time(), r.status_code, version))
                    except httpx.HTTPError as exc:
                        seen.append((time.time(), 0, type(exc).__name__))

        clients = [threading.Thread(target=client_loop) for _ in range(2)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        moved = time.time()
        client.set_registered_model_alias(NAME, "champion", v2)
        swapped = wait_for(
            lambda: next((t for t, s, v in seen if s == 200 and v == v2), None),
            60,
            "the server did not answer with the new version",
            server,
        )
        time.sleep(2.0)
        stop.set()
        for thread in clients:
            thread.join(30)
        failures = [s for s in seen if s[1] != 200]
        after = [v for t, s, v in seen if t > swapped + 0.5]
        print(
            f"[hot swap] {len(seen)} requests, {len(failures)} failed, new version after "
            f"{swapped - moved:.1f}s (reload interval {RELOAD_S}s)",
            flush=True,
        )
        assert not failures, failures[:5]
        assert after and set(after) == {v2}
        # polled within the interval; the rest is downloading and loading the new version
        assert swapped - moved < RELOAD_S + 30

        # a correction becomes a pending feedback batch; a wrong label is refused
        from tasks.feedback import FeedbackStore

        refused = http.post("/v1/feedback", json={"prediction_id": ids[0], "label": "maybe"})
        assert refused.status_code == 422
        answer = http.post("/v1/feedback", json={"prediction_id": ids[0], "label": "decline"})
        assert answer.status_code == 202, answer.text
        pending = FeedbackStore(str(store)).pending_ids()
        assert answer.json()["batch_id"] in pending
        (row,) = FeedbackStore(str(store)).read_batch(answer.json()["batch_id"])
        assert row["risk_label"] == "decline" and row["prediction_id"] == ids[0]

        # bad requests: 4xx with a message, and the server keeps serving
        for path, body in (
            ("/v1/predict", {"inputs": []}),
            ("/v1/predict", {"inputs": [1, 2]}),
            ("/v1/predict", {"inputs": ["x"] * 17}),
            ("/v1/feedback", {"prediction_id": "not-an-id", "label": "decline"}),
            ("/invocations", {"columns": ["text"]}),
        ):
            answer = http.post(path, json=body)
            assert 400 <= answer.status_code < 500 and answer.json()["message"], (path, answer.text)
        assert http.post("/v1/predict", json={"inputs": ["still serving"]}).status_code == 200
        metrics = http.get("/metrics").text
        assert 'status="500"' not in metrics
        http.close()
    finally:
        services.stop_all()  # SIGTERM: the server flushes its prediction log on the way out

    logged = [json.loads(line) for f in sorted(log_url.rglob("*.jsonl")) for line in f.open()]
    assert {r["model_version"] for r in logged} == {v1, v2}
    assert len(logged) >= 9 + 3 + len(seen) * 2
    haystacks = {
        "prediction log": "\n".join(f.read_text() for f in log_url.rglob("*.jsonl")),
        "metrics": metrics,
        "feedback store": "\n".join(f.read_text() for f in store.rglob("*.jsonl")),
        "server log": server.log.read_text(errors="replace"),
    }
    for where, text in haystacks.items():
        for kind, value in PII.items():
            assert value not in text, f"raw {kind} in the {where}"
    assert "<EMAIL_1>" in haystacks["prediction log"]


def test_the_champion_moved_event_reloads_before_the_poll_interval(prefect_backend, tmp_path):
    """With a Prefect API, `tunegate.champion.moved` makes the server check the alias at once
    (the poll interval here is 10 minutes)."""
    from fastapi.testclient import TestClient
    from prefect.events import emit_event
    from prefect.settings import PREFECT_API_URL

    from deployments.model_server import CHAMPION_EVENT, create_app, load_serve_config
    from deployments.model_server.source import Served
    from deployments.webhook import PrefectEvents

    class Source:
        version = "1"

        def current_version(self) -> str:
            return self.version

        def load(self, version: str) -> Served:
            answer = lambda texts: [{"label": "x", "score": 1.0} for _ in texts]  # noqa: E731
            return Served("loans", version, "classification", ["x"], answer)

    source = Source()
    config = load_serve_config(
        None,
        [
            f"serving.log_url={tmp_path / 'log'}",
            f"feedback.store={tmp_path / 'store'}",
            "serving.reload_interval_s=600",
        ],
    )
    app = create_app(config, source, PrefectEvents(PREFECT_API_URL.value()))

    def version(client: TestClient) -> str:
        return client.post("/v1/predict", json={"inputs": ["a"]}).json()["model"]["version"]

    with TestClient(app) as client:
        assert version(client) == "1"
        source.version = "2"
        deadline = time.time() + 60
        while version(client) != "2":
            assert time.time() < deadline, "the event did not trigger a reload"
            emit_event(
                event=CHAMPION_EVENT, resource={"prefect.resource.id": "tunegate.model.loans"}
            )
            time.sleep(1.0)
