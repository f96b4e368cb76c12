"""Scrubbing: replace detected values per operator, scan again, and audit, in one loop.

Every entry point (`scrub_dataset` for the flow, `scrub_file` for `tunegate scrub`,
`scrub_texts` and `scrub_record`) is a thin caller of `scrub_records`, which scrubs the columns
of a batch of records and adds each record to a `PIIAudit`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
from prefect import task
from pydantic import BaseModel

from tasks import stage_logger
from tasks.dataset import load_dataset
from tasks.load import DataSettings, LoadedData, read_records, write_records, write_rows
from tasks.pii.audit import PIIAudit
from tasks.pii.engine import get_scrubber
from tasks.pii.salt import hash_salt, require_salt, salt_fingerprint
from tasks.pii.settings import PLACEHOLDER_NAMES, Operator, PIISettings
from tasks.progress import Progress
from tasks.validate import ValidationReport

PLACEHOLDER_RE = re.compile(r"<[A-Z]+_[0-9a-f]+>")


@dataclass
class ScrubbedText:
    text: str
    counts: Counter
    drop: bool = False  # an entity with operator drop_row was found
    residual: Counter = field(default_factory=Counter)  # entity types the residual scan found


def replace_spans(text: str, spans: list, settings: PIISettings) -> tuple[str, Counter, bool]:
    """Apply each entity's operator to its spans; placeholders are numbered per value."""
    numbering: dict[tuple[str, str], int] = {}
    per_type: Counter = Counter()
    counts: Counter = Counter()
    drop = False
    pieces: list[str] = []
    cursor = 0
    for r in spans:
        value = text[r.start : r.end]
        op = settings.operator(r.entity_type)
        tag = PLACEHOLDER_NAMES.get(r.entity_type, r.entity_type)
        counts[r.entity_type] += 1
        if op is Operator.mask:
            replacement = re.sub(r"\w", "*", value)
        elif op is Operator.hash:
            digest = hashlib.sha256((hash_salt(settings) + value).encode()).hexdigest()[:10]
            replacement = f"<{tag}_{digest}>"
        else:
            drop = drop or op is Operator.drop_row
            key = (r.entity_type, value)
            if key not in numbering:
                per_type[r.entity_type] += 1
                numbering[key] = per_type[r.entity_type]
            replacement = f"<{tag}_{numbering[key]}>"
        pieces.append(text[cursor : r.start])
        pieces.append(replacement)
        cursor = r.end
    pieces.append(text[cursor:])
    return "".join(pieces), counts, drop


def residual_scan(text: str, settings: PIISettings) -> Counter:
    """Entity types the detectors still find in scrubbed text, outside our placeholders."""
    scrubber = get_scrubber(settings)
    found: Counter = Counter()
    masked = PLACEHOLDER_RE.sub(lambda m: "X" * len(m.group()), text)
    for r in scrubber.analyze(masked, threshold=settings.residual_score_threshold):
        value = masked[r.start : r.end]
        if value.strip("X* -.") == "":  # only placeholder or mask characters
            continue
        found[r.entity_type] += 1
    return found


def scrub_one(text: str, settings: PIISettings) -> ScrubbedText:
    if not text or not settings.enabled:
        return ScrubbedText(text, Counter())
    spans = get_scrubber(settings).analyze(text)
    scrubbed, counts, drop = replace_spans(text, spans, settings)
    return ScrubbedText(scrubbed, counts, drop, residual_scan(scrubbed, settings))


def scrub_text(text: str, settings: PIISettings) -> tuple[str, Counter]:
    """Replace every detected entity per its operator. Returns the text and counts per type."""
    out = scrub_one(text, settings)
    return out.text, out.counts


def _scrub_chunk(args: tuple[list[str | None], str]) -> list[ScrubbedText | None]:
    texts, settings_json = args
    settings = PIISettings.model_validate_json(settings_json)
    return [None if t is None else scrub_one(t, settings) for t in texts]


