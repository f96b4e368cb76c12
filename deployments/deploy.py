"""Build the deployments of `deployments/prefect.yaml` and serve or register them.

`prefect.yaml` is the one place the deployments are defined (names, schedule, trigger,
concurrency, work pool); the `config` parameter's default comes from the user's config file.
Each entry's `entrypoint` picks its flow: the retrain flow, the monitor flow
(`MONITOR_ENTRYPOINT`) or the review flow (`REVIEW_ENTRYPOINT`), whose `config` is that flow's
part of the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from flows.config import RetrainConfig
from tasks.locks import ensure_lock, retrain_lock_name

PREFECT_YAML = Path(__file__).with_name("prefect.yaml")
MONITOR_ENTRYPOINT = "flows/monitor.py:monitor"
REVIEW_ENTRYPOINT = "flows/review.py:review"


class WorkPoolSpec(BaseModel):
    """`work_pool:` of one deployment (prefect.yaml's keys); its defaults are the only ones."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="tunegate-process", description="Work pool (process type).")
    work_queue_name: str | None = Field(
        default=None, description="Queue within the pool; None: the pool's default queue."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the pool's base job template."
    )


class DeploymentSpec(BaseModel):
    """One entry of `deployments:` in prefect.yaml (the keys tunegate reads)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    entrypoint: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[dict[str, Any]] = Field(default_factory=list)
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    concurrency_limit: dict[str, Any] | None = None
    work_pool: WorkPoolSpec = Field(default_factory=WorkPoolSpec)


def load_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    raw = yaml.safe_load(Path(path).read_text())
    return [DeploymentSpec.model_validate(d) for d in raw["deployments"]]


def config_parameters(config: RetrainConfig) -> dict[str, Any]:
    """The flow's parameters for `config`, as JSON (absolute paths: the runner's cwd may differ)."""
    dumped = config.model_dump(mode="json", by_alias=True)
    for key in ("path", "test_path"):
        if dumped["data"].get(key):
            dumped["data"][key] = str(Path(dumped["data"][key]).resolve())
    return {"config": dumped}


def _flow_for(spec: DeploymentSpec, config: RetrainConfig) -> tuple[Any, dict[str, Any]]:
    """The flow `spec.entrypoint` names and its parameters for `config`."""
    if spec.entrypoint == MONITOR_ENTRYPOINT:
        from flows.monitor import MonitorConfig, monitor

        return monitor, {"config": MonitorConfig.of(config).model_dump(mode="json")}
    if spec.entrypoint == REVIEW_ENTRYPOINT:
        from flows.review import ReviewConfig, review

        return review, {"config": ReviewConfig.of(config).model_dump(mode="json")}
    from flows.retrain import retrain

    return retrain, config_parameters(config)


def build_deployments(config: RetrainConfig, specs: list[DeploymentSpec]) -> list:
    """RunnerDeployments, one per spec, of the flow its entrypoint names."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.schedules import Cron

    out = []
    for spec in specs:
        flow, parameters = _flow_for(spec, config)
        out.append(
            flow.to_deployment(
                name=spec.name,
                description=spec.description,
                tags=spec.tags,
                parameters={**parameters, **spec.parameters},
                schedules=[
                    Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.schedules
                ]
                or None,
                triggers=[
                    DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"})
                    for t in spec.triggers
                ]
                or None,
                concurrency_limit=ConcurrencyLimitConfig(**spec.concurrency_limit)
                if spec.concurrency_limit
                else None,
            )
        )
    return out


def ensure_retrain_lock(registered_model: str) -> None:
    """The global limit (one slot) the flow holds while it retrains `registered_model`."""
    ensure_lock(retrain_lock_name(registered_model))


def serve_deployments(config: RetrainConfig, specs: list[DeploymentSpec]) -> None:
    """Serve every deployment from this process until interrupted (runs as subprocesses)."""
    from prefect import serve

    ensure_retrain_lock(config.mlflow.registered_model)
    serve(*build_deployments(config, specs))


def apply_deployments(config: RetrainConfig, specs: list[DeploymentSpec]) -> list[str]:
    """Register every deployment on its process work pool (created if missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    ensure_retrain_lock(config.mlflow.registered_model)
    pools = {spec.work_pool.name for spec in specs}
    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass
    names = []
    for spec, deployment in zip(specs, build_deployments(config, specs), strict=True):
        deployment.work_queue_name = spec.work_pool.work_queue_name
        if spec.work_pool.job_variables:
            deployment.job_variables = spec.work_pool.job_variables
        deployment.apply(work_pool_name=spec.work_pool.name)
        names.append(f"{deployment.flow_name}/{spec.name}")
    return names
