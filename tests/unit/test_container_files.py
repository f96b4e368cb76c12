"""Static checks of the container stack (no Docker engine here): docker/compose.yaml, the
Dockerfiles and the Kubernetes job template for the GPU pool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
K8S = REPO / "deployments" / "k8s" / "gpu-base-job-template.json"

TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "volumes",
    "depends_on", "healthcheck", "restart", "deploy", "shm_size", "working_dir", "user",
    "networks", "labels", "profiles", "expose", "ulimits", "ipc",
}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None."""
    name, _, digest = image.partition("@")
    if digest:
        return None
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: no tag (pin a version)"
    tag = last.split(":", 1)[1]
    if tag == "latest" or not re.search(r"\d", tag):
        return f"{image}: tag '{tag}' is not a version"
    return None


def compose_problems(doc: dict, base: Path) -> list[str]:
    """Everything wrong with a compose document, as one line each."""
    problems: list[str] = []
    unknown = {k for k in doc if not k.startswith("x-")} - TOP_LEVEL
    if unknown:
        problems.append(f"unknown top-level keys {sorted(unknown)}")
    services = doc.get("services") or {}
    if not services:
        problems.append("no services")
    volumes = set(doc.get("volumes") or {})
    one_shots_waited_on = {
        dep
        for svc in services.values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }
    for name, svc in services.items():
        extra = set(svc) - SERVICE_KEYS
        if extra:
            problems.append(f"{name}: unknown keys {sorted(extra)}")
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        if "image" in svc and (p := image_problem(str(svc["image"]))):
            problems.append(f"{name}: {p}")
        build = svc.get("build")
        if build:
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = context / (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not dockerfile.is_file():
                problems.append(f"{name}: dockerfile not found: {dockerfile}")
        one_shot = svc.get("restart") == "no"
        if one_shot and name not in one_shots_waited_on:
            problems.append(f"{name}: one-shot nobody waits for")
        if not one_shot:
            hc = svc.get("healthcheck")
            if not hc or not hc.get("test") or hc.get("disable"):
                problems.append(f"{name}: long-running service without a health check")
        deps = svc.get("depends_on") or {}
        for dep, cond in deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps):
            if dep not in services:
                problems.append(f"{name}: depends on unknown service '{dep}'")
            if cond and cond.get("condition") not in CONDITIONS:
                problems.append(f"{name}: bad depends_on condition {cond}")
            if cond.get("condition") == "service_healthy" and "healthcheck" not in services.get(
                dep, {}
            ):
                problems.append(f"{name}: waits for '{dep}' to be healthy; it has no health check")
        for mount in svc.get("volumes") or []:
            source = str(mount).split(":", 1)[0]
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{name}: bind mount source not found: {source}")
            elif source not in volumes:
                problems.append(f"{name}: volume '{source}' is not declared (use named volumes)")
        env = svc.get("environment") or {}
        for key, value in env.items() if isinstance(env, dict) else ():
            if key != "<<" and SECRET_WORDS.search(key) and "${" not in str(value):
                problems.append(f"{name}: {key} has a literal value; take it from .env")
    return problems


def dockerfile_problems(path: Path, context: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    args = dict(
        re.match(r"ARG (\w+)=(\S+)", ln).groups() for ln in lines if re.match(r"ARG \w+=", ln)
    )
    problems = []
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    stages = {ln.split()[-1] for ln in lines if re.match(r"FROM .* AS \w+", ln, re.I)}
    for ref in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)
        if image in stages:
            continue
        if "${" in image:
            problems.append(f"{path.name}: FROM {ref} has no default")
        elif p := image_problem(image):
            problems.append(f"{path.name}: {p}")
    last_stage = lines[max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")) :]
    users = [ln.split()[1] for ln in last_stage if ln.upper().startswith("USER ")]
    if not users or users[-1] in {"root", "0"}:
        problems.append(f"{path.name}: the final stage runs as root")
    for ln in lines:
        if ln.upper().startswith(("ENV ", "ARG ")) and SECRET_WORDS.search(ln):
            problems.append(f"{path.name}: secret-like build setting: {ln[:60]}")
        if ln.upper().startswith("COPY ") and "--from=" not in ln:
            parts = [p for p in ln.split()[1:] if not p.startswith("--")]
            for src in parts[:-1]:
                if not (context / src).exists():
                    problems.append(f"{path.name}: COPY source not found: {src}")
    return problems


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_complete_and_consistent():
    doc = load_compose()
    assert compose_problems(doc, DOCKER) == []
    services = doc["services"]
    expected = {"postgres", "prefect-server", "mlflow", "minio", "minio-buckets", "webhook"}
    assert expected <= set(services)
    assert {"worker-cpu", "worker-gpu"} <= set(services)
    assert "postgresql+asyncpg://" in str(services["prefect-server"]["environment"])
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in mlflow_cmd and "s3://" in mlflow_cmd
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert "--pool" in services["worker-gpu"]["command"]
    assert all(v is None or isinstance(v, dict) for v in doc["volumes"].values())


def test_compose_checker_catches_what_it_should():
    bad = {
        "services": {
            "a": {"image": "postgres:latest", "volumes": ["undeclared:/x"]},
            "b": {"image": "minio/minio", "healthcheck": {"test": ["CMD", "true"]}},
            "c": {"image": "x:1.0", "restart": "no"},
            "d": {
                "build": {"context": ".", "dockerfile": "Nope"},
                "healthcheck": {"test": ["CMD", "true"]},
                "depends_on": {"a": {"condition": "service_healthy"}},
                "environment": {"DB_PASSWORD": "hunter2"},
            },
        }
    }
    problems = "\n".join(compose_problems(bad, DOCKER))
    for needle in (
        "postgres:latest",
        "a: long-running service without a health check",
        "minio/minio: no tag",
        "c: one-shot nobody waits for",
        "dockerfile not found",
        "volume 'undeclared'",
        "it has no health check",
        "DB_PASSWORD has a literal value",
    ):
        assert needle in problems


@pytest.mark.parametrize(
    ("dockerfile", "context"),
    [("Dockerfile.cpu", REPO), ("Dockerfile.cuda", REPO), ("Dockerfile.mlflow", DOCKER)],
)
def test_dockerfiles_are_pinned_multistage_and_non_root(dockerfile, context):
    path = DOCKER / dockerfile
    assert dockerfile_problems(path, context) == []
    text = path.read_text()
    if dockerfile != "Dockerfile.mlflow":
        assert " AS builder" in text and "COPY --from=builder" in text
        assert "-c /tmp/constraints.txt" in text and 'VOLUME ["/cache/huggingface"]' in text
        # every package the wheel ships is copied into the build and the runtime image
        project = tomllib.loads((REPO / "pyproject.toml").read_text())
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]:
            package = pattern.rstrip("*")
            assert f"COPY {package} /src/{package}" in text, package
            assert f"COPY --chown=tunegate:tunegate {package} /app/{package}" in text, package


