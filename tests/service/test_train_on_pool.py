"""The split across work pools, against a real Prefect server on loopback.

A `prefect server start` subprocess (temporary PREFECT_HOME, SQLite) and a `prefect worker start
--pool gpu-test --type process` subprocess stand in for the stack. The retrain flow runs here; its
training stage is dispatched with `run_deployment` to `train-remote/gpu-test`, which the worker
runs in another process; splits and the adapter travel through a shared folder (`storage.url`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.servers import REPO, Services, free_port

pytestmark = [pytest.mark.service, pytest.mark.timeout(900)]

POOL = "gpu-test"
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server and one process worker on the `gpu-test` pool."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        "PYTHONPATH": str(REPO),  # the worker's flow runs import this checkout
    }
    services = Services(home, env)
    try:
        server = services.start(
            "prefect-server",
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            port,
            cwd=home,
        )
        services.wait_healthy(server, f"{api}/health")
        # Create the pool first: a worker creates it only once it is up, which under load can
        # be after the test deploys to it.
        subprocess.run(
            [PREFECT, "work-pool", "create", POOL, "--type", "process"],
            env=env,
            cwd=home,
            check=True,
            capture_output=True,
            timeout=180,
        )
        worker = services.start(
            "worker", [PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], cwd=home
        )
        yield {"api": api, "home": home, "worker_log": worker.log}
    finally:
        services.stop_all()


def test_training_runs_on_the_other_pool(prefect_server, tiny_model_dir, demo_subset, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    from flows.config import load_config
    from flows.retrain import retrain
    from flows.train_remote import deploy

    data_path, _ = demo_subset
    store = tmp_path / "mlflow"
    shared = tmp_path / "shared-store"
    config = load_config(
        None,
        [
            f"data.path={data_path}",
            "data.text_column=narrative",
            "data.label_column=risk_label",
            "data.id_column=application_id",
            "data.labels=[low_risk, medium_risk, high_risk, decline]",
            "augment.enabled=false",
            f"model.base_model={tiny_model_dir}",
            "lora.target_modules=[query, value]",
            "train.epochs=1",
            "train.batch_size=32",
            f"train.work_pool={POOL}",
            f"storage.url=file://{shared}",
            "evaluate.latency_samples=3",
            "gate.min_f1=0.0",
            "gate.min_margin_over_baseline=-1.0",
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=tiny-split",
            f"work_dir={tmp_path}/runs",
        ],
    )
    started = time.perf_counter()
    with temporary_settings(
        {PREFECT_API_URL: prefect_server["api"], PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        deploy(POOL, str(REPO))
        state = retrain(config, return_state=True)
        assert state.is_completed(), (
            f"{state.message}\nworker log:\n{prefect_server['worker_log'].read_text()[-3000:]}"
        )
        summary = state.result()

        async def _runs():
            async with get_client() as client:
                parent = await client.read_flow_run(summary.prefect_flow_run_id)
                runs = await client.read_flow_runs()
                return parent, runs

        import asyncio

        parent, runs = asyncio.run(_runs())
    wall = time.perf_counter() - started
    print(f"retrain with training on pool {POOL}: {wall:.1f}s")

    children = [r for r in runs if r.deployment_id is not None]
    assert len(children) == 1
    child = children[0]
    # The training run went to the other pool and was executed there, by the worker's process.
    assert child.work_pool_name == POOL
    assert child.state.is_completed()
    assert child.id != parent.id and parent.work_pool_name is None
    assert str(child.id) in prefect_server["worker_log"].read_text()

    # The adapter came back through the shared store, and the parent registered it.
    assert (shared / "runs" / str(parent.id) / "train" / "model" / "adapter_config.json").is_file()
    assert summary.model["version"] == "1"
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.tags["tunegate.train_flow_run_id"] == str(child.id)
    assert "train/loss" in run.data.metrics or "train/eval_f1_macro" in run.data.metrics
    version = client.get_model_version("tiny-split", "1")
    assert version.run_id == summary.mlflow_run_id


def test_search_trials_run_as_training_deployment_runs_on_the_pool(
    prefect_server, tiny_model_dir, demo_subset, tmp_path
):
    """search.enabled with train.work_pool: a trial is one `train-remote/<pool>` run on the
    pool's worker and a nested MLflow run, and the best trial's adapter is the registered model.
    The pool's worker reports each evaluation to the study (a pool trial that is pruned:
    tests/integration/test_pool_trial_pruning.py)."""
    import optuna
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.config import load_config
    from flows.retrain import retrain
    from flows.train_remote import deploy

    data_path, _ = demo_subset
    store = tmp_path / "mlflow"
    config = load_config(
        None,
        [
            f"data.path={data_path}",
            "data.text_column=narrative",
            "data.label_column=risk_label",
            "data.id_column=application_id",
            "data.labels=[low_risk, medium_risk, high_risk, decline]",
            "augment.enabled=false",
            f"model.base_model={tiny_model_dir}",
            "lora.target_modules=[query, value]",
            "train.epochs=1",
            "train.batch_size=32",
            f"train.work_pool={POOL}",
            f"storage.url=file://{tmp_path}/shared-store",
            "search.enabled=true",
            "search.trials=1",  # one trial keeps it cheap (~50 s a pool trial)
            "search.pruner=none",
            "search.space={learning_rate: {type: categorical, choices: [1.0e-3, 2.0e-3]}}",
            "evaluate.latency_samples=3",
            "gate.min_f1=0.0",
            "gate.min_margin_over_baseline=-1.0",
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=tiny-search-pool",
            f"work_dir={tmp_path}/runs",
        ],
    )
    started = time.perf_counter()
    with temporary_settings(
        {PREFECT_API_URL: prefect_server["api"], PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        deploy(POOL, str(REPO))
        state = retrain(config, return_state=True)
        assert state.is_completed(), (
            f"{state.message}\nworker log:\n{prefect_server['worker_log'].read_text()[-3000:]}"
        )
        summary = state.result()

        async def _runs():
            async with get_client() as client:
                return await client.read_flow_runs()

        import asyncio

        runs = asyncio.run(_runs())
    print(f"1-trial search with training on pool {POOL}: {time.perf_counter() - started:.1f}s")

    assert summary.search["trials_run"] == 1 and summary.search["failed"] == 0
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    parent = client.get_run(summary.mlflow_run_id)
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_run_id}'",
    )
    assert sorted(r.data.tags["tunegate.search.state"] for r in trials) == ["complete"]
    # Each trial went to the pool as its own deployment run, executed by the pool's worker.
    child_ids = {r.data.tags["tunegate.train_flow_run_id"] for r in trials}
    on_pool = {str(r.id) for r in runs if r.deployment_id is not None and r.work_pool_name == POOL}
    assert len(child_ids) == 1 and child_ids <= on_pool
    worker_log = prefect_server["worker_log"].read_text()
    assert all(run_id in worker_log for run_id in child_ids)
    best = next(
        r
        for r in trials
        if r.data.tags["tunegate.search.trial"] == str(summary.search["best_trial"])
    )
    assert (
        float(best.data.params["train.learning_rate"])
        == summary.search["best_params"]["train.learning_rate"]
    )
    assert summary.model["version"] == "1"
    # The trial travelled with the deployment run: its worker reported to the parent's study.
    study = optuna.load_study(
        study_name=summary.search["study_name"],
        storage=f"sqlite:///{(store / 'optuna.db').resolve()}",
    )
    assert study.trials[0].intermediate_values, "the pool trial never reported to the study"
