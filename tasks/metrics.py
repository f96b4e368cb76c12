"""The one table of headline metrics per task type.

The gate decides on a task's `gate` metric; the registry tags every version with the task's
`tagged` metrics; the model card shows the `shown` ones under their display name; `tunegate
models` lists the columns in `LISTED`. A new task type adds its row here (and its gate targets
in `tasks.gate.GateSettings`); nothing else names metrics per task.
"""

from __future__ import annotations

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