def test_dockerfile_checker_catches_root_and_latest(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nENV API_TOKEN=abc\nCOPY missing.txt /x\n")
    problems = "\n".join(dockerfile_problems(bad, tmp_path))
    assert "python:latest" in problems and "runs as root" in problems
    assert "secret-like" in problems and "missing.txt" in problems


def test_compose_build_contexts_and_secrets_stay_out_of_git():
    ignored = (REPO / ".gitignore").read_text().split()
    assert "docker/.env" in ignored
    assert "docker/.env" in (REPO / ".dockerignore").read_text()
    example = (DOCKER / "env.example").read_text()
    referenced = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    assert referenced <= set(re.findall(r"^(\w+)=", example, re.M)), "env.example lists them all"
    constraints = (DOCKER / "constraints.txt").read_text()
    assert re.search(r"^prefect==3\.", constraints, re.M)
    assert re.search(r"^mlflow==3\.17\.", constraints, re.M)


def test_kubernetes_gpu_job_template():
    template = json.loads(K8S.read_text())
    job = template["job_configuration"]["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert pod["nodeSelector"] == "{{ node_selector }}"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    placeholders = set(re.findall(r"\{\{ (\w+) \}\}", K8S.read_text()))
    assert placeholders <= set(template["variables"]["properties"])

    # Prefect's own check, as `prefect work-pool create --base-job-template` applies it.
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values

    WorkPoolCreate(name="gpu", type="kubernetes", base_job_template=template)
    props = template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v}
    values.update(name="train", command="prefect flow-run execute", env={}, labels={})
    rendered = apply_values(template["job_configuration"], values)
    pod = rendered["job_manifest"]["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "8Gi"
    assert pod["containers"][0]["image"] == "tunegate:0.1.0-cuda"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker compose client here",
)
def test_docker_compose_config_accepts_the_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text((DOCKER / "env.example").read_text())
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def _config_mount(service: dict) -> tuple[str, Path]:
    """(path in the container, file in the repository) of the `--config` a service reads."""
    command = service["command"]
    words = " ".join(command if isinstance(command, list) else [command]).split()
    inside = words[words.index("--config") + 1]
    for mount in service.get("volumes") or []:
        source, target = str(mount).split(":")[:2]
        if target == inside:
            return inside, DOCKER / source
    raise AssertionError(f"--config {inside} is not mounted from the repository")


def test_compose_webhook_starts_with_a_config_and_shares_its_store_with_the_workers():
    from flows.config import load_config

    services = load_compose()["services"]
    webhook, register, worker = services["webhook"], services["register"], services["worker-cpu"]
    inside, config_file = _config_mount(webhook)
    assert config_file.is_file()
    assert _config_mount(register) == (inside, config_file)  # the deployments' default config
    assert "tunegate deploy --config" in " ".join(register["command"])
    # the config loads as the webhook loads it, with /data as mounted from the repository
    mounts = {
        str(m).split(":")[1]: DOCKER / str(m).split(":")[0] for m in webhook.get("volumes") or []
    }
    raw = yaml.safe_load(config_file.read_text())
    data_path = Path(raw["data"]["path"])
    host_data = mounts[str(data_path.parent)] / data_path.name
    assert host_data.is_file(), host_data
    config = load_config(config_file, [f"data.path={host_data}"])
    # the store is one every container reaches: an object store the stack runs, not a folder
    # inside the webhook's container (a relative path lands in /app of each container apart)
    store = config.feedback.store
    assert store.startswith("s3://"), store
    bucket = store.removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(services["minio-buckets"]["command"])
    assert webhook["depends_on"]["minio-buckets"]["condition"] == "service_completed_successfully"
    for name in ("webhook", "worker-cpu"):
        assert "AWS_ENDPOINT_URL" in services[name]["environment"]
    # the workers run what register deployed: the pool named in deployments/prefect.yaml
    pools = {
        d["work_pool"]["name"]
        for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]
    }
    command = worker["command"]
    assert command[command.index("--pool") + 1] in pools
    assert config.webhook.port == int(webhook["ports"][0].split(":")[1])
    assert webhook["command"][:2] == ["tunegate", "webhook"]
    assert "/health" in " ".join(webhook["healthcheck"]["test"])
