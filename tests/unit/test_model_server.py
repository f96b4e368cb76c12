"""The model server in-process (FastAPI's TestClient) with an in-memory model source: the
scoring protocol, refusals, scrubbing, hot swap, feedback, the prediction log and /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployments.model_server.source import Served
from tasks.feedback import FeedbackStore
from tasks.predictions import read_records

pytestmark = pytest.mark.unit

LABELS = ["good", "bad", 'odd "label"\nwith newline']
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"


class FakeSource:
    """The registry's two methods over in-memory models: version -> a labelling rule."""

    def __init__(self, version: str | None = "1") -> None:
        self.version = version
        self.broken: set[str] = set()
        self.seen: list[str] = []
        self.fail_next_batch = False
        self.calls: list[int] = []

    def current_version(self) -> str | None:
        return self.version

    def load(self, version: str) -> Served:
        if version in self.broken:
            raise RuntimeError("weights do not load")

        def answer(texts: list[str]) -> list[dict]:
            self.calls.append(len(texts))
            if self.fail_next_batch:
                self.fail_next_batch = False
                raise RuntimeError("CUDA out of memory")
            self.seen.extend(texts)
            label = LABELS[(int(version) - 1) % len(LABELS)]
            return [{"label": label, "score": 0.9 if "sure" in t else 0.2} for t in texts]

        return Served("loans", version, "classification", list(LABELS), answer, time.time())


def _config(tmp_path: Path, *extra: str):
    from deployments.model_server import load_serve_config

    return load_serve_config(
        None,
        [
            f"serving.log_url={tmp_path / 'log'}",
            f"feedback.store={tmp_path / 'store'}",
            "serving.reload_interval_s=0.1",
            "serving.max_inputs=5",
            "serving.max_wait_ms=2",
            "serving.log_flush_s=0.2",
            "mlflow.registered_model=loans",
            *extra,
        ],
    )


@pytest.fixture
def server(tmp_path):
    from fastapi.testclient import TestClient

    from deployments.model_server import create_app
    from deployments.webhook import PrefectEvents

    def start(*extra: str, source: FakeSource | None = None):
        source = source or FakeSource()
        app = create_app(_config(tmp_path, *extra), source, PrefectEvents(None))
        return TestClient(app), source

    return start


def _wait(check, timeout: float = 10) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_scoring_protocol_and_v1_predict_answer_with_version_and_ids(server):
    client, _ = server()
    with client:
        assert client.get("/ping").status_code == 200
        health = client.get("/health").json()["model"]
        assert health["version"] == "1" and health["quantize"] == "auto"
        assert health["quantized_layers"] == 0 and health["serving_int8"] is False
        v1 = client.post("/v1/predict", json={"inputs": ["sure thing", "maybe"]}).json()
        assert v1["model"] == {"name": "loans", "version": "1"}
        assert [p["label"] for p in v1["predictions"]] == ["good", "good"]
        assert len({p["id"] for p in v1["predictions"]}) == 2
        for body in (
            {"inputs": ["sure", "x"]},
            {"instances": [{"text": "sure"}, {"text": "x"}]},
            {"dataframe_split": {"columns": ["text"], "data": [["sure"], ["x"]]}},
            {"dataframe_records": [{"text": "sure"}, {"text": "x"}]},
            {"inputs": {"text": ["sure", "x"]}},
        ):
            answer = client.post("/invocations", json=body)
            assert answer.status_code == 200, (body, answer.text)
            assert answer.json() == {
                "predictions": [{"label": "good", "score": 0.9}, {"label": "good", "score": 0.2}]
            }


