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
from pathlib import Path

import pandas as pd
from prefect import task
from pydantic import BaseModel

from tasks import stage_logger
from tasks.load import DataSettings, LoadedData, detect_format, read_records, write_records
from tasks.pii.audit import PIIAudit
from tasks.pii.engine import get_scrubber
from tasks.pii.salt import hash_salt, require_salt, salt_fingerprint
from tasks.pii.settings import PLACEHOLDER_NAMES, Operator, PIISettings
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


def scrub_many(texts: list[str | None], settings: PIISettings) -> list[ScrubbedText | None]:
    """Scrub a batch; batches of 2,000+ texts use `settings.processes` worker processes."""
    require_salt(settings)  # before any work (and resolved here, so forked workers inherit it)
    if settings.processes <= 1 or len(texts) < 2000:
        return _scrub_chunk((texts, settings.model_dump_json()))
    get_scrubber(settings)  # the gazetteers load once, here; forked workers inherit them
    size = -(-len(texts) // (settings.processes * 4))
    chunks = [(texts[i : i + size], settings.model_dump_json()) for i in range(0, len(texts), size)]
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(settings.processes, mp_context=context) as pool:
        out: list[ScrubbedText | None] = []
        for part in pool.map(_scrub_chunk, chunks):
            out.extend(part)
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
    results = {
        c: scrub_many(values, settings) if settings.enabled else [None] * rows
        for c, values in columns.items()
    }
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


def scrub_record(record: dict, settings: PIISettings, audit: PIIAudit | None = None) -> dict:
    """Scrub every string value of a record (quarantined rows, whatever their shape)."""
    columns = {k: [v] for k, v in record.items() if isinstance(v, str)} if settings.enabled else {}
    (scrubbed,) = scrub_records(
        columns,
        settings,
        audit if audit is not None else PIIAudit(),
        rows=1,
        count_records=False,
        audit_prefix="quarantine.",
    )
    # quarantined rows cannot go anywhere else: a residual hit blanks the value
    return {k: scrubbed.value(k, v, redact_residual=True) for k, v in record.items()}


def write_quarantine(
    loaded: LoadedData,
    quarantined: dict[int, str],
    settings: PIISettings,
    stem: Path,
    like: Path,
    audit: PIIAudit | None = None,
) -> Path:
    """Quarantined rows, scrubbed, in the input's format with `_line` and `_reason`."""
    frame = loaded.frame.set_index("_line", drop=False)
    unreadable = {int(r["_line"]): r for r in loaded.unreadable}
    rows = []
    for line, reason in sorted(quarantined.items()):
        if line in unreadable:
            record = {"_raw": unreadable[line]["_raw"]}
        else:
            record = {
                k: (None if not isinstance(v, list | dict) and pd.isna(v) else v)
                for k, v in frame.loc[line].to_dict().items()
                if k != "_line"
            }
        record = scrub_record(record, settings, audit)
        # the reason names types and checks only; scrub it too in case a value slipped in
        record.update({"_line": line, "_reason": scrub_record({"r": reason}, settings)["r"]})
        rows.append(record)
    return write_records(rows, stem, like)


def scrub_file(source: Path, target: Path, settings: PIISettings) -> PIIAudit:
    """Scrub every string value of every readable record of `source` into `target`.

    The format of `target` follows its suffix. Unreadable records are counted, not copied.
    """
    loaded = read_records(source)
    frame = loaded.frame
    audit = PIIAudit()
    columns = [c for c in frame.columns if c != "_line"]
    out = frame[columns].copy()
    values = {c: [v if isinstance(v, str) else None for v in frame[c]] for c in columns}
    texts = {c: v for c, v in values.items() if any(v)}  # columns with no text are copied
    records = scrub_records(texts, settings, audit, rows=len(frame))
    for column in texts:
        out[column] = [
            r.value(column, v, redact_residual=True)
            for r, v in zip(records, frame[column], strict=True)
        ]
    audit.records_unreadable = len(loaded.unreadable)
    # `tunegate scrub` has always counted a record with PII by the placeholders it now holds
    audit.records_with_pii = int(
        sum(
            any(isinstance(v, str) and PLACEHOLDER_RE.search(v) for v in row)
            for row in out.itertuples(index=False)
        )
    )
    if detect_format(target) == "parquet":
        target.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(target, index=False)
    else:
        write_records(out.to_dict("records"), target.with_suffix(""), target)
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
    loaded = read_records(data.path)
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
