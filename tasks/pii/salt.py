"""The hash operator's salt: a secret, so never a config key, a parameter or a log value.

Config values travel in Prefect deployment and flow-run parameters and in MLflow params, where
anyone with UI access reads them; a salt there (or a public default) lets them hash guessed
values (every SSN, a phone book) and reverse the `<SSN_3fa9...>` tokens. So the salt comes from
the environment of the process that scrubs (`TUNEGATE_PII_SALT`) or from a Prefect Secret
block named by `pii.salt_secret_block`, and a run that needs one and has none is refused.

We do not generate a per-installation salt: the point of `hash` over placeholders is that a
value hashes the same everywhere (joinable across runs and files), and a salt made up on each
machine would silently differ between the CLI, the workers and a remote training pool.
"""

from __future__ import annotations

import functools
import hashlib
import os

from tasks.pii.settings import Operator, PIISettings

SALT_ENV = "TUNEGATE_PII_SALT"
MIN_SALT_CHARS = 16


class MissingSalt(ValueError):
    """The hash operator is configured but no salt is available; the message says what to set."""


def uses_hash(settings: PIISettings) -> bool:
    """True when some scrubbed entity type is replaced by its salted hash."""
    return settings.enabled and any(
        settings.operator(e) is Operator.hash for e in settings.entities
    )


@functools.lru_cache(maxsize=4)
def _secret_block(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError as exc:
        raise MissingSalt(
            f"pii.salt_secret_block: no Prefect Secret block named {name!r} ({exc}); create "
            f"it (prefect block create secret) or export {SALT_ENV}"
        ) from None
    return str(value)


def hash_salt(settings: PIISettings) -> str:
    """The salt: `TUNEGATE_PII_SALT`, else the Secret block `pii.salt_secret_block`."""
    salt = os.environ.get(SALT_ENV, "")
    if not salt and settings.salt_secret_block:
        salt = _secret_block(settings.salt_secret_block)
    if not salt:
        hashed = sorted(e for e in settings.entities if settings.operator(e) is Operator.hash)
        raise MissingSalt(
            f"pii.operators: {', '.join(hashed) or 'an entity type'} uses hash, which needs a "
            f"secret salt: export {SALT_ENV}=<{MIN_SALT_CHARS}+ random characters> (the same on "
            f"every worker, e.g. `openssl rand -hex 32`), or store it in a Prefect Secret block "
            f"and set pii.salt_secret_block=<block name>"
        )
    if len(salt) < MIN_SALT_CHARS:
        raise MissingSalt(
            f"{SALT_ENV} (or pii.salt_secret_block): the salt has {len(salt)} characters; use "
            f"at least {MIN_SALT_CHARS} random ones (e.g. `openssl rand -hex 32`): a short salt "
            f"lets anyone hash guessed values and match them"
        )
    return salt


def require_salt(settings: PIISettings) -> None:
    """Refuse a run that will hash before it starts work (no-op without the hash operator)."""
    if uses_hash(settings):
        hash_salt(settings)


def salt_fingerprint(settings: PIISettings) -> str:
    """A one-way tag of the salt for cache keys (a new salt must not reuse old hashes); '' when
    nothing is hashed."""
    if not uses_hash(settings):
        return ""
    return hashlib.sha256(b"tunegate-salt-fingerprint|" + hash_salt(settings).encode()).hexdigest()