def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server):
    client, _ = server()
    secret = f"call {EMAIL}"
    cases = [
        ("/v1/predict", {"inputs": []}, 422, "inputs"),
        ("/v1/predict", {"inputs": ["ok", 7, {"mail": secret}]}, 422, "inputs.1"),
        ("/v1/predict", {"texts": ["a"]}, 422, "inputs"),
        ("/v1/predict", {"inputs": ["a"] * 6}, 413, "serving.max_inputs"),
        ("/v1/predict", {"inputs": ["fine", "   "]}, 422, "inputs[1]: empty"),
        ("/v1/predict", {"inputs": ["x" * 20_001]}, 422, "serving.max_input_chars"),
        ("/invocations", {"inputs": [secret, 3]}, 400, "inputs[1]"),
        (
            "/invocations",
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
            400,
            "text",
        ),
        ("/invocations", {"inputs": ["a"], "instances": ["b"]}, 400, "exactly one"),
        ("/invocations", [secret], 400, "JSON object"),
        ("/v1/feedback", {"prediction_id": "nope", "label": "bad"}, 404, "unknown"),
        ("/v1/feedback", {"prediction_id": "nope"}, 422, "flag"),
        ("/v1/feedback", {"prediction_id": "x", "flag": "right"}, 422, "flag"),
    ]
    with client:
        for path, body, status, words in cases:
            answer = client.post(path, json=body)
            assert answer.status_code == status, (path, body, answer.text)
            assert words in answer.json()["message"], answer.text
            assert EMAIL not in answer.text  # refusals never repeat the input
        answer = client.post(
            "/v1/predict", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400 and "JSON" in answer.json()["message"]
        answer = client.post(
            "/invocations", content=b"text\nhi", headers={"content-type": "text/csv"}
        )
        assert answer.status_code == 415
        assert client.post("/v1/predict", json={"inputs": ["still here"]}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'tunegate_request_errors_total{endpoint="/v1/predict",status="422"} 5.0' in metrics
    assert 'tunegate_requests_total{endpoint="/v1/predict",status="200"} 1.0' in metrics
    assert 'status="500"' not in metrics


def test_an_unexpected_error_is_a_503_naming_its_type_and_counted(server):
    client, _ = server()
    with client:
        app = client.app
        app.state.predlog.find = lambda *a, **k: (_ for _ in ()).throw(KeyError("boom"))
        answer = client.post("/v1/feedback", json={"prediction_id": "p", "label": "good"})
        assert answer.status_code == 503 and "KeyError" in answer.json()["message"]
        assert client.post("/v1/predict", json={"inputs": ["still here"]}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'tunegate_request_errors_total{endpoint="/v1/feedback",status="503"} 1.0' in metrics
    assert 'tunegate_requests_total{endpoint="/v1/predict",status="200"} 1.0' in metrics


def test_inputs_are_scrubbed_before_the_model_and_the_log(server, tmp_path):
    client, source = server()
    raw = f"write to {EMAIL}, card {CARD}"
    with client:
        assert client.post("/v1/predict", json={"inputs": [raw]}).status_code == 200
        metrics = client.get("/metrics").text
    assert EMAIL not in source.seen[0] and "4111" not in source.seen[0]
    assert "<EMAIL_1>" in source.seen[0] or "EMAIL" in source.seen[0]
    (record,) = list(read_records(str(tmp_path / "log")))  # flushed at shutdown
    assert record.text == source.seen[0] and record.sampled
    assert EMAIL not in metrics and "4111" not in metrics
    assert 'tunegate_input_pii_entities_total{entity="EMAIL_ADDRESS"} 1.0' in metrics

    client, source = server("serving.scrub_inputs=false")
    with client:
        client.post("/v1/predict", json={"inputs": [raw]})
    assert source.seen == [raw]  # the model sees the raw text when asked to ...
    assert all(EMAIL not in r.text for r in read_records(str(tmp_path / "log")))  # never the log


def test_hot_swap_follows_the_alias_and_a_broken_version_keeps_the_old_one(server):
    client, source = server()
    with client:
        assert client.post("/v1/predict", json={"inputs": ["a"]}).json()["model"]["version"] == "1"
        source.version = "2"
        _wait(
            lambda: (
                client.post("/v1/predict", json={"inputs": ["a"]}).json()["model"]["version"] == "2"
            )
        )
        source.broken.add("3")
        source.version = "3"
        _wait(lambda: client.get("/health").json()["last_reload_error"])
        answer = client.post("/v1/predict", json={"inputs": ["a"]}).json()
        assert answer["model"]["version"] == "2" and answer["predictions"][0]["label"] == "bad"
        assert "weights do not load" in client.get("/health").json()["last_reload_error"]
        metrics = client.get("/metrics").text
    assert 'tunegate_model_info{alias="champion",model="loans",version="2"} 1.0' in metrics
    assert 'version="1"' not in metrics
    assert 'tunegate_model_reloads_total{outcome="load_error"}' in metrics


def test_no_model_yet_and_a_failing_batch_are_503_with_a_reason(server, tmp_path):
    client, source = server(source=FakeSource(version=None))
    with client:
        assert client.get("/ping").status_code == 503
        answer = client.post("/v1/predict", json={"inputs": ["a"]})
        assert answer.status_code == 503 and "models:/loans@champion" in answer.json()["message"]
        source.version = "1"
        _wait(lambda: client.get("/ping").status_code == 200)
        source.fail_next_batch = True
        failed = client.post("/invocations", json={"inputs": ["a"]})
        assert failed.status_code == 503 and "RuntimeError" in failed.json()["message"]
        assert client.post("/invocations", json={"inputs": ["a"]}).status_code == 200
    statuses = sorted(r.status for r in read_records(str(tmp_path / "log")))
    assert statuses == [200, 503]  # the monitor sees the failed request in its error rate


def test_feedback_correction_becomes_a_pending_batch_and_a_flag_does_not(server, tmp_path):
    client, _ = server(
        "serving.log_sample_rate=0", "data.text_column=narrative", "data.label_column=risk"
    )
    with client:
        ids = [
            p["id"]
            for p in client.post(
                "/v1/predict", json={"inputs": [f"mail {EMAIL} now", "second"]}
            ).json()["predictions"]
        ]
        wrong = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "nope"})
        assert wrong.status_code == 422 and "good, bad" in wrong.json()["message"]
        answer = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "bad"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["trigger"] == "pending"  # no Prefect API configured
        again = client.post("/v1/feedback", json={"prediction_id": ids[0], "label": "bad"})
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        flag = client.post("/v1/feedback", json={"prediction_id": ids[1], "flag": "wrong"})
        assert flag.status_code == 202 and flag.json()["kind"] == "flag"
    store = FeedbackStore(str(tmp_path / "store"))
    (batch,) = store.pending_ids()
    (row,) = store.read_batch(batch)
    assert row["risk"] == "bad" and row["prediction_id"] == ids[0] and row["predicted"] == "good"
    assert EMAIL not in row["narrative"] and row["narrative"].startswith("mail ")
    flags = FeedbackStore(str(tmp_path / "store" / "flags"))
    (flagged,) = [r for b in flags.batch_ids() for r in flags.read_batch(b)]
    assert (
        flagged["flag"] == "wrong" and flagged["prediction_id"] == ids[1] and "risk" not in flagged
    )
    assert list(read_records(str(tmp_path / "log"))) == []  # nothing sampled, yet findable


def test_feedback_finds_a_logged_prediction_after_a_restart_but_not_after_the_window(tmp_path):
    from deployments.model_server.predlog import PredictionLog
    from tasks.predictions import PredictionRecord

    def log(**kw) -> PredictionLog:
        return PredictionLog(str(tmp_path / "log"), 1.0, False, 1.0, 10, 3600, 100, **kw)

    first = log()
    record = PredictionRecord(
        prediction_id="p1",
        time=datetime.now(UTC),
        model_name="m",
        model_version="1",
        latency_ms=3.0,
        text="t",
        label="good",
    )
    first.add([record])
    first.close()
    again = log()  # a new process: nothing in memory, the log is searched
    assert again.find("p1").label == "good"
    assert again.find("p1", now=datetime.now(UTC) + timedelta(hours=2)) is None
    bounded = PredictionLog(str(tmp_path / "other"), 0.0, False, 1.0, 10, 3600, 2)
    for i in range(3):
        bounded.add([record.model_copy(update={"prediction_id": f"q{i}"})])
    assert bounded.find("q0") is None and bounded.find("q2") is not None


def test_an_unknown_id_is_looked_up_in_the_log_once_and_a_later_prediction_is_found(
    tmp_path, monkeypatch
):
    """A burst of unknown ids must not scan the log each time (each file is read once), and
    the index must not hide a prediction another replica writes after the miss."""
    from deployments.model_server import predlog
    from tasks.predictions import PredictionRecord, write_records

    reads: list[str] = []
    real_read = predlog.read_log_file

    def counting(url: str, path: str):  # noqa: ANN202
        reads.append(path)
        return real_read(url, path)

    monkeypatch.setattr(predlog, "read_log_file", counting)
    url = str(tmp_path / "log")

    def record(prediction_id: str) -> PredictionRecord:
        return PredictionRecord(
            prediction_id=prediction_id,
            time=datetime.now(UTC),
            model_name="m",
            model_version="1",
            latency_ms=1.0,
            text="t",
            label="good",
        )

    for i in range(3):  # three flushes of another replica
        write_records(url, [record(f"other-{i}-{j}") for j in range(4)])
    log = predlog.PredictionLog(url, 1.0, False, 1.0, 10, 3600, 1000)
    assert log.find("unknown-0") is None
    assert len(reads) == 3  # every file once
    for i in range(50):
        assert log.find(f"unknown-{i}") is None
    assert len(reads) == 3  # no file read again
    assert log.find("other-1-2").label == "good"  # a hit reads its one file
    assert len(reads) == 4
    write_records(url, [record("late")])  # written after the misses
    assert log.find("late") is not None
    assert len(reads) == 6  # the new file, then the hit
    bounded = predlog.PredictionLog(url, 1.0, False, 1.0, 10, 3600, 5)
    assert bounded.find("unknown") is None and len(bounded._index) == 5


def test_concurrent_requests_share_model_calls_up_to_max_batch_size():
    from deployments.model_server.batching import Batcher
    from deployments.model_server.source import ModelHolder

    sizes: list[int] = []

    def slow(texts: list[str]) -> list[dict]:
        sizes.append(len(texts))
        time.sleep(0.05)
        return [{"label": t, "score": 1.0} for t in texts]

    holder = ModelHolder()
    holder.swap(Served("m", "1", "classification", [], slow))
    batcher = Batcher(holder, max_batch_size=8, max_wait_ms=20)
    batcher.start()

    async def burst() -> list:
        return await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(32)))

    try:
        results = asyncio.run(burst())
    finally:
        batcher.stop()
    assert [answers[0]["label"] for _, answers in results] == [f"t{i}" for i in range(32)]
    assert sum(sizes) == 32 and max(sizes) <= 8 and len(sizes) <= 8, sizes


