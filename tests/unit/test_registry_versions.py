"""Registry input and notification without a store: version numbers are canonicalised the way
MLflow resolves them (or refused with the fix), and `tunegate.champion.moved` is emitted only
when a Prefect API is configured."""

from __future__ import annotations

import pytest

from tasks.registry import CHAMPION_MOVED, RegistryError, announce_champion, canonical_version

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("given", "canonical"),
    [("3", "3"), ("03", "3"), (" 3", "3"), ("3 ", "3"), ("+3", "3"), ("0012", "12"), (7, "7")],
)
def test_versions_mlflow_resolves_alike_are_one_version(given, canonical):
    assert canonical_version(given) == canonical


@pytest.mark.parametrize(
    "given", ["", " ", "0", "00", "-3", "v3", "3.0", "3a", "++3", "1e3", "٣", "3 4"]
)
def test_what_is_not_a_version_number_is_refused_with_the_fix(given):
    with pytest.raises(RegistryError, match=r"not a registered version number.*tunegate models"):
        canonical_version(given)


def test_cli_promote_refuses_a_non_version_before_opening_any_store(tmp_path, capsys):
    from tunegate.cli import main

    db = tmp_path / "mlflow.db"
    code = main(["promote", "v3", "--set", f"mlflow.tracking_uri=sqlite:///{db}"])
    assert code == 2
    assert "'v3' is not a registered version number" in capsys.readouterr().err
    assert not db.exists()


@pytest.fixture
def emitted(monkeypatch) -> list[dict]:
    import prefect.events

    calls: list[dict] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: calls.append(kw) or object())
    return calls


def test_no_champion_event_without_a_prefect_api(emitted):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert announce_champion("m", "3", "2") is False
    assert emitted == []


def test_champion_event_names_model_alias_and_versions_with_the_name_escaped(emitted):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = "loans/risk model?*"
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert announce_champion(name, "3", None) is True
    (call,) = emitted
    assert call["event"] == CHAMPION_MOVED == "tunegate.champion.moved"
    assert call["payload"] == {
        "model_name": name,
        "alias": "champion",
        "version": "3",
        "previous_version": None,
    }
    resource_id = call["resource"]["prefect.resource.id"]
    assert resource_id == "tunegate.registered-model.loans%2Frisk%20model%3F%2A"
