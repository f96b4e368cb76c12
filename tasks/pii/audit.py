"""What the PII stage found, as counts only: never a value, so the audit may be logged anywhere."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PIIAudit:
    """Counts per entity type and per column, no values."""

    records: int = 0
    records_with_pii: int = 0
    entities: Counter = field(default_factory=Counter)
    by_column: dict[str, Counter] = field(default_factory=dict)
    rows_dropped: int = 0
    residual_hits: Counter = field(default_factory=Counter)
    records_unreadable: int = 0

    def add(self, counts: Counter, column: str = "text") -> None:
        """One record scrubbed in one column."""
        self.add_row({column: counts})

    def add_row(self, per_column: dict[str, Counter], residual: Counter | None = None) -> None:
        """One record, scrubbed in one or more columns (input text; target for generation),
        and the entity types the residual scan still found in it."""
        self.records += 1
        if any(per_column.values()):
            self.records_with_pii += 1
        self.add_counts(per_column)
        if residual:
            self.residual_hits.update(residual)

    def add_counts(self, per_column: dict[str, Counter]) -> None:
        """Entities found per column, without counting a record (quarantined rows are counted
        where validation quarantined them)."""
        for column, counts in per_column.items():
            self.entities.update(counts)
            self.by_column.setdefault(column, Counter()).update(counts)

    def as_dict(self) -> dict:
        """The audit as the summary JSON and MLflow record it, keys sorted."""
        return {
            "records": self.records,
            "records_with_pii": self.records_with_pii,
            "entities": dict(sorted(self.entities.items())),
            "by_column": {c: dict(sorted(v.items())) for c, v in sorted(self.by_column.items())},
            "rows_dropped": self.rows_dropped,
            "residual_hits": dict(sorted(self.residual_hits.items())),
            "records_unreadable": self.records_unreadable,
        }

    def table(self) -> list[dict]:
        """One row per (column, entity type): the Prefect table artifact."""
        return [
            {"column": c, "entity": e, "count": n}
            for c, counts in sorted(self.by_column.items())
            for e, n in sorted(counts.items())
        ]
