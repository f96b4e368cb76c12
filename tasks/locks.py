"""Names and creates the Prefect global concurrency limits tunegate holds.

Two locks per registered model: `retrain` (retrains of one model never overlap, whichever
deployment started them) and `promote` (the champion alias's read-compare-set is serialised).
Registered-model names are arbitrary user strings, so a name outside `[A-Za-z0-9_.-]` (or
longer than 64 characters) is never used raw: it is slugged, cut and suffixed with a hash of
the original, which keeps two names that slug alike ("a b", "a/b") on different locks.
Already-safe names keep today's lock names.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from prefect.client.orchestration import get_client

LockKind = Literal["retrain", "promote"]
_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SLUG_CHARS = 40


def lock_name(kind: LockKind, registered_model: str) -> str:
    """`tunegate-<kind>-<model>`; an unsafe model name becomes `<slug>-<12 hex of sha256>`."""
    if _SAFE.fullmatch(registered_model):
        return f"tunegate-{kind}-{registered_model}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", registered_model).strip("-")[:_SLUG_CHARS]
    digest = hashlib.sha256(registered_model.encode()).hexdigest()[:12]
    return f"tunegate-{kind}-{slug or 'model'}-{digest}"


def retrain_lock_name(registered_model: str) -> str:
    return lock_name("retrain", registered_model)


def promotion_lock_name(registered_model: str) -> str:
    return lock_name("promote", registered_model)


def ensure_lock(name: str, limit: int = 1) -> None:
    """Create the global concurrency limit `name` unless it exists (a concurrent creator wins)."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit)
                )
            except ObjectAlreadyExists:
                pass
