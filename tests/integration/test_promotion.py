"""Promotion against one MLflow SQLite store under a temporary Prefect backend: two promotions
racing, rollback, a crash between any two registry writes, versions spelled as MLflow resolves
them, and the `promote` / `rollback` / `models` commands."""

from __future__ import annotations

import contextlib
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
    assert main(["promote", f"+{v1}", *opts]) == 0  # " 1", "01", "+1" are v1 to MLflow
    assert champion_version(client, name) == v1
    assert _alias(client, name, PREVIOUS) != v1
    assert main(["promote", f"0{v1}", *opts]) == 0  # already the champion: the chain stays
    assert main(["promote", "v1", *opts]) == 2
    assert "not a registered version number" in capsys.readouterr().err
    assert main(["models", "--set", "mlflow.bogus=1"]) == 2
    assert "mlflow.bogus: unknown key" in capsys.readouterr().err


class Crash(Exception):
    """Stands for the process dying between two registry writes."""


WRITES = {"set_registered_model_alias", "delete_registered_model_alias", "set_model_version_tag"}


class CrashingClient:
    """An MlflowClient that dies right before its `after`-th write (0: before the first)."""

    def __init__(self, client: MlflowClient, after: int) -> None:
        self.client, self.after, self.writes = client, after, 0

    def __getattr__(self, attr: str):
        method = getattr(self.client, attr)
        if attr not in WRITES:
            return method

        def write(*args, **kwargs):
            if self.writes == self.after:
                raise Crash(f"before write {self.after}: {attr}{args}")
            self.writes += 1
            return method(*args, **kwargs)

        return write


UNLOCKED = contextlib.nullcontext  # one writer per test: the lock is tested above


def _promoted(client, name: str, versions: list[str]) -> None:
    previous = None
    for version in versions:
        assert promote_version(client, name, version, previous, lock=UNLOCKED()).promoted
        previous = version


@pytest.mark.parametrize("crash_at", range(7))
def test_a_crash_between_promotion_writes_leaves_a_chain_rollback_follows(store, crash_at):
    name = f"crash-promote-{crash_at}"
    v1, v2, v3 = _versions(store, name, ["passed", "passed", "passed"])
    client = MlflowClient(store)
    _promoted(client, name, [v1, v2])
    crashing = CrashingClient(client, crash_at)
    try:
        promote_version(crashing, name, v3, v2, lock=UNLOCKED())
        crashed = False
    except Crash:
        crashed = True
    assert crashed == (crash_at < 6)  # link, champion, previous-champion, three record tags
    champion = champion_version(client, name)
    assert champion in (v2, v3)
    assert _alias(client, name, PREVIOUS) != champion or champion is None
    outcome = rollback_champion(client, name, lock=UNLOCKED())
    expected = v2 if champion == v3 else v1
    assert (outcome.champion, champion_version(client, name)) == (expected, expected)
    assert _alias(client, name, PREVIOUS) != expected


@pytest.mark.parametrize("crash_at", range(5))
def test_a_crash_between_rollback_writes_leaves_a_chain_rollback_follows(store, crash_at):
    name = f"crash-rollback-{crash_at}"
    v1, v2, v3 = _versions(store, name, ["passed", "passed", "passed"])
    client = MlflowClient(store)
    _promoted(client, name, [v1, v2, v3])
    try:
        rollback_champion(CrashingClient(client, crash_at), name, lock=UNLOCKED())
    except Crash:
        pass
    champion = champion_version(client, name)
    assert champion in (v2, v3)
    outcome = rollback_champion(client, name, lock=UNLOCKED())
    expected = v1 if champion == v2 else v2
    assert champion_version(client, name) == outcome.champion == expected


def test_rollback_refuses_a_broken_chain_with_the_fix(store):
    name = "broken"
    v1, v2, v3 = _versions(store, name, ["passed", "passed", "passed"])
    client = MlflowClient(store)
    _promoted(client, name, [v1, v2])
    # what an interrupted promotion of the old write order left: previous-champion == champion
    client.set_registered_model_alias(name, PREVIOUS, v2)
    client.set_model_version_tag(name, v2, "tunegate.previous_champion", "")
    with pytest.raises(registry.RegistryError, match=r"chain is broken at v2.*tunegate promote"):
        rollback_champion(client, name, lock=UNLOCKED())
    assert champion_version(client, name) == v2
    client.set_model_version_tag(name, v2, "tunegate.previous_champion", v2)
    with pytest.raises(registry.RegistryError, match="links to itself"):
        rollback_champion(client, name, lock=UNLOCKED())
    client.set_model_version_tag(name, v2, "tunegate.previous_champion", "99")
    with pytest.raises(registry.RegistryError, match="v99 no longer exists"):
        rollback_champion(client, name, lock=UNLOCKED())
    # a stale alias that disagrees with the link is ignored: the link is the chain
    client.set_model_version_tag(name, v3, "gate", "passed")
    client.set_model_version_tag(name, v2, "tunegate.previous_champion", v1)
    client.set_registered_model_alias(name, PREVIOUS, v3)
    assert rollback_champion(client, name, lock=UNLOCKED()).champion == v1


@pytest.mark.parametrize(
    ("label", "spelling"), [("zero", "0{v}"), ("lead", " {v}"), ("plus", "+{v}"), ("trail", "{v} ")]
)
def test_a_champion_spelled_differently_is_still_the_champion(store, label, spelling):
    name = f"spelling-{label}"
    v1, v2 = _versions(store, name, ["passed", "passed"])
    client = MlflowClient(store)
    _promoted(client, name, [v1, v2])
    again = promote_version(
        client, name, spelling.format(v=v2), None, check_expected=False, lock=UNLOCKED()
    )
    assert not again.promoted and "already the champion" in again.note
    assert (_alias(client, name, CHAMPION), _alias(client, name, PREVIOUS)) == (v2, v1)
    over = promote_version(client, name, v1, spelling.format(v=v2), lock=UNLOCKED())
    assert over.promoted  # the expected champion compared in canonical form
    assert rollback_champion(client, name, lock=UNLOCKED()).champion == v2


def test_rollback_does_not_lead_back_to_the_version_it_rolled_back(store):
    name = "ping-pong"
    v1, v2 = _versions(store, name, ["passed", "passed"])
    client = MlflowClient(store)
    _promoted(client, name, [v1, v2, v1])  # v1 again, over v2
    assert rollback_champion(client, name, lock=UNLOCKED()).champion == v2
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        rollback_champion(client, name, lock=UNLOCKED())
    assert champion_version(client, name) == v2
