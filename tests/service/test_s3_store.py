"""MLflow and the shared store against an S3-compatible server on loopback.

MinIO does not install from the package registries here; moto's server mode speaks the same S3
API. MLflow's tracking store is SQLite, its artifact root `s3://`; a tunegate model (a LoRA adapter
on a tiny random BERT) is logged, registered and loaded back through the S3 endpoint, and
`tasks.storage` moves a folder through `s3://` the way the GPU pool receives splits.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.service, pytest.mark.timeout(600)]

MOTO = str(Path(sys.executable).parent / "moto_server")
BUCKET = "tunegate-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """`moto_server` on a free loopback port, with one bucket."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server did not start: {log.read_text()[-1000:]}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,  # boto3 and s3fs
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,  # MLflow's artifact repository
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    s3 = boto3.client("s3")
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def _untrained_adapter(base: Path, out: Path, labels: list[str]) -> Path:
    """A LoRA adapter folder in tunegate's layout, without spending time on training."""
    from tasks.models import ModelCard, ModelSettings, write_labels
    from tasks.train import LoraSettings, TrainSettings, load_model

    tokenizer, model = load_model(
        ModelSettings(base_model=str(base)),
        LoraSettings(target_modules=["query", "value"]),
        TrainSettings(method="lora"),
        labels,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_labels(out, labels)
    ModelCard(base_model=str(base), method="lora", max_length=32).write(out)
    return out


def test_mlflow_logs_registers_and_loads_a_model_through_s3(s3_env, tiny_model_dir, tmp_path):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from tasks.registry import (
        MLflowSettings,
        log_model,
        open_tracking,
        promote_version,
        register_version,
        start_run,
    )

    labels = ["low_risk", "high_risk"]
    model_dir = _untrained_adapter(tiny_model_dir, tmp_path / "model", labels)
    settings = MLflowSettings(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_location=f"s3://{BUCKET}/mlflow",
        registered_model="s3-model",
    )
    client = open_tracking(settings)
    assert client.get_experiment_by_name("tunegate").artifact_location == f"s3://{BUCKET}/mlflow"
    tracker = start_run(client, settings, {"test": "s3"})
    # the plain functions behind register_task: log, register, promote
    model_uri = log_model(tracker, model_dir, settings.tracking_uri)
    version = register_version(
        client, "s3-model", model_uri, tracker.run_id, {"gate": "passed"}, "through S3"
    )
    # the Prefect promotion lock is exercised in tests/integration/test_promotion.py
    outcome = promote_version(client, "s3-model", version, None, lock=contextlib.nullcontext())
    assert outcome.promoted and version == "1"

    # The files are in the bucket, not on the local disk.
    keys = [
        o["Key"]
        for page in s3_env.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix="mlflow/"
        )
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("adapter_config.json") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys)
    assert not (tmp_path / "mlruns").exists()

    source = MlflowClient(settings.tracking_uri).get_model_version("s3-model", "1").source
    mlflow.set_tracking_uri(settings.tracking_uri)
    loaded = mlflow.pyfunc.load_model("models:/s3-model@champion")
    out = loaded.predict(pd.DataFrame({"text": ["bureau scores sit in the top tier"]}))
    assert out["label"].tolist()[0] in labels, source


def test_storage_moves_a_folder_through_s3(s3_env, tmp_path):
    from tasks.storage import join, pull, push

    folder = tmp_path / "out"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "adapter_config.json").write_text('{"r": 8}')
    (folder / "history.json").write_text("[]")
    url = join(f"s3://{BUCKET}/tunegate", "runs", "r1", "train")
    push(folder, url)
    back = pull(url, tmp_path / "back")
    assert (back / "model" / "adapter_config.json").read_text() == '{"r": 8}'
    assert (back / "history.json").read_text() == "[]"
    single = pull(join(url, "history.json"), tmp_path / "single.json")
    assert single.read_text() == "[]"
