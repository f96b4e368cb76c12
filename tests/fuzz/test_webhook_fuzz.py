"""API fuzzing of the running feedback webhook: schemathesis generates requests from the
webhook's own OpenAPI schema (`/openapi.json`) and sends them to `tunegate webhook` under uvicorn
on loopback (a temporary store, no Prefect API). Every generated request goes out as generated
(its `webhook-*` headers are arbitrary strings), signed with the Standard Webhooks secret (so
the body reaches the record checks and the store), and signed with one of the three headers
replaced by its generated value (so each header's parsing is reached past the others' checks).
The property: no 500, whatever the input. The budget is bounded (`FUZZ_EXAMPLES`, default 40
per operation, about 30-60 s with the server's start)."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from deployments.signature import sign_headers
from tasks.review.client import TOKEN_HEADER
from tests.helpers.servers import REPO, SECRET, Services, free_port

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
TOKEN = "fuzz-review-token"  # the Label Studio route's shared token
SENT: dict[str, list[int]] = {"as generated": [], "signed": [], "one header generated": []}


@schemathesis.serializer("application/x-ndjson")
def _jsonl(ctx, value) -> bytes:  # noqa: ANN001 - schemathesis' serializer signature
    """The records array as JSONL, the webhook's main body format; anything else as JSON."""
    if isinstance(value, list):
        return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in value).encode()
    return json.dumps(value, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def webhook_url(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("fuzz-webhook")
    data = root / "base.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": "good"}) + "\n" for i in range(3))
    )
    config = root / "tunegate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(data), "labels": ["good", "bad"]},
                "feedback": {"store": str(root / "store"), "trigger_min_rows": 5},
                "webhook": {"max_body_bytes": 20000},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        {"PYTHONPATH": str(REPO), "TUNEGATE_WEBHOOK_SECRET": SECRET, "TUNEGATE_REVIEW_TOKEN": TOKEN}
    )
    port = free_port()
    services = Services(root, env)
    try:
        proc = services.start(
            "webhook",
            [
                sys.executable,
                "-m",
                "tunegate",
                "webhook",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            port,
        )
        url = f"http://127.0.0.1:{port}"
        services.wait_healthy(proc, f"{url}/health", timeout=120)
        yield url
    finally:
        services.stop_all()
        counts = {k: len(v) for k, v in SENT.items()}
        statuses = {k: sorted(set(v)) for k, v in SENT.items()}
        print(f"\n[fuzz] webhook requests {counts}, statuses {statuses}", flush=True)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # a fixed example set: the same run finds the same failure
    database=None,
)


def _send_twice(case, base_url: str) -> None:  # noqa: ANN001 - a schemathesis Case
    kwargs = case.as_transport_kwargs(base_url=base_url)
    keep = ("method", "url", "headers", "params", "data", "json", "cookies")
    with requests.Session() as session:
        prepared = session.prepare_request(
            requests.Request(**{k: v for k, v in kwargs.items() if k in keep})
        )
        response = session.send(prepared, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        SENT["as generated"].append(response.status_code)
        body = prepared.body or b""
        body = body.encode() if isinstance(body, str) else body
        try:
            if case.path == "/label-studio":  # its own token: the payload parsing is reached
                signed = {TOKEN_HEADER: TOKEN}
            else:
                signed = sign_headers(SECRET, body, f"msg_{time.time_ns()}")
        except UnicodeDecodeError:  # a body Standard Webhooks cannot sign: covered above
            return
        generated = {h: prepared.headers.get(h) for h in signed}
        prepared.headers.update(signed)
        response = session.send(prepared, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        SENT["signed"].append(response.status_code)
        for header, value in generated.items():  # one generated header among valid ones
            if value is None:
                continue
            prepared.headers.update({**signed, header: value})
            response = session.send(prepared, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            SENT["one header generated"].append(response.status_code)


def test_no_input_makes_the_webhook_fail_with_a_500(webhook_url):
    schema = schemathesis.openapi.from_url(f"{webhook_url}/openapi.json")
    operations = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert ("POST", "/feedback") in operations
    started = time.time()
    for method, path in sorted(operations):

        @SETTINGS
        @given(case=schema[path][method].as_strategy())
        def fuzz(case):  # noqa: ANN001
            _send_twice(case, webhook_url)

        fuzz()
    print(f"\n[fuzz] {len(operations)} operations fuzzed in {time.time() - started:.1f} s")
    signed = SENT["signed"]
    assert 202 in signed and 422 in signed  # the signed half reached the records and the store
    assert set(SENT["one header generated"]) == {401}  # each header is checked
    assert set(SENT["as generated"]) <= {200, 401}
