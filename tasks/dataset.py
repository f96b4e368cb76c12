"""The data set a run trains on: the base data file and the feedback batches, read as records.

Nothing merged is written to disk. Each record keeps its origin: its key (`_line`) is its
line in its own source plus the source's offset (`SourceSpan`), so a quarantine reason names
the base file and line, or the feedback batch and line, where the row really is; a line
that fails to parse in either is quarantined where it is, never rewritten or dropped.

Rows are keyed by normalised text: a feedback row equal to an earlier row (text and label) is
dropped and counted; a feedback row with the same text and a new label replaces the earlier
row (re-annotation). Feedback rows keep the base file's columns (and `prediction_id`). Validation and scrubbing both
read the data set through `load_dataset`, so they see the same rows under the same keys.
"""

from __future__ import annotations

from collections import Counter

from prefect import task

from tasks import stage_logger
from tasks.feedback import FeedbackInput, FeedbackMerge, FeedbackSettings, FeedbackStore
from tasks.load import (
    DataSettings,
    LoadedData,
    SourceSpan,
    loaded_from,
    normalise_text,
    parse_jsonl,
    read_records,
)

FEEDBACK_SOURCE = "feedback:"  # + batch id: a row's `_source` in the quarantine file
PRODUCTION_COLUMN = "prediction_id"  # a feedback row about a served prediction carries it


def load_dataset(data: DataSettings, feedback: FeedbackInput | None = None) -> LoadedData:
    """`data.path`, plus the feedback batches when there are any, as one set of records."""
    if feedback is None or not feedback.batches:
        return read_records(data.path)
    return merge_records(data, FeedbackStore(feedback.store), feedback.batches)[0]


def merge_records(
    data: DataSettings, store: FeedbackStore, batch_ids: list[str]
) -> tuple[LoadedData, FeedbackMerge]:
    """Base records + the batches' records, each under its own key; and what the merge did."""
    base = read_records(data.path)
    columns = [c for c in base.frame.columns if c != "_line"]
    records: dict[int, dict] = dict(base.records or {})
    unreadable = list(base.unreadable)
    spans = list(base.sources)
    offset = spans[-1].offset + spans[-1].lines
    index: dict[str, int] = {}
    for key, record in records.items():
        norm = _norm(record.get(data.text_column))
        if norm is not None:
            index.setdefault(norm, key)
    merge = FeedbackMerge(batches=list(batch_ids))
    for batch_id in batch_ids:
        rows, bad, lines = parse_jsonl(store.read_batch_bytes(batch_id), offset)
        spans.append(SourceSpan(name=FEEDBACK_SOURCE + batch_id, offset=offset, lines=lines))
        offset += lines
        unreadable += bad
        for row in rows:
            merge.rows += 1
            key = int(row["_line"])
            record = {c: row.get(c) for c in columns}
            if row.get(PRODUCTION_COLUMN):  # kept: the gate's production-corrections slice
                record[PRODUCTION_COLUMN] = row[PRODUCTION_COLUMN]
            norm = _norm(record.get(data.text_column))
            earlier = index.get(norm) if norm is not None else None
            if earlier is not None and earlier in records:
                if records[earlier].get(data.y_column) == record.get(data.y_column):
                    merge.duplicates += 1
                    continue
                merge.relabelled += 1
                del records[earlier]
            if norm is not None:
                index[norm] = key
            records[key] = record
            merge.added += 1
    rows_with_keys = [{**record, "_line": key} for key, record in records.items()]
    return loaded_from(rows_with_keys, sorted(unreadable, key=_line), *spans), merge


def _line(row: dict) -> int:
    return int(row["_line"])


def _norm(text: object) -> str | None:
    return normalise_text(text) if isinstance(text, str) and text.strip() else None


def merge_feedback(
    data: DataSettings, settings: FeedbackSettings, store: FeedbackStore
) -> FeedbackMerge:
    """Which batches this run reads (every active one), what merging them does, and the raw
    batches deleted under `feedback.retention_days` first."""
    pruned = store.prune(settings.retention_days)
    batch_ids = store.active_ids()
    if not batch_ids:
        return FeedbackMerge(pruned=pruned)
    included = store.included_ids()
    merge = merge_records(data, store, batch_ids)[1]
    merge.new_batches = [b for b in batch_ids if b not in included]
    merge.pruned = pruned
    merge.source = FeedbackInput(store=settings.store, batches=batch_ids)
    return merge


def batches_to_quarantine(
    sources: list[SourceSpan], quarantined: dict[int, str], accepted: list[int], limit: float
) -> dict[str, str]:
    """Feedback batches with more than `limit` of their rows quarantined -> the reason.

    The reason holds counts and check names only (validation's reasons), never a value."""
    spans = [s for s in sources if s.name.startswith(FEEDBACK_SOURCE)]
    out: dict[str, str] = {}
    for span in spans:
        inside = range(span.offset + 1, span.offset + span.lines + 1)
        bad = Counter(r for line, r in quarantined.items() if line in inside)
        good = sum(1 for line in accepted if line in inside)
        total = sum(bad.values()) + good
        if total and sum(bad.values()) / total > limit:
            top = ", ".join(f"{reason} ({n})" for reason, n in bad.most_common(3))
            out[span.name.removeprefix(FEEDBACK_SOURCE)] = (
                f"{sum(bad.values())} of {total} rows quarantined, more than "
                f"feedback.max_batch_quarantine_fraction={limit}: {top}"
            )
    return out


@task(name="merge-feedback")
def merge_feedback_task(
    data: DataSettings, settings: FeedbackSettings, run_name: str
) -> FeedbackMerge:
    """The feedback this run reads with the data file (nothing is written but the pruning)."""
    if not settings.enabled:
        return FeedbackMerge()
    merge = merge_feedback(data, settings, FeedbackStore(settings.store))
    stage_logger(__name__).info(
        "feedback for %s: %d batches (%d new), %d rows, %d duplicates dropped, %d relabelled; "
        "%d raw batches deleted after feedback.retention_days",
        run_name,
        len(merge.batches),
        len(merge.new_batches),
        merge.rows,
        merge.duplicates,
        merge.relabelled,
        len(merge.pruned),
    )
    return merge
