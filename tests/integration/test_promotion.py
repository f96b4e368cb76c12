"""Promotion against one MLflow SQLite store under a temporary Prefect backend: two promotions
racing, rollback, and the `promote` / `rollback` / `models` commands."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow.tracking import MlflowClient

import tasks.registry as registry
from tasks.registry import (
    CHAMPION,
    PREVIOUS,
    champion_version,
    promote_version,
    register_version,
    rollback_champion,
)
from tunegate.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{path}/mlflow.db"
    MlflowClient(uri).search_registered_models()  # create the schema once for the module
    return uri


def _versions(uri: str, name: str, gates: list[str]) -> list[str]:
    client = MlflowClient(uri)
    out = []
    for i, gate in enumerate(gates):
        version = register_version(
            client,
            name,
            f"file:///models/{name}/{i}",
            None,
            {"gate": gate, "f1_macro": f"{0.8 + i / 100:.4f}", "dataset_version": "d1"},
            f"card {i}",
        )
        out.append(version)
    return out


def _alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def test_two_racing_promotions_leave_exactly_one_champion_that_passed(
    prefect_backend, store, monkeypatch
):
    name = "race"
    v1, v2, v3 = _versions(store, name, ["passed", "passed", "failed"])
    # Widen the window between reading the champion and setting it: without the lock both
    # passing candidates would read "no champion" and both set the alias.
    original = registry.champion_version

    def slow_read(client, model):
        value = original(client, model)
        time.sleep(0.4)
        return value

    monkeypatch.setattr(registry, "champion_version", slow_read)
    barrier = threading.Barrier(3)
    results: dict[str, registry.Promotion] = {}
    errors: list[BaseException] = []

    def flow_finishes(version: str) -> None:
        try:
            client = MlflowClient(store)  # each "flow" with its own client, like two processes
            barrier.wait()
            results[version] = promote_version(client, name, version, expected_champion=None)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=flow_finishes, args=(v,)) for v in (v1, v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    winners = [v for v, r in results.items() if r.promoted]
    assert len(winners) == 1, {v: r.note for v, r in results.items()}
    client = MlflowClient(store)
    assert original(client, name) == winners[0]
    assert client.get_model_version(name, winners[0]).tags["gate"] == "passed"
    loser = ({v1, v2} - set(winners)).pop()
    assert "not promoting over a model it was not compared with" in results[loser].note
    assert "did not pass its gate" in results[v3].note
    assert _alias(client, name, PREVIOUS) is None  # nobody replaced anybody


def test_rollback_walks_back_and_forced_promotion_is_recorded(prefect_backend, store):
    name = "rollback"
    v1, v2, v3 = _versions(store, name, ["passed", "passed", "failed"])
    client = MlflowClient(store)
    assert promote_version(client, name, v1, None).promoted
    assert promote_version(client, name, v2, v1).promoted
    assert (_alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)) == (v2, v1)

    outcome = rollback_champion(client, name)
    assert outcome.champion == v1
    assert champion_version(client, name) == v1
    assert _alias(client, name, PREVIOUS) is None  # v1 replaced nobody
    assert "tunegate.rolled_back_at" in client.get_model_version(name, v2).tags
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        rollback_champion(client, name)

    refused = promote_version(client, name, v3, None, check_expected=False, by="cli")
    assert not refused.promoted and champion_version(client, name) == v1
    forced = promote_version(client, name, v3, None, check_expected=False, force=True, by="cli")
    assert forced.promoted and "FORCED" in forced.note
    tags = client.get_model_version(name, v3).tags
    assert tags["tunegate.promotion"] == "forced"
    assert tags["tunegate.previous_champion"] == v1
    assert _alias(client, name, PREVIOUS) == v1


def test_cli_promote_rollback_models(prefect_backend, store, tmp_path, capsys):
    name = "cli"
    v1, v2 = _versions(store, name, ["passed", "failed"])
    config = tmp_path / "c.yaml"
    config.write_text(f"mlflow:\n  tracking_uri: {store}\n  registered_model: nobody\n")
    opts = ["--config", str(config), "--set", f"mlflow.registered_model={name}"]
    client = MlflowClient(store)

    assert main(["promote", v1, *opts]) == 0
    assert champion_version(client, name) == v1
    assert client.get_model_version(name, v1).tags["tunegate.promotion"] == "manual"
    assert main(["promote", v2, *opts]) == 2  # failed its gate
    assert "did not pass its gate" in capsys.readouterr().out
    assert champion_version(client, name) == v1
    assert main(["promote", v2, "--force", *opts]) == 0
    assert champion_version(client, name) == v2
    capsys.readouterr()

    assert main(["models", *opts]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:2] == ["version", "aliases"]
    assert table[3].split()[:4] == [v2, "challenger,champion", "failed", "forced"]
    assert table[4].split()[:3] == [v1, "previous-champion", "passed"]

    assert main(["rollback", *opts]) == 0
    assert champion_version(client, name) == v1
    assert main(["rollback", *opts]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["promote", "99", *opts]) == 2
    assert main(["models", "--set", "mlflow.bogus=1"]) == 2
    assert "mlflow.bogus: unknown key" in capsys.readouterr().err
