"""Lock names: safe model names keep today's names; any other string is escaped and hashed."""

from __future__ import annotations

import re

import pytest

import tasks.locks as locks
from tasks.locks import ensure_lock, lock_name, promotion_lock_name, retrain_lock_name

pytestmark = pytest.mark.unit

PREFECT_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def test_safe_names_keep_todays_lock_names():
    assert retrain_lock_name("tunegate-classifier") == "tunegate-retrain-tunegate-classifier"
    assert promotion_lock_name("tiny-loans") == "tunegate-promote-tiny-loans"
    assert lock_name("promote", "Loans_v2.1") == "tunegate-promote-Loans_v2.1"


@pytest.mark.parametrize(
    "model", ["loans model", "team/loans", "loans%20", "ünïcode", "a" * 300, "../../etc", "*"]
)
def test_unsafe_names_are_escaped_and_bounded(model):
    name = retrain_lock_name(model)
    assert PREFECT_SAFE.fullmatch(name), name
    assert name.startswith("tunegate-retrain-")
    assert len(name) <= len("tunegate-retrain-") + 40 + 1 + 12
    assert name == retrain_lock_name(model)  # stable across calls and processes


def test_names_that_slug_alike_get_different_locks():
    names = {promotion_lock_name(m) for m in ("a b", "a/b", "a:b", "a-b")}
    assert len(names) == 4


def test_retrain_and_promotion_locks_differ():
    assert retrain_lock_name("m") != promotion_lock_name("m")
    assert retrain_lock_name("a b") != promotion_lock_name("a b")


class FakeClient:
    def __init__(self, existing: set[str], race: bool = False) -> None:
        self.existing = existing
        self.race = race
        self.created: list[tuple[str, int]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read_global_concurrency_limit_by_name(self, name: str) -> object:
        from prefect.exceptions import ObjectNotFound

        if name not in self.existing:
            raise ObjectNotFound(http_exc=Exception(name))
        return object()

    def create_global_concurrency_limit(self, limit: object) -> None:
        from prefect.exceptions import ObjectAlreadyExists

        if self.race:
            raise ObjectAlreadyExists(http_exc=Exception(limit.name))
        self.created.append((limit.name, limit.limit))


def test_ensure_lock_creates_a_missing_limit_with_one_slot(monkeypatch):
    client = FakeClient(existing=set())
    monkeypatch.setattr(locks, "get_client", lambda sync_client: client)
    ensure_lock("tunegate-retrain-m")
    assert client.created == [("tunegate-retrain-m", 1)]


def test_ensure_lock_leaves_an_existing_limit_and_tolerates_a_concurrent_creator(monkeypatch):
    client = FakeClient(existing={"tunegate-retrain-m"})
    monkeypatch.setattr(locks, "get_client", lambda sync_client: client)
    ensure_lock("tunegate-retrain-m")
    assert client.created == []
    racing = FakeClient(existing=set(), race=True)
    monkeypatch.setattr(locks, "get_client", lambda sync_client: racing)
    ensure_lock("tunegate-retrain-m")  # no error
    assert racing.created == []
