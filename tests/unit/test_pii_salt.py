"""The hash operator's salt: read from the environment or a Prefect Secret block, never from the
config, so it never reaches Prefect deployment / flow-run parameters or MLflow params."""

from __future__ import annotations

import json
import re
import types

import pytest

from flows.config import ConfigError, load_config
from tasks.pii import PIISettings, scrub_text
from tasks.pii.salt import SALT_ENV, MissingSalt, hash_salt, require_salt, salt_fingerprint

pytestmark = pytest.mark.unit

SALT = "s3cr3t-salt-value-7f2c9e41d0"
HASHING = PIISettings(operators={"US_SSN": "hash"})


def test_the_salt_is_not_a_config_key():
    with pytest.raises(
        ValueError, match="pii.hash_salt: no longer a config key.*TUNEGATE_PII_SALT"
    ):
        PIISettings(hash_salt=SALT)


def test_hashing_without_a_salt_is_refused_with_what_to_set(monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    with pytest.raises(MissingSalt, match="US_SSN uses hash.*export TUNEGATE_PII_SALT"):
        require_salt(HASHING)
    with pytest.raises(MissingSalt):
        scrub_text("SSN 123-45-6789", HASHING)
    require_salt(PIISettings())  # placeholders (the default) need no salt
    monkeypatch.setenv(SALT_ENV, "short")
    with pytest.raises(MissingSalt, match="at least 16"):
        require_salt(HASHING)


def test_the_salt_shapes_the_hash_and_the_cache_key(monkeypatch):
    monkeypatch.setenv(SALT_ENV, SALT)
    first = scrub_text("SSN 123-45-6789", HASHING)[0]
    fingerprint = salt_fingerprint(HASHING)
    assert re.fullmatch(r"SSN <SSN_[0-9a-f]{10}>", first)
    monkeypatch.setenv(SALT_ENV, SALT + "-rotated")
    assert scrub_text("SSN 123-45-6789", HASHING)[0] != first
    assert salt_fingerprint(HASHING) != fingerprint  # a cached scrub is not reused
    assert SALT not in fingerprint and salt_fingerprint(PIISettings()) == ""


def test_a_prefect_secret_block_supplies_the_salt(monkeypatch):
    import prefect.blocks.system as system

    loaded = []

    def load(name: str) -> object:
        loaded.append(name)
        return types.SimpleNamespace(get=lambda: SALT)

    monkeypatch.delenv(SALT_ENV, raising=False)
    monkeypatch.setattr(system.Secret, "load", staticmethod(load))
    settings = PIISettings(operators={"US_SSN": "hash"}, salt_secret_block="pii-salt-for-test")
    assert hash_salt(settings) == SALT
    assert loaded == ["pii-salt-for-test"]


def test_no_salt_value_reaches_flow_run_or_deployment_parameters(monkeypatch, tmp_path):
    from deployments.deploy import config_parameters
    from flows.retrain import retrain

    monkeypatch.setenv(SALT_ENV, SALT)
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello", "label": "a"}\n')
    config = load_config(
        None,
        [f"data.path={data}", "pii.operators={US_SSN: hash, EMAIL_ADDRESS: hash}"],
    )
    # exactly what Prefect stores as the flow run's parameters, and a deployment's defaults
    flow_run_parameters = retrain.serialize_parameters({"config": config})
    seen = json.dumps([flow_run_parameters, config_parameters(config), config.flat()], default=str)
    assert SALT not in seen
    assert [k for k in config.flat() if "salt" in k] == ["pii.salt_secret_block"]  # a name only
    with pytest.raises(ConfigError, match="pii.hash_salt: no longer a config key"):
        load_config(None, [f"data.path={data}", f"pii.hash_salt={SALT}"])
