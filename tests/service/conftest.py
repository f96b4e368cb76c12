"""Real servers on loopback for the service tier, one set per session.

`prefect server start` (SQLite, its own PREFECT_HOME), `mlflow server` (SQLite backend, local
artifact store), `tunegate serve` for the deployments of `deployments/prefect.yaml`, and
`tunegate webhook` (with the review token: its `/label-studio` route is on), and, for the tests
that ask for it, Label Studio (`tunegate review-server`, SQLite; needs `make labelstudio`). Every
process is started in its own process group and stopped (TERM, then
KILL) at the end of the session, also when a test fails; the ports are checked free again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.servers import (
    LABELS,
    LS_VENV,
    REPO,
    REVIEW_TOKEN,
    SECRET,
    TRIGGER_MAX_WAIT_S,
    TRIGGER_MIN_ROWS,
    LabelStudioServer,
    Services,
    Stack,
    free_port,
    start_label_studio,
)
from tunegate.demo_data.loans import generate


@pytest.fixture(scope="session")
def stack(tmp_path_factory, tiny_model_dir) -> Stack:
    root = tmp_path_factory.mktemp("service")
    prefect_port, mlflow_port, webhook_port = free_port(), free_port(), free_port()
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(root / "prefect-storage"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(prefect_port),
        "PREFECT_UI_API_URL": prefect_api,
        "PREFECT_LOGGING_LEVEL": "INFO",
        "TUNEGATE_WEBHOOK_SECRET": SECRET,
        "TUNEGATE_REVIEW_TOKEN": REVIEW_TOKEN,  # the webhook's /label-studio route is on
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
    }
    bin_dir = Path(sys.executable).parent
    services = Services(root, env)
    try:
        mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
        prefect = services.start(
            "prefect-server",
            [
                str(bin_dir / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            prefect_port,
        )
        mlflow = services.start(
            "mlflow-server",
            [
                str(bin_dir / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--artifacts-destination",
                str(root / "mlflow-artifacts"),
                "--workers",
                "1",
            ],
            mlflow_port,
        )
        data = root / "loans.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in generate(n=160, seed=5)))
        store = root / "feedback-store"
        config = {
            "data": {
                "path": str(data),
                "text_column": "narrative",
                "label_column": "risk_label",
                "id_column": "application_id",
                "labels": LABELS,
            },
            "model": {"base_model": str(tiny_model_dir), "max_length": 48},
            "lora": {"target_modules": ["query", "value"]},
            "train": {"epochs": 1, "batch_size": 16, "learning_rate": 0.005},
            "augment": {"enabled": False},
            "evaluate": {"latency_samples": 3, "baseline_shots": 2},
            "gate": {"min_f1": 0.0, "min_margin_over_baseline": -1.0, "max_regression": 1.0},
            "mlflow": {"tracking_uri": mlflow_uri, "registered_model": "svc-loans"},
            "feedback": {
                "store": str(store),
                "trigger_min_rows": TRIGGER_MIN_ROWS,
                "trigger_max_wait_s": TRIGGER_MAX_WAIT_S,
            },
            "webhook": {"max_body_bytes": 65536},
            "work_dir": str(root / "runs"),
        }
        config_path = root / "tunegate.yaml"
        config_path.write_text(yaml.safe_dump(config))
        cli = [sys.executable, "-m", "tunegate"]
        services.wait_healthy(prefect, f"{prefect_api}/health")
        serve = services.start("serve", [*cli, "serve", "--config", str(config_path)])
        webhook = services.start(
            "webhook",
            [*cli, "webhook", "--config", str(config_path), "--port", str(webhook_port)],
            webhook_port,
        )
        stack = Stack(
            root=root,
            prefect_api=prefect_api,
            prefect_ui=f"http://127.0.0.1:{prefect_port}",
            mlflow_uri=mlflow_uri,
            webhook_url=f"http://127.0.0.1:{webhook_port}/feedback",
            store=store,
            config_path=config_path,
            registered_model="svc-loans",
            services=services,
        )

        def deployed() -> bool:
            """Every deployment applied and the feedback trigger's automation created: `serve`
            prints its banner only after both (each deployment is created before its trigger,
            so an event posted in between starts nothing)."""
            if "being served" not in serve.log.read_text(errors="replace"):
                return False
            try:
                feedback = stack.deployment_id("retrain-on-feedback")
                owned = stack.prefect(
                    "GET", f"/automations/related-to/prefect.deployment.{feedback}"
                )
                return bool(stack.deployment_id("retrain-manual")) and bool(owned)
            except httpx.HTTPError:
                return False

        services.wait_healthy(mlflow, f"{mlflow_uri}/health")
        services.wait_healthy(serve, deployed)
        services.wait_healthy(webhook, f"http://127.0.0.1:{webhook_port}/health")
        yield stack
    finally:
        services.stop_all()


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> LabelStudioServer:
    """A real Label Studio (`tunegate review-server`, SQLite) on loopback for the session."""
    if not (LS_VENV / "bin" / "label-studio").is_file():
        pytest.fail("Label Studio is not installed: run `make labelstudio` (.venv-labelstudio)")
    root = tmp_path_factory.mktemp("label-studio")
    services = Services(root, {**os.environ})
    try:
        yield start_label_studio(services, root)
    finally:
        services.stop_all()
