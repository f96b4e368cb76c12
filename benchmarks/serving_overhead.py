"""The model server's own cost per request: server CPU time with an instant model.

`tunegate`'s app (`deployments.model_server.create_app`) runs under uvicorn in a child process
with a model that answers at once, so what is measured is everything around the model: HTTP,
routing, the middleware, the scoring-protocol parser, the PII stage (unless turned off with
`--set pii.enabled=false`), the prediction log and /metrics. 8 clients in this process send
single-text `POST /invocations`; the figure is the child's user+system CPU over the requests
divided by their number, which holds far better than requests/s on a shared machine.

    python benchmarks/serving_overhead.py [--requests 800] [--set pii.enabled=false ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.servers import free_port  # noqa: E402
from tunegate.demo_data.loans import generate  # noqa: E402

SERVER = """
import sys, time
import uvicorn
from deployments.model_server import create_app, load_serve_config
from deployments.model_server.source import Served
from deployments.webhook import PrefectEvents

class Instant:
    def current_version(self):
        return "1"

    def load(self, version):
        answer = lambda texts: [{"label": "a", "score": 0.9} for _ in texts]
        return Served("bench", version, "classification", ["a", "b"], answer, time.time())

config = load_serve_config(None, sys.argv[2:])
uvicorn.run(create_app(config, Instant(), PrefectEvents(None)), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning")
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="config override")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tunegate-overhead-"))
    port = free_port()
    overrides = [
        f"serving.log_url={tmp / 'log'}",
        f"feedback.store={tmp / 'store'}",
        "serving.reload_interval_s=600",
        *args.set,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), *overrides], env=env)
    texts = [r["narrative"] for r in generate(n=200, seed=2) if (r["narrative"] or "").strip()]
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) for _ in range(8)]

    def one(i: int) -> None:
        answer = clients[i % 8].post("/invocations", json={"inputs": [texts[i % len(texts)]]})
        assert answer.status_code == 200, answer.text

    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.3)
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(64)))  # warm-up
        cpu, wall = cpu_seconds(proc.pid), time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        cpu, wall = cpu_seconds(proc.pid) - cpu, time.perf_counter() - wall
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"requests: {args.requests} from {args.clients} clients; overrides: {args.set or '-'}")
    print(f"server_cpu_ms_per_request: {1000 * cpu / args.requests:.2f}")
    print(f"requests_per_s: {args.requests / wall:.0f} (instant model)")


if __name__ == "__main__":
    main()
