"""Load on the feedback webhook: 500 signed requests from 8 concurrent clients on loopback.

Starts `tunegate webhook` (uvicorn, one process) on a temporary store with no Prefect API
configured (every answer says `trigger: pending`, so the figure is the receiver's own work:
Standard Webhooks signature check, record checks, fsync'd atomic write, message-id bookkeeping). The reference is
the same load against a bare uvicorn endpoint in the same style that only reads the body and
answers 202. Afterwards every accepted batch must be on disk exactly once, and 50 replays of
accepted bodies under new message ids must not add a file.

    python benchmarks/webhook_load.py [--requests 500] [--clients 8]

Last line: `webhook_rps: <requests per second>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from standardwebhooks.webhooks import Webhook  # noqa: E402

from tasks.feedback import canonical_jsonl  # noqa: E402
from tests.helpers.servers import free_port  # noqa: E402

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1vZi0zMi1ieXRlcy1sb25n"  # Standard Webhooks secret
BARE_APP = textwrap.dedent(
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/feedback")
    async def feedback(request: Request):
        body = await request.body()
        return JSONResponse({"rows": body.count(b"\\n")}, status_code=202)
    """
)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not healthy after {timeout}s")


def bodies(n: int, tag: str = "load") -> list[bytes]:
    labels = ["low_risk", "medium_risk", "high_risk", "decline"]
    out = []
    for i in range(n):
        rows = [
            {
                "application_id": f"{tag}-{i}-{j}",
                "narrative": f"Benchmark feedback {tag} {i}-{j}: stable income, some card debt.",
                "risk_label": labels[(i + j) % 4],
            }
            for j in range(5)
        ]
        out.append("".join(json.dumps(r) + "\n" for r in rows).encode())
    return out


def load(url: str, payloads: list[bytes], clients: int) -> tuple[float, list[float], list]:
    """Send every payload once, `clients` at a time; (seconds, latencies, responses)."""
    chunks = [payloads[i::clients] for i in range(clients)]
    signer = Webhook(SECRET)

    def client(chunk: list[bytes]) -> list[tuple[float, httpx.Response]]:
        out = []
        with httpx.Client(timeout=60) as http:
            for body in chunk:
                msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(tz=UTC)
                headers = {  # signed by the Standard Webhooks package, as any sender would
                    "Content-Type": "application/x-ndjson",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(msg_id, now, body.decode()),
                }
                started = time.perf_counter()
                response = http.post(url, content=body, headers=headers)
                out.append((time.perf_counter() - started, response))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for chunk in pool.map(client, chunks) for r in chunk]
    elapsed = time.perf_counter() - started
    return elapsed, [lat for lat, _ in results], [resp for _, resp in results]


def batch_id(body: bytes) -> str:
    """The id the receiver must give this body: its canonical content hash."""
    records = [json.loads(line) for line in body.splitlines()]
    return hashlib.sha256(canonical_jsonl(records)).hexdigest()[:32]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    payloads = bodies(args.requests)

    with tempfile.TemporaryDirectory(prefix="tunegate-webhook-load-") as tmp:
        tmp = Path(tmp)
        data = tmp / "base.jsonl"
        data.write_text(
            '{"application_id": "a", "narrative": "base row", "risk_label": "low_risk"}\n'
        )
        store = tmp / "store"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TUNEGATE_WEBHOOK_SECRET": SECRET,
            "PREFECT_API_URL": "",
        }
        env.pop("PREFECT_API_URL")

        # reference: a bare uvicorn endpoint that reads the body and answers
        (tmp / "bare_app.py").write_text(BARE_APP)
        port = free_port()
        bare = start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bare_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--app-dir",
                str(tmp),
            ],  # fmt: skip
            env,
            tmp / "bare.log",
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", bare)
            load(f"http://127.0.0.1:{port}/feedback", payloads[:40], args.clients)  # warm-up
            ref_s, ref_lat, ref_resp = load(
                f"http://127.0.0.1:{port}/feedback", payloads, args.clients
            )
        finally:
            stop(bare)
        assert all(r.status_code == 202 for r in ref_resp)

        port = free_port()
        hook = start(
            [
                sys.executable,
                "-m",
                "tunegate",
                "webhook",
                "--port",
                str(port),
                "--set",
                f"data.path={data}",
                "--set",
                "data.text_column=narrative",
                "--set",
                "data.label_column=risk_label",
                "--set",
                "data.labels=[low_risk, medium_risk, high_risk, decline]",
                "--set",
                f"feedback.store={store}",
            ],  # fmt: skip
            env,
            tmp / "webhook.log",
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", hook)
            url = f"http://127.0.0.1:{port}/feedback"
            warm = bodies(40, "warm-up")
            load(url, warm, args.clients)
            took_s, latencies, responses = load(url, payloads, args.clients)
            _, _, replays = load(url, payloads[:50], args.clients)  # new message ids
        finally:
            stop(hook)

        statuses = sorted({r.status_code for r in responses})
        accepted = [r.json() for r in responses if r.status_code == 202]
        files = sorted((store / "batches").iterdir())
        names = [f.name for f in files]
        expected_all = {batch_id(b) for b in payloads + warm}
        expected = {batch_id(b) for b in payloads}
        on_disk_once = (
            len(names) == len(set(names)) == len(accepted) + len(warm)
            and {a["batch_id"] for a in accepted} == expected
            and {n.removesuffix(".jsonl") for n in names} == expected_all
            and all(".tmp-" not in n for n in names)
        )
        replay_statuses = sorted({r.status_code for r in replays})

    rps = args.requests / took_s
    ref_rps = args.requests / ref_s
    print(f"requests: {args.requests} from {args.clients} concurrent clients, loopback")
    print(f"statuses: {statuses}; accepted: {len(accepted)}")
    print(
        f"tunegate webhook: {rps:.1f} req/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {p95(latencies) * 1000:.1f} ms"
    )
    print(
        f"reference (bare uvicorn endpoint): {ref_rps:.1f} req/s, p95 {p95(ref_lat) * 1000:.1f} ms"
    )
    print(f"ratio webhook/reference: {rps / ref_rps:.2f}x throughput")
    print(
        f"batches on disk: {len(files)} ({len(accepted)} measured + {len(warm)} warm-up); "
        f"every accepted batch exactly once: {on_disk_once}"
    )
    print(f"50 replays under new message ids: statuses {replay_statuses}, files still {len(files)}")
    if not on_disk_once or statuses != [202] or replay_statuses != [200]:
        raise SystemExit("FAILED: not every accepted batch is on disk exactly once")
    print(f"webhook_p95_ms: {p95(latencies) * 1000:.1f}")
    print(f"webhook_rps: {rps:.1f}")


if __name__ == "__main__":
    main()