def test_a_swap_lands_between_batches_and_no_request_fails():
    from deployments.model_server.batching import Batcher
    from deployments.model_server.source import ModelHolder

    def model(version: str) -> Served:
        def answer(texts: list[str]) -> list[dict]:
            time.sleep(0.01)
            return [{"label": version, "score": 1.0} for _ in texts]

        return Served("m", version, "classification", [], answer)

    holder = ModelHolder()
    holder.swap(model("1"))
    batcher = Batcher(holder, max_batch_size=4, max_wait_ms=1)
    batcher.start()
    swapper = threading.Timer(0.15, lambda: holder.swap(model("2")))

    async def traffic() -> list:
        out = []
        for _ in range(40):
            out += await asyncio.gather(*(batcher.submit(["x", "y"]) for _ in range(3)))
        return out

    swapper.start()
    try:
        results = asyncio.run(traffic())
    finally:
        batcher.stop()
    versions = [served.version for served, _ in results]
    assert versions[0] == "1" and versions[-1] == "2"
    # every answer of a request came from the model that the request's batch started with
    assert all({a["label"] for a in answers} == {served.version} for served, answers in results)


def test_serve_config_needs_no_data_file_and_refuses_unknown_keys(tmp_path):
    from deployments.model_server import load_serve_config
    from flows.config import ConfigError
    from tunegate.cli import main

    config = load_serve_config(None, [f"work_dir={tmp_path}", "data.text_column=narrative"])
    assert config.log_url == str((tmp_path / "predictions").resolve())
    assert config.model_uri == "models:/tunegate-classifier@champion" or config.model_uri.endswith(
        "@champion"
    )
    with pytest.raises(ConfigError, match="servng: unknown key"):
        load_serve_config(None, ["servng.port=1"])
    with pytest.raises(ConfigError, match="serving.max_batch_size"):
        load_serve_config(None, ["serving.max_batch_size=0"])
    assert main(["serve-model", "--set", "serving.log_sample_rate=2"]) == 2


