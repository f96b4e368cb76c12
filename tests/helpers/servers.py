"""Real server processes on loopback and signed requests, for the service tier and benchmarks.

`tests/service/conftest.py` starts one set of servers per session with `Services`;
`tests/service/test_train_on_pool.py` starts its own Prefect server and worker with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]

SECRET = "whsec_c2VydmljZS10ZXN0LXNlY3JldC0zMi1ieXRlcy1sb25nIQ=="  # a Standard Webhooks secret
LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]
TRIGGER_MIN_ROWS = 40  # a burst of 4-row batches signals every tenth batch
TRIGGER_MAX_WAIT_S = 15  # leftovers below the row threshold are signalled after this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    port: int | None = None
    started: float = 0.0

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} log ({self.log}) ---\n" + "\n".join(lines[-n:])


class Services:
    """Starts processes and guarantees they are stopped."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[Proc] = []

    def start(self, name: str, args: list[str], port: int | None = None, cwd: Path = REPO) -> Proc:
        """Start `args` in its own process group; does not wait (see `wait_healthy`)."""
        log = self.root / f"{name}.log"
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=self.env,
            stdout=open(log, "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen, log, port)
        proc.started = time.time()
        self.procs.append(proc)
        return proc

    @staticmethod
    def wait_healthy(proc: Proc, check, timeout: float = 400) -> None:  # noqa: ANN001
        """Servers start slowly on a loaded 2-core machine: generous, but they must come up."""
        if isinstance(check, str):
            url = check
            check = lambda: _healthy(url)  # noqa: E731
        wait_for(check, timeout, f"{proc.name} did not become ready", proc)
        print(f"[service] {proc.name} ready after {time.time() - proc.started:.1f}s", flush=True)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        # Ten seconds for a graceful exit, then the group is killed: nothing a test asserts
        # depends on a clean shutdown, and each second here is paid at the end of every session.
        stopping = time.time()
        deadline = stopping + 10
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
            print(f"[service] {proc.name} stopped after {time.time() - stopping:.1f}s", flush=True)
            with_group = proc.popen.pid
            try:  # children of the group (flow-run subprocesses) go too
                os.killpg(with_group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            if proc.port is not None:
                wait_for(lambda p=proc.port: port_free(p), 20, f"port {proc.port} still taken")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(
    check,  # noqa: ANN001
    timeout: float,
    message: str,
    proc: Proc | None = None,
    every: float = 0.5,
    explain=None,  # noqa: ANN001 - a callable whose text is added to a timeout's message
):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{message}: exited {proc.popen.returncode}\n{proc.tail()}")
        time.sleep(every)
    extra = ("\n" + proc.tail() if proc else "") + ("\n" + explain() if explain else "")
    raise TimeoutError(message + extra)


@dataclass
class Stack:
    root: Path
    prefect_api: str
    prefect_ui: str
    mlflow_uri: str
    webhook_url: str
    store: Path
    config_path: Path
    registered_model: str
    services: Services

    def prefect(self, method: str, path: str, body: dict | None = None) -> object:
        """One Prefect API call, retried on 429 / 502 / 503 as Prefect's own client retries them
        (the server answers 503 when its SQLite database is busy, as under two test workers)."""
        for attempt in range(5):
            response = httpx.request(method, f"{self.prefect_api}{path}", json=body, timeout=30)
            if response.status_code not in {429, 502, 503} or attempt == 4:
                break
            time.sleep(2**attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    def deployment_id(self, name: str) -> str:
        return self.prefect("GET", f"/deployments/name/retrain/{name}")["id"]

    def flow_runs(self, deployment: str) -> list[dict]:
        body = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}, "limit": 200}
        return self.prefect("POST", "/flow_runs/filter", body)

    def automation_events(self) -> str:
        """What Prefect's automations did (triggered, action executed or failed and why): the
        story a timeout message needs when a trigger started no run."""
        body = {"filter": {"event": {"prefix": ["prefect.automation"]}}, "limit": 50}
        try:
            events = self.prefect("POST", "/events/filter", body)["events"]
        except httpx.HTTPError as exc:
            return f"automation events unavailable: {exc!r}"
        lines = [
            f"{e['occurred']} {e['event']} {json.dumps(e.get('payload') or {})[:300]}"
            for e in sorted(events, key=lambda e: e["occurred"])
        ]
        return "--- Prefect automation events ---\n" + "\n".join(lines or ["none"])

    def batch_files(self) -> list[Path]:
        return sorted((self.store / "batches").glob("*.jsonl"))


def feedback_rows(n: int, seed: str) -> list[dict]:
    """Re-annotated records in the data's columns; unique text per seed."""
    texts = [
        "Applicant reports stable salary income and low existing debt",
        "Several missed payments on the credit file in the last year",
        "Thin file with one short trade line and moderate utilisation",
        "Bankruptcy discharged recently and collections still open",
    ]
    return [
        {
            "application_id": f"fb-{seed}-{i}",
            "narrative": f"{texts[i % 4]} (review {seed}-{i}).",
            "risk_label": LABELS[i % 4],
        }
        for i in range(n)
    ]


def signed_post(
    url: str,
    body: bytes,
    delivery: str | None = None,
    secret: str = SECRET,
    timestamp: int | None = None,
    content_type: str = "application/x-ndjson",
) -> httpx.Response:
    """POST `body` signed as a Standard Webhooks sender does (webhook-id, -timestamp, -signature)."""
    from deployments.signature import sign_headers

    headers = {
        "Content-Type": content_type,
        **sign_headers(secret, body, delivery or f"msg_{uuid.uuid4().hex}", timestamp),
    }
    return httpx.post(url, content=body, headers=headers, timeout=30)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# --- Label Studio (the review queue) -------------------------------------------------------

LS_USER = "reviewer@tunegate.invalid"
LS_PASSWORD = "service-test-password-1"
LS_TOKEN = "tunegate-service-test-token-0123456789"  # a legacy API token (LABEL_STUDIO_USER_TOKEN)
REVIEW_TOKEN = "review-webhook-token-for-the-service-tier"  # X-Tunegate-Review-Token
LS_VENV = Path(os.environ.get("TUNEGATE_LABEL_STUDIO") or REPO / ".venv-labelstudio")


@dataclass
class LabelStudioServer:
    url: str
    token: str
    data_dir: Path
    proc: Proc


def start_label_studio(services: Services, root: Path) -> LabelStudioServer:
    """`tunegate review-server` on a free loopback port with a fresh SQLite data dir; waits
    for its /health. Needs `make labelstudio` (the fixture says so when it is missing)."""
    import sys

    port = free_port()
    data_dir = root / "label-studio"
    env = {
        **services.env,
        "PYTHONPATH": str(REPO),
        "LABEL_STUDIO_USERNAME": LS_USER,
        "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
        "LABEL_STUDIO_USER_TOKEN": LS_TOKEN,
        "TUNEGATE_LABEL_STUDIO": str(LS_VENV),
    }
    own = Services(root, env)
    proc = own.start(
        "label-studio",
        [
            sys.executable,
            "-m",
            "tunegate",
            "review-server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        port,
    )
    services.procs.append(proc)  # stopped with the others
    url = f"http://127.0.0.1:{port}"
    services.wait_healthy(proc, f"{url}/health", timeout=400)
    return LabelStudioServer(url=url, token=LS_TOKEN, data_dir=data_dir, proc=proc)
