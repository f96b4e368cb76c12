"""Shared fixtures: offline environment, a tiny random BERT, a temporary Prefect backend."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISABLE_MLFLOW_INTEGRATION": "TRUE",
    }
)
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # `make test` runs one pytest-xdist worker per core: one torch/OpenMP thread each (inherited
    # by training workers and served flow runs). Two workers of two spinning OpenMP threads each on
    # two cores ran a training test more than three times slower than alone.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers.demo_data import write_demo_subset  # noqa: E402
from tests.helpers.tiny_models import build_tiny_bert  # noqa: E402
from tunegate.demo_data.loans import LABELS, generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-dim BERT with a word-level tokenizer over the demo vocabulary."""
    texts = [row["narrative"] or "" for row in generate(n=400, seed=1)]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


@pytest.fixture(scope="session")
def prefect_backend(tmp_path_factory):
    """A temporary Prefect server on SQLite for the whole session, results kept apart."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture
def demo_subset(tmp_path) -> tuple[Path, list[dict]]:
    path = tmp_path / "loans.jsonl"
    return path, write_demo_subset(path)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)


__all__ = ["LABELS", "REPO", "write_demo_subset"]


@pytest.hookimpl(tryfirst=True)  # the marks must be on before xdist's hook reads them
def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """`make test` runs pytest-xdist with `--dist loadgroup`, and the tests that share the
    session-scoped server stack (Prefect, MLflow, `tunegate serve`, the webhook, Label Studio)
    are marked as one group and ordered first, so the servers start at once.

    The group is not honoured today: pytest-xdist 3.8 tags a grouped test by rewriting
    `item._nodeid`, which pytest 9.2 no longer reads (a node's id is `_id`), so the stack tests
    spread over both workers and each worker starts its own stack (about 45 s each). Measured
    that way on 2 idle cores: `make test` 11 min 24 s. Where the group is honoured, one worker
    takes the stack's chain (about 8 minutes of retrains and UI tests) and the other the rest."""
    on_stack, rest = [], []
    for item in items:
        if {"stack", "label_studio"} & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("server-stack"))
            on_stack.append(item)
        else:
            rest.append(item)
    items[:] = on_stack + rest


@pytest.fixture(autouse=True)
def _fresh_prefect_events_worker():
    """Prefect's events worker is one per process and keeps the API URL it was created with;
    task-run states travel as events. A test that switched `PREFECT_API_URL` to its own server
    would leave later tests in the same pytest-xdist worker posting their events to it after it
    stopped (a retrain's task runs then never reach the Prefect database). Stopped after each
    test, the worker is created again, for the API of the moment, by the next event."""
    yield
    import sys

    if "prefect.events.worker" in sys.modules:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)
