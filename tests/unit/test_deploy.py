"""The deployments of `deployments/prefect.yaml`: what they define, and the typed work pool."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

pytestmark = pytest.mark.unit


def test_prefect_yaml_defines_scheduled_manual_and_triggered_retrains(tmp_path):
    from deployments.deploy import build_deployments, load_specs
    from flows.config import load_config

    specs = {s.name: s for s in load_specs()}
    assert set(specs) == {
        "retrain-scheduled",
        "retrain-manual",
        "retrain-on-feedback",
        "monitor-hourly",
        "review-scheduled",
    }
    base = tmp_path / "base.jsonl"
    base.write_text('{"text": "a", "label": "good"}\n')
    config = load_config(None, [f"data.path={base}"])
    built = {d.name: d for d in build_deployments(config, list(specs.values()))}
    for deployment in (d for d in built.values() if d.flow_name == "retrain"):
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE"
        assert deployment.parameters["config"]["data"]["path"] == str(base.resolve())
    assert built["retrain-scheduled"].schedules[0].schedule.cron == "0 3 * * 1"
    trigger = built["retrain-on-feedback"].triggers[0]
    assert trigger.expect == {"tunegate.feedback.landed"}
    assert built["retrain-on-feedback"].parameters["only_new_feedback"] is True
    # the UI form: the typed config, with each setting's description and default
    schema = built["retrain-manual"]._parameter_openapi_schema.model_dump()
    definitions = schema["definitions"]
    epochs = definitions["TrainSettings"]["properties"]["epochs"]
    assert epochs["description"] and "default" in epochs
    assert "store" in definitions["FeedbackSettings"]["properties"]


def test_work_pool_is_typed_with_its_defaults_in_one_place():
    from deployments.deploy import DeploymentSpec, WorkPoolSpec, load_specs

    for spec in load_specs():
        assert spec.work_pool == WorkPoolSpec(name="tunegate-process", work_queue_name="default")
    bare = DeploymentSpec(name="x", entrypoint="flows/retrain.py:retrain")
    assert bare.work_pool.name == "tunegate-process" and bare.work_pool.work_queue_name is None
    assert bare.work_pool.job_variables == {}
    with pytest.raises(ValidationError, match="work_qeue_name"):
        DeploymentSpec(name="x", entrypoint="e", work_pool={"work_qeue_name": "default"})


def test_monitor_deployment_runs_hourly_with_the_monitor_part_of_the_config(tmp_path):
    from deployments.deploy import build_deployments, load_specs
    from flows.config import load_config

    base = tmp_path / "base.jsonl"
    base.write_text('{"text": "a", "intent": "good"}\n')
    config = load_config(
        None,
        [f"data.path={base}", "data.label_column=intent", "monitor.rollback_on_alarm=true"],
    )
    spec = next(s for s in load_specs() if s.name == "monitor-hourly")
    (deployment,) = build_deployments(config, [spec])
    assert deployment.flow_name == "monitor"
    assert deployment.schedules[0].schedule.cron == "0 * * * *"
    assert deployment.concurrency_limit == 1
    parameters = deployment.parameters["config"]
    assert parameters["label_column"] == "intent" and "data" not in parameters
    assert parameters["monitor"]["rollback_on_alarm"] is True
    schema = deployment._parameter_openapi_schema.model_dump()
    threshold = schema["definitions"]["MonitorSettings"]["properties"]["drift_threshold"]
    assert threshold["description"] and threshold["default"] == 0.75


def test_review_deployment_runs_hourly_with_the_review_part_of_the_config(tmp_path):
    from deployments.deploy import build_deployments, load_specs
    from flows.config import load_config

    base = tmp_path / "base.jsonl"
    base.write_text('{"text": "a", "label": "good"}\n')
    config = load_config(
        None,
        [f"data.path={base}", "data.labels=[good, bad]", "review.url=http://ls:8080/"],
    )
    spec = next(s for s in load_specs() if s.name == "review-scheduled")
    (deployment,) = build_deployments(config, [spec])
    assert deployment.flow_name == "review" and deployment.concurrency_limit == 1
    parameters = deployment.parameters["config"]
    assert parameters["review"]["url"] == "http://ls:8080" and parameters["labels"] == [
        "good",
        "bad",
    ]
    assert "data" not in parameters and "api_key" not in str(parameters["review"]).replace(
        "api_key_env", ""
    )
