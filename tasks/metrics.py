"""The one table of headline metrics per task type.

The gate decides on a task's `gate` metric; the registry tags every version with the task's
`tagged` metrics; the model card shows the `shown` ones under their display name; `tunegate
models` lists the columns in `LISTED`. A new task type adds its row here (and its gate targets
in `tasks.gate.GateSettings`); nothing else names metrics per task.

`name_keys` is the one way a label, id or column name becomes part of a name (a metric, a
param, a file, a cache key): user strings are escaped or hashed, never used raw.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Task = Literal["classification", "generation"]


@dataclass(frozen=True)
class Headline:
    """One headline metric of a task: its MLflow key and where it appears."""

    key: str
    label: str
    gate: bool = False  # the metric the promotion gate decides on (one per task)
    shown: bool = True  # in the registered version's description (the model card)
    listed: bool = False  # a column of `tunegate models`


HEADLINES: dict[str, tuple[Headline, ...]] = {
    "classification": (
        Headline("f1_macro", "macro-F1", gate=True, listed=True),
        Headline("accuracy", "accuracy", listed=True),
        Headline("f1_weighted", "weighted F1", shown=False),
        Headline("latency_p95_s", "p95 latency (s)", listed=True),
    ),
    "generation": (
        Headline("rouge1", "ROUGE-1", gate=True, listed=True),
        Headline("rougeL", "ROUGE-L"),
        Headline("unsupported_rate", "unsupported-detail rate"),
        Headline("latency_p95_s", "p95 latency (s)", listed=True),
    ),
}

# task -> the metric the gate decides on (and the paired bootstrap compares)
HEADLINE: dict[str, str] = {
    task: next(h.key for h in rows if h.gate) for task, rows in HEADLINES.items()
}


def _listed() -> tuple[str, ...]:
    """Every task's gate metric first, then the other listed ones, each once."""
    keys = list(HEADLINE.values())
    for rows in HEADLINES.values():
        keys += [h.key for h in rows if h.listed and h.key not in keys]
    return tuple(keys)


LISTED: tuple[str, ...] = _listed()


def tagged_metrics(task: str, metrics: dict[str, float]) -> dict[str, str]:
    """The registered version's metric tags: the task's headline metrics that were measured."""
    return {h.key: f"{metrics[h.key]:.4f}" for h in HEADLINES[task] if h.key in metrics}


def shown_metrics(task: str, metrics: dict[str, float]) -> str:
    """'macro-F1 0.9123, accuracy 0.9200, ...' for the model card."""
    return ", ".join(
        f"{h.label} {metrics[h.key]:.4f}" for h in HEADLINES[task] if h.shown and h.key in metrics
    )


# --------------------------------------------------- user strings inside names

# What MLflow names, file systems and cache keys all accept in one path segment of a name.
_SAFE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_.-]+")


def _digest(name: str, size: int) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:size]


def _slug(name: str) -> str:
    """The readable part of a key: ASCII letters, digits, `_ . -`, at most 40 characters."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return _UNSAFE_RUN.sub("_", ascii_name).strip("_.-")[:40].rstrip("_.-") or "x"


def name_key(name: str) -> str:
    """A user string (a label, a column name, an id) as a key that can go into an MLflow
    metric, param or tag name, a file name or a cache key.

    Labels, ids and columns are arbitrary user strings: `reverted_card_payment?` is refused in
    an MLflow metric name, `a/b` makes a hierarchy, and `Refund` and `refund` are one file on a
    case-insensitive disk (and one metric in a case-insensitive database). A name that is
    already safe (lower-case letters, digits, `_ . -`, up to 64 characters) stays as it is;
    any other becomes its readable part plus a hash of the whole string. The key depends on
    the name alone, so a label has the same metric names in every run. Record the mapping
    (`name_keys`) next to whatever uses the keys.
    """
    if _SAFE.fullmatch(name) and name == name.lower():
        return name
    return f"{_slug(name)}-{_digest(name, 8)}"


def name_keys(names: Iterable[str]) -> dict[str, str]:
    """`name -> name_key(name)` for a run's labels (or columns), checked to be unique even
    ignoring case (only names chosen to look like another one's key could collide)."""
    keys = {name: name_key(name) for name in dict.fromkeys(names)}
    seen: dict[str, str] = {}
    for name, key in keys.items():
        other = seen.setdefault(key.lower(), name)
        if other != name:
            raise ValueError(
                f"the names {other!r} and {name!r} map to the same key {key!r}: rename one"
            )
    return keys


def per_class_metrics(metrics: dict[str, float], labels: Iterable[str]) -> dict[str, float]:
    """`metrics` with each per-class entry (`<metric>/<label>`) renamed `<metric>/<key>` for
    the given labels; other entries unchanged."""
    keys = name_keys(labels)
    out: dict[str, float] = {}
    for name, value in metrics.items():
        prefix, _, label = name.partition("/")
        out[f"{prefix}/{keys[label]}" if label in keys else name] = value
    return out