STEP = 2000  # values per progress step; a batch of at least this many uses the workers


def scrub_many(
    texts: list[str | None], settings: PIISettings, progress: Progress | None = None
) -> list[ScrubbedText | None]:
    """Scrub a batch; batches of 2,000+ texts use `settings.processes` worker processes.

    One pool serves the whole batch, forked once with the parent's objects frozen out of the
    workers' garbage collection (`gc.freeze`): a pool per 2,000 values re-forked a parent whose
    heap grows with the rows, n / 2,000 times, and each worker's collections walked (and so
    copied) that heap, which made the stage superlinear (50k rows: 17 s CPU with 2 workers,
    10.5 s with none). `progress` advances every 2,000 values at most.
    """
    require_salt(settings)  # before any work (and resolved here, so forked workers inherit it)
    settings_json = settings.model_dump_json()
    out: list[ScrubbedText | None] = []
    if settings.processes <= 1 or len(texts) < STEP:
        for start in range(0, len(texts), STEP):
            out.extend(_scrub_chunk((texts[start : start + STEP], settings_json)))
            if progress is not None:
                progress.advance(len(texts[start : start + STEP]))
        return out
    get_scrubber(settings)  # the gazetteers load once, here; forked workers inherit them
    size = min(STEP, -(-len(texts) // (settings.processes * 4)))
    chunks = [(texts[i : i + size], settings_json) for i in range(0, len(texts), size)]
    import gc
    import multiprocessing

    context = multiprocessing.get_context("fork")
    gc.freeze()
    try:
        with ProcessPoolExecutor(settings.processes, mp_context=context) as pool:
            for part in pool.map(_scrub_chunk, chunks):
                out.extend(part)
                if progress is not None:
                    progress.advance(len(part))
    finally:
        gc.unfreeze()
    return out


@dataclass
class ScrubbedRecord:
    """One record's scrubbed values by column; `None` where a value was not scrubbed."""

    values: dict[str, ScrubbedText | None]

    def counts(self) -> dict[str, Counter]:
        """Entities found per column (empty where nothing was scrubbed)."""
        return {c: r.counts if r else Counter() for c, r in self.values.items()}

    def residual(self) -> Counter:
        """Entity types the residual scan still found, over all columns."""
        found: Counter = Counter()
        for result in filter(None, self.values.values()):
            found.update(result.residual)
        return found

    def dropped(self, settings: PIISettings) -> set[str]:
        """Entity types found whose operator is drop_row: the record must leave the data."""
        return {
            e
            for result in filter(None, self.values.values())
            if result.drop
            for e in result.counts
            if settings.operator(e) is Operator.drop_row
        }

    def value(self, column: str, original: object, *, redact_residual: bool) -> object:
        """What to write for `column`: the scrubbed text, `original` where nothing was scrubbed,
        or `<REDACTED>` for a residual hit where the row cannot be quarantined instead."""
        result = self.values.get(column)
        if result is None:
            return original
        return "<REDACTED>" if redact_residual and result.residual else result.text


def scrub_records(
    columns: dict[str, list[str | None]],
    settings: PIISettings,
    audit: PIIAudit,
    *,
    rows: int,
    count_records: bool = True,
    audit_prefix: str = "",
) -> list[ScrubbedRecord]:
    """The one scrub loop: every column of `rows` records, then one audit entry per record.

    `columns` holds `rows` values per column; a `None` value is not scrubbed, and nothing is
    while `pii.enabled` is off. `count_records=False` adds entity counts only (quarantined
    rows, already counted by validation), under the column names prefixed with `audit_prefix`.
    """
    progress = Progress("scrub", total=rows * len(columns) if settings.enabled else 0)
    results = {
        c: scrub_many(values, settings, progress) if settings.enabled else [None] * rows
        for c, values in columns.items()
    }
    progress.done()
    records = []
    for i in range(rows):
        record = ScrubbedRecord({c: results[c][i] for c in columns})
        counts = {audit_prefix + c: n for c, n in record.counts().items()}
        if count_records:
            audit.add_row(counts, record.residual())
        else:
            audit.add_counts(counts)
        records.append(record)
    return records


def scrub_texts(
    texts: list[str | None], settings: PIISettings, column: str = "text"
) -> tuple[list[str | None], PIIAudit]:
    """Scrub a batch of texts; `None` stays `None`. Returns the texts and the audit."""
    audit = PIIAudit()
    records = scrub_records({column: texts}, settings, audit, rows=len(texts))
    out = [r.value(column, t, redact_residual=False) for r, t in zip(records, texts, strict=True)]
    return out, audit


# Values are scanned wherever they sit in a record (nested objects and lists too), and numbers
# as the text they are written as: an SSN or a card number stored as a number is PII. A value
# the scan leaves alone keeps its type (an int stays an int); one it changes becomes the
# scrubbed text.
_KEY = object()  # path step: the key itself of the dict entry named by the next step


def _scan_text(value: object) -> str | None:
    """The text a value is scanned as, or None for a value that cannot hold PII (bool, null)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() and abs(value) < 1e19 else repr(value)
    if isinstance(value, Decimal):
        return str(value)
    return None


def _leaves(value: object, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, text) of every string and number under `value`, dict keys included."""
    text = _scan_text(value)
    if text is not None:
        return [(path, text)]
    out: list[tuple[tuple, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                out.append(((*path, _KEY, key), key))
            out += _leaves(item, (*path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            out += _leaves(item, (*path, i))
    return out


def _rebuild(value: object, replaced: dict[tuple, object], path: tuple = ()) -> object:
    """`value` with the leaves at the paths in `replaced` swapped for their scrubbed text."""
    if path in replaced:
        return replaced[path]
    if isinstance(value, dict):
        return {
            replaced.get((*path, _KEY, k), k): _rebuild(v, replaced, (*path, k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_rebuild(v, replaced, (*path, i)) for i, v in enumerate(value)]
    return value


def _scrub_leaves(
    records: list[dict[str, object]],
    settings: PIISettings,
    audit: PIIAudit,
    audit_prefix: str,
) -> list[dict[str, object]]:
    """Each record with every leaf of each column's value scrubbed; entity counts go to the
    audit by column. All records' leaves go through one `scrub_records` batch (the worker
    processes from 2,000 values on), so many small records cost what one large batch does:
    the quarantine of a templated 50k-row file holds thousands of duplicates."""
    leaves = [{c: _leaves(v) for c, v in values.items()} for values in records]
    if not settings.enabled:
        return [dict(values) for values in records]
    # per column, the leaves of every record one after the other; `at[k][c]`: where record
    # k's leaves of column c begin
    flat: dict[str, list[str | None]] = {}
    at: list[dict[str, int]] = []
    for per_column in leaves:
        at.append({})
        for c, x in per_column.items():
            at[-1][c] = len(flat.setdefault(c, []))
            flat[c] += [t for _, t in x]
    rows = max((len(x) for x in flat.values()), default=0)
    if not rows:
        return [dict(values) for values in records]
    columns = {c: x + [None] * (rows - len(x)) for c, x in flat.items()}
    scrubbed = scrub_records(
        columns, settings, audit, rows=rows, count_records=False, audit_prefix=audit_prefix
    )
    out = []
    for values, per_column, start in zip(records, leaves, at, strict=True):
        record = {}
        for c, value in values.items():
            replaced = {}
            for i, (path, text) in enumerate(per_column[c], start=start[c]):
                new = scrubbed[i].value(c, text, redact_residual=True)
                if new != text:
                    replaced[path] = new
            record[c] = _rebuild(value, replaced) if replaced else value
        out.append(record)
    return out


def scrub_record(record: dict, settings: PIISettings, audit: PIIAudit | None = None) -> dict:
    """Scrub every string and number of a record at any depth (quarantined rows, whatever
    their shape); a residual hit blanks the value, since such a row cannot go anywhere else."""
    return _scrub_leaves(
        [record], settings, audit if audit is not None else PIIAudit(), "quarantine."
    )[0]


def write_quarantine(
    loaded: LoadedData,
    quarantined: dict[int, str],
    settings: PIISettings,
    stem: Path,
    like: Path,
    audit: PIIAudit | None = None,
) -> Path:
    """Quarantined rows, scrubbed, in the input's format with `_source`, `_line` (the line in
    that source: the data file or a feedback batch) and `_reason`."""
    unreadable = {int(r["_line"]): r for r in loaded.unreadable}
    lines = sorted(quarantined)
    records = [
        {"_raw": unreadable[line]["_raw"]} if line in unreadable else loaded.record(line)
        for line in lines
    ]
    rows = _scrub_leaves(
        records, settings, audit if audit is not None else PIIAudit(), "quarantine."
    )
    # the reason names types and checks only; scrub it too in case a value slipped in (each
    # distinct reason once: thousands of rows share "duplicate text")
    reasons = sorted(set(quarantined.values()))
    scrubbed = _scrub_leaves([{"r": r} for r in reasons], settings, PIIAudit(), "")
    reason_of = {r: s["r"] for r, s in zip(reasons, scrubbed, strict=True)}
    for line, record in zip(lines, rows, strict=True):
        source, source_line = loaded.origin(line)
        record.update(
            {"_source": source, "_line": source_line, "_reason": reason_of[quarantined[line]]}
        )
    return write_records(rows, stem, like)


def scrub_file(source: Path, target: Path, settings: PIISettings) -> PIIAudit:
    """Scrub every string and number, at any depth, of every readable record of `source` into
    `target`; other values are copied as they are.

    The format of `target` follows its suffix. Unreadable records are counted, not copied.
    """
    loaded = read_records(source)
    audit = PIIAudit()
    rows = [loaded.record(int(line)) for line in loaded.frame["_line"]]
    columns = [c for c in loaded.frame.columns if c != "_line"]
    flat = {c: [_scan_text(row.get(c)) for row in rows] for c in columns}
    texts = {c: v for c, v in flat.items() if any(x is not None for x in v)}
    records = scrub_records(texts, settings, audit, rows=len(rows))
    for i, row in enumerate(rows):
        for column in texts:
            text = flat[column][i]
            if text is not None:
                new = records[i].value(column, text, redact_residual=True)
                if new != text:
                    row[column] = new
    nested = [{c: v for c, v in row.items() if isinstance(v, dict | list)} for row in rows]
    for row, scrubbed in zip(rows, _scrub_leaves(nested, settings, audit, ""), strict=True):
        row.update(scrubbed)
    audit.records_unreadable = len(loaded.unreadable)
    # `tunegate scrub` has always counted a record with PII by the placeholders it now holds
    audit.records_with_pii = sum(
        any(PLACEHOLDER_RE.search(t) for _, t in _leaves(row) if isinstance(t, str)) for row in rows
    )
    write_rows(rows, target)
    return audit


class ResidualPII(Exception):
    """The residual scan found PII after scrubbing and `pii.residual_action` is `fail`."""


class ScrubResult(BaseModel):
    accepted_path: Path
    quarantine_path: Path
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    accepted_lines: list[int]
    audit: dict


def scrub_dataset(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    """Write `<name>_accepted.parquet` (_line, text, label) and the quarantine file, scrubbed.

    Generation data (`data.target_column`) gets (_line, text, target), both texts scrubbed.

    The quarantine file has the input's format (`<name>_quarantine.<ext>`) with `_line` and
    `_reason`. Both come straight from the source file, so no unscrubbed copy is ever written.
    Rows with a drop_row entity or a residual hit (with residual_action=quarantine) move from
    accepted to quarantined, so rows in = accepted + quarantined still holds.
    """
    loaded = load_dataset(data, report.feedback)
    frame = loaded.frame.set_index("_line", drop=False)
    accepted = frame.loc[report.accepted_lines]
    columns = [data.text_column] + ([data.y_column] if data.generation else [])
    raw: dict[str, list[str | None]] = {c: [str(t) for t in accepted[c]] for c in columns}
    audit = PIIAudit()
    records = scrub_records(raw, settings, audit, rows=len(accepted))
    quarantined = dict(report.quarantined)
    keep_lines: list[int] = []
    keep: dict[str, list] = {c: [] for c in columns}
    for i, line in enumerate(accepted["_line"].astype(int)):
        record = records[i]
        residual = record.residual()
        if residual and settings.residual_action == "fail":
            raise ResidualPII(
                f"residual scan found {dict(residual)} in line {line} after scrubbing; "
                "fix the recognizers or set pii.residual_action=quarantine"
            )
        drop = record.dropped(settings)
        if drop:
            audit.rows_dropped += 1
            quarantined[line] = f"contains {', '.join(sorted(drop))} (pii.operators: drop_row)"
        elif residual:
            quarantined[line] = f"residual PII after scrubbing: {', '.join(sorted(residual))}"
        else:
            keep_lines.append(line)
            for c in columns:
                keep[c].append(record.value(c, raw[c][i], redact_residual=False))
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted_path = out_dir / f"{name}_accepted.parquet"
    kept = frame.loc[keep_lines] if keep_lines else frame.iloc[0:0]
    table = {
        "_line": pd.Series(keep_lines, dtype="int64"),
        "text": pd.Series(keep[data.text_column], dtype=object),
    }
    if data.generation:
        table["target"] = pd.Series(keep[data.y_column], dtype=object)
    else:
        table["label"] = kept[data.label_column].astype(str).to_numpy()
    pd.DataFrame(table).to_parquet(accepted_path, index=False)

    quarantine_path = write_quarantine(
        loaded, quarantined, settings, out_dir / f"{name}_quarantine", data.path, audit
    )
    return ScrubResult(
        accepted_path=accepted_path,
        quarantine_path=quarantine_path,
        rows_in=report.rows_in,
        rows_accepted=len(keep_lines),
        rows_quarantined=len(quarantined),
        accepted_lines=keep_lines,
        audit=audit.as_dict(),
    )


def scrub_cache_key(data: DataSettings, settings: PIISettings, report: ValidationReport) -> str:
    """Content hash of the input file + the settings that shape the output."""
    from tasks.validate import file_digest

    digest = hashlib.sha256()
    digest.update(file_digest(data.path).encode())
    digest.update(data.model_dump_json(exclude={"path", "test_path"}).encode())
    digest.update(settings.model_dump_json().encode())
    digest.update(salt_fingerprint(settings).encode())  # a new salt must not reuse old hashes
    digest.update(json.dumps(report.accepted_lines).encode())
    digest.update(json.dumps(report.feedback.batches if report.feedback else []).encode())
    return digest.hexdigest()[:24]


def _scrub_task_key(context, parameters: dict) -> str:  # noqa: ANN001 - prefect's TaskRunContext
    where = f"{Path(parameters['out_dir']).resolve()}|{parameters['name']}"
    key = scrub_cache_key(parameters["data"], parameters["settings"], parameters["report"])
    return f"scrub-{key}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


@task(name="scrub-pii", cache_key_fn=_scrub_task_key, persist_result=True)
def scrub_task(
    data: DataSettings, report: ValidationReport, settings: PIISettings, out_dir: Path, name: str
) -> ScrubResult:
    """Scrub one data file; cached on file content + settings (a re-run skips the work)."""
    key = scrub_cache_key(data, settings, report)
    result = scrub_dataset(data, report, settings, Path(out_dir) / key, name)
    stage_logger(__name__).info("scrubbed %s: %s", name, json.dumps(result.audit["entities"]))
    return result
