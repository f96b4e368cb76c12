"""`tunegate serve-model` as a real uvicorn process on loopback, against a real MLflow store.

Two tiny versions are registered (a random 2-layer BERT, each with its classifier biased to
another label, so an answer shows which version gave it), v1 as champion. The test sends
traffic with PII in it, reads /metrics, promotes v2 while clients send requests
continuously (the server must answer with v2 within its reload interval plus the load, and no
request may fail), then closes the monitoring loop on the same server: drifted traffic and
corrections through the live endpoints, the monitor flow over the server's prediction log raises
the alarm and rolls the champion back, and the server answers with v1 again while clients keep
sending, none failing. Then a correction to /v1/feedback (a pending batch in the store) and bad
requests (4xx, the server keeps serving); at the end the server is stopped and the prediction
log, /metrics, the store and the monitor's reports are scanned for the raw PII it sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.servers import REPO, Services, free_port, wait_for
from tunegate.demo_data.intents import generate_intents
from tunegate.demo_data.loans import generate

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


def _training_split(out: Path) -> Path:
    """The split a retrain run logs (`data/splits/train.parquet`): the monitor's reference.
    Loans narratives without their first sentence (the name), as the PII stage leaves them."""
    import pandas as pd

    rows = [r for r in generate(n=240, seed=7) if r.get("risk_label") in LABELS]
    texts = [". ".join((r["narrative"] or "").split(". ")[1:]) or "No details." for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": texts, "label": [r["risk_label"] for r in rows]}).to_parquet(out)
    return out


def _client_loop(url: str, stop: threading.Event, seen: list) -> None:
    """Requests back to back until `stop`: (time, status, version or error) each."""
    with httpx.Client(base_url=url, timeout=30) as own:
        while not stop.is_set():
            try:
                r = own.post("/v1/predict", json={"inputs": TEXTS[:2]})
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                seen.append((time.time(), r.status_code, version))
            except httpx.HTTPError as exc:
                seen.append((time.time(), 0, type(exc).__name__))


@contextlib.contextmanager
def _traffic(url: str, clients: int = 2) -> Iterator[list[tuple[float, int, str | None]]]:
    """`clients` threads sending back to back while the block runs; yields what they saw."""
    seen: list[tuple[float, int, str | None]] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(url, stop, seen)) for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def _first_answer(seen: list, version: str, server: object, message: str) -> float:
    """When the clients first got an answer from `version` (waits up to 60 s)."""
    return wait_for(
        lambda: next((t for t, s, v in seen if s == 200 and v == version), None),
        60,
        message,
        server,
    )


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
        split = _training_split(root / f"split-{favourite}" / "train.parquet")
        client.log_artifact(tracker.run_id, str(split), "data/splits")
        versions.append(register_version(client, NAME, uri, tracker.run_id, {"gate": "passed"}, ""))
    client.set_registered_model_alias(NAME, "champion", versions[0])
    return {"root": root, "settings": settings, "client": client, "versions": versions}


def test_serve_swap_monitor_rollback_feedback_and_no_raw_pii(registry, prefect_backend):
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

        # hot swap under continuous traffic (a promotion: v1 becomes previous-champion)
        from tasks.registry import promote_version

        with _traffic(url) as seen:
            time.sleep(1.0)
            moved = time.time()
            assert promote_version(client, NAME, v2, v1).promoted
            swapped = _first_answer(
                seen, v2, server, "the server did not answer with the new version"
            )
            time.sleep(2.0)
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

        # the loop closed: drifted traffic and corrections -> the monitor's alarm -> rollback
        loop_started = time.time()
        drifted = [r["utterance"] for r in generate_intents(n=48, seed=5)]
        drifted = [
            t + (f", mail {PII['email']}" if i % 4 == 0 else "") for i, t in enumerate(drifted)
        ]
        drift_ids = []
        for at in range(0, len(drifted), 16):
            answer = http.post("/v1/predict", json={"inputs": drifted[at : at + 16]})
            assert answer.status_code == 200 and answer.json()["model"]["version"] == v2
            drift_ids += [p["id"] for p in answer.json()["predictions"]]
        for prediction_id in drift_ids[:12]:  # v2 said decline; the right answer was low_risk
            answer = http.post(
                "/v1/feedback", json={"prediction_id": prediction_id, "label": LABELS[0]}
            )
            assert answer.status_code == 202, answer.text
        wait_for(
            lambda: set(drift_ids) <= {r["prediction_id"] for r in _logged(log_url)},
            30,
            "the drifted predictions did not reach the prediction log",
            server,
        )
        with _traffic(url) as rolled_seen:
            summary = _run_monitor(root, settings, store, log_url, since=loop_started)
            rolled = time.time()
            assert summary.alarm and summary.event_id is not None, summary.reasons
            breached = {r.split()[1].rstrip(":") for r in summary.reasons if r.startswith("ALARM")}
            assert {"input_drift", "label_shift", "live_accuracy"} <= breached, summary.reasons
            assert summary.since.timestamp() == pytest.approx(loop_started)
            assert summary.numbers["predictions"] >= len(drifted)
            assert summary.numbers["live_accuracy"] == 0.0
            assert summary.rolled_back_to == v1
            returned = _first_answer(
                rolled_seen, v1, server, "the server did not return to the first version"
            )
            time.sleep(1.5)
        failures = [s for s in rolled_seen if s[1] != 200]
        after = [v for t, s, v in rolled_seen if t > returned + 0.5]
        print(
            f"[monitor loop] alarm {sorted(breached)}; rolled back after "
            f"{rolled - loop_started:.1f}s of loop; first v{v1} answer {returned - rolled:+.1f}s from "
            f"the monitor's return; {len(rolled_seen)} requests meanwhile, {len(failures)} failed",
            flush=True,
        )
        assert not failures, failures[:5]
        assert after and set(after) == {v1}
        assert returned - rolled < RELOAD_S + 30

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

    logged = _logged(log_url)
    assert {r["model_version"] for r in logged} == {v1, v2}
    assert len(logged) >= 9 + 3 + len(seen) * 2 + len(drifted) + len(rolled_seen) * 2
    reports = [p for p in root.rglob("*") if p.suffix in (".html", ".json") and p.is_file()]
    assert any(p.name == "drift.html" for p in reports)
    haystacks = {
        "prediction log": "\n".join(f.read_text() for f in log_url.rglob("*.jsonl")),
        "metrics": metrics,
        "feedback store": "\n".join(f.read_text() for f in store.rglob("*.jsonl")),
        "server log": server.log.read_text(errors="replace"),
        "monitor reports": "\n".join(p.read_text(errors="ignore") for p in reports),
        "monitor summary": summary.model_dump_json(),
    }
    for where, text in haystacks.items():
        for kind, value in PII.items():
            assert value not in text, f"raw {kind} in the {where}"
    assert "<EMAIL_1>" in haystacks["prediction log"]


def _logged(log_url: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(log_url.rglob("*.jsonl")) for line in f.open()]


def _run_monitor(root: Path, settings, store: Path, log_url: Path, since: float):  # noqa: ANN001, ANN202
    """One run of the monitor flow over the server's log and store, with rollback on, as the
    hourly deployment runs it. Its window starts at `since`: a finished earlier run's watermark
    (what the previous hourly run leaves) is written first, so the traffic before is not read."""
    from flows.monitor import MonitorConfig, monitor
    from tasks.feedback import FeedbackSettings
    from tasks.monitor import WATERMARK_METRIC, MonitorSettings
    from tasks.registry import open_tracking

    tracking = settings.model_copy(update={"experiment": f"{NAME}-monitor"})
    client = open_tracking(tracking)
    experiment = client.get_experiment_by_name(tracking.experiment).experiment_id
    earlier = client.create_run(experiment).info.run_id
    client.log_metric(earlier, WATERMARK_METRIC, since)
    client.set_terminated(earlier, "FINISHED")
    config = MonitorConfig(
        mlflow=settings,
        feedback=FeedbackSettings(store=str(store)),
        monitor=MonitorSettings(log_url=str(log_url), min_feedback=10, rollback_on_alarm=True),
        label_column="risk_label",
        work_dir=root / "monitor-work",
    )
    return monitor(config, return_state=True).result()


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