def test_shipped_compose_service_and_kubernetes_template_hold_valid_serve_configs(tmp_path):
    import yaml

    from deployments.model_server import load_serve_config
    from tunegate.cli import build_parser

    repo = Path(__file__).resolve().parents[2]
    docs = list(yaml.safe_load_all((repo / "docker/k8s/model-server.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    serve_yaml = tmp_path / "serve.yaml"
    serve_yaml.write_text(kinds["ConfigMap"]["data"]["serve.yaml"])
    config = load_serve_config(serve_yaml)
    assert config.serving.log_unsampled and "://" in config.log_url  # replicas share the log
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert port == config.serving.port
    assert container["args"][:2] == ["tunegate", "serve-model"]
    assert (
        kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (kinds["Deployment"]["metadata"]["name"])
    )

    service = yaml.safe_load((repo / "docker/compose.yaml").read_text())["services"]["model-server"]
    args = build_parser().parse_args(service["command"][1:])
    assert args.func.__name__ == "cmd_serve_model"
    config = load_serve_config(None, [*args.set, f"serving.port={args.port}"])
    assert config.log_url.startswith("s3://") and config.feedback.store.startswith("s3://")


def test_quantize_auto_serves_int8_only_where_the_versions_parity_measured_it_enough():
    import types

    import torch

    from deployments.model_server.source import RegistrySource
    from tasks.models import TextClassifier

    classifier = TextClassifier.__new__(TextClassifier)
    classifier.model = torch.nn.Linear(2, 2)  # on CPU
    tags = {"1": {"serve_int8": "true"}, "2": {"serve_int8": "false"}, "3": {}}

    class Client:
        def get_model_version(self, name: str, version: str) -> object:
            return types.SimpleNamespace(tags=tags[version])

    def mode(setting: str, version: str, predictor: object = classifier) -> str:
        source = RegistrySource("sqlite:///unused.db", "loans", "champion", quantize=setting)
        return source._quantize_mode(Client(), version, predictor)

    assert mode("auto", "1") == "int8"
    assert mode("auto", "2") == "none"  # measured below evaluate.parity_min_agreement
    assert mode("auto", "3") == "none"  # registered before int8 parity, or not measured
    assert mode("auto", "1", predictor=object()) == "none"  # a generation model
    assert mode("none", "1") == "none" and mode("int8", "2") == "int8"  # explicit wins
