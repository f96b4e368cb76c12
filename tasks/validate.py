"""Validate labelled records with a Great Expectations suite built from the config.

Row-level failures (null or blank text, text too short or too long, a label outside the allowed
set, a duplicate text or id; for generation data, a missing or blank target) quarantine that row
with a reason. A missing column raises `ValidationFailed`; the other table-level failures (too
few rows, a class below its minimum, too much quarantined, a failed table-level user
expectation) are listed in `report.problems` and the flow stops before training. Every row
is accounted for: rows in = accepted + quarantined.

The report holds line numbers and reasons only, never text, so it is safe to log.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import pandas as pd
from prefect import task
from pydantic import BaseModel

from tasks import stage_logger
from tasks.dataset import load_dataset
from tasks.feedback import FeedbackInput
from tasks.load import DataSettings, LoadedData, SourceSpan, normalise_text
from tasks.progress import Progress
from tasks.validation_suite import (
    ExpectationOutcome,
    ExpectationSpec,
    ValidateSettings,
    ValidationFailed,
    as_text,
    build_suite,
    expectation_class,
    nested_rows,
    reason_for,
    run_expectations,
    run_extras,
    validation_frame,
)

# The settings and the suite live in tasks.validation_suite; callers import them from here.
__all__ = [
    "ExpectationOutcome",
    "ExpectationSpec",
    "ValidateSettings",
    "ValidationFailed",
    "ValidationReport",
    "check_columns",
    "check_table",
    "expectation_class",
    "file_digest",
    "normalise_text",
    "validate_file",
    "validate_records",
    "validate_task",
    "validation_key",
    "write_report",
]


class ValidationReport(BaseModel):
    """What validation decided, by line number. No text."""

    rows_in: int
    accepted_lines: list[int]
    quarantined: dict[int, str]  # line -> reason
    labels: list[str]
    expectations: list[ExpectationOutcome]
    problems: list[str] = []  # table-level failures: training must not start
    data_docs: str | None = None  # index.html of the GX Data Docs site
    file_sha256: str | None = None
    seconds: float = 0.0
    sources: list[SourceSpan] = []  # the inputs read as one data set; keys map back to them
    feedback: FeedbackInput | None = None  # the feedback batches read with data.path

    @property
    def failed_expectations(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    def summary(self) -> dict:
        """What `tunegate validate --summary-json` writes: counts, failures, no text."""
        return {
            "passed": self.passed,
            "rows": {
                "in": self.rows_in,
                "accepted": self.rows_accepted,
                "quarantined": self.rows_quarantined,
            },
            "failed_expectations": [e.model_dump() for e in self.failed_expectations],
            "problems": self.problems,
            "quarantine_reasons": dict(Counter(self.quarantined.values()).most_common()),
            "labels": self.labels,
            "data_docs": self.data_docs,
            "seconds": round(self.seconds, 3),
        }

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def rows_accepted(self) -> int:
        return len(self.accepted_lines)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)


def resolve_labels(
    frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings
) -> list[str]:
    """The allowed labels: configured, or every label with at least `min_rows_per_class` rows."""
    if data.generation:
        return []  # generation: a target text per row, no label set
    if data.labels:
        return [str(label) for label in data.labels]
    counts = pd.Series([as_text(v) for v in frame[data.label_column]], dtype=object)
    counts = counts.dropna().value_counts()
    labels = sorted(counts[counts >= settings.min_rows_per_class].index)
    if len(labels) < 2:
        raise ValidationFailed(
            f"could not infer labels from '{data.label_column}': fewer than 2 labels have "
            f"{settings.min_rows_per_class}+ rows; set data.labels or validate.min_rows_per_class"
        )
    return labels


def check_columns(frame: pd.DataFrame, data: DataSettings) -> None:
    present = [c for c in frame.columns if c != "_line"]
    wanted = {"data.text_column": data.text_column}
    if data.generation:
        wanted["data.target_column"] = data.y_column
    else:
        wanted["data.label_column"] = data.label_column
    if data.id_column:
        wanted["data.id_column"] = data.id_column
    for key, column in wanted.items():
        if column not in frame.columns:
            raise ValidationFailed(
                f"{key} '{column}' is not a column of the data (columns: {', '.join(present)})"
            )


def validate_records(
    loaded: LoadedData,
    data: DataSettings,
    settings: ValidateSettings,
    docs_dir: Path | None = None,
) -> ValidationReport:
    """Quarantine bad rows with a reason; table-level problems go to `report.problems`.

    A missing column or an unusable setting raises `ValidationFailed` (one line).
    """
    started = time.perf_counter()
    frame = loaded.frame
    quarantined: dict[int, str] = {int(r["_line"]): r["_reason"] for r in loaded.unreadable}
    if frame.empty:
        raise ValidationFailed("no readable records in the data file")
    check_columns(frame, data)
    for line, reason in nested_rows(frame, data).items():
        quarantined.setdefault(line, reason)
    labels = resolve_labels(frame, data, settings)
    progress = Progress("validate", total=len(frame))
    work, labels_by_line, derived = validation_frame(frame, data, settings, labels)
    extra_derived, outcomes, problems = run_extras(frame, data, settings, work)
    derived += extra_derived
    by_column = {d.column: d for d in derived}
    results, docs = run_expectations(
        work, lambda: build_suite(data, settings, labels, list(by_column)), docs_dir
    )
    progress.advance(len(frame))
    # Uniqueness last: of a group of duplicates, the first row that passed every other check is
    # kept, so a valid row is never dropped as the "duplicate" of a row quarantined for its label.
    unique_last = sorted(
        results, key=lambda r: r.expectation_config.type == "expect_column_values_to_be_unique"
    )
    lines = work["_line"].to_numpy()
    for res in unique_last:
        cfg = res.expectation_config
        column = cfg.kwargs.get("column")
        indices = res.result.get("unexpected_index_list")
        if indices is None:  # table level: the built-in row count, decided in check_table
            outcomes.append(ExpectationOutcome(expectation=cfg.type, success=bool(res.success)))
            continue
        if cfg.type == "expect_column_values_to_be_unique":
            indices = _later_duplicates(work, column, indices, quarantined)
        shown = by_column.get(column)
        outcomes.append(
            ExpectationOutcome(
                expectation=shown.expectation if shown else cfg.type,
                column=shown.shown_column if shown else column,
                success=bool(res.success),
                unexpected_count=len(indices),
            )
        )
        reason = reason_for(cfg.type, column, by_column)
        for i in indices:
            quarantined.setdefault(int(lines[i]), reason)

    accepted = [int(x) for x in work["_line"] if int(x) not in quarantined]
    report = ValidationReport(
        rows_in=loaded.rows_in,
        accepted_lines=accepted,
        quarantined=quarantined,
        labels=labels,
        expectations=outcomes,
        data_docs=docs,
        sources=loaded.sources,
    )
    report.problems = problems + check_table(report, labels_by_line, settings)
    report.seconds = time.perf_counter() - started
    progress.done()
    return report


def _later_duplicates(
    work: pd.DataFrame, column: str, indices: list, quarantined: dict[int, str]
) -> list:
    """Indices to quarantine as duplicates: every member of a group but its first valid row."""
    members = work.loc[list(indices)]
    valid = members[~members["_line"].isin(list(quarantined))]
    keep = set(valid.drop_duplicates(column, keep="first").index)
    return [i for i in indices if i not in keep and int(work.at[i, "_line"]) not in quarantined]


def check_table(
    report: ValidationReport, labels_by_line: pd.Series, settings: ValidateSettings
) -> list[str]:
    """Table-level checks on what was accepted; each failure is one message."""
    problems = []
    fraction = report.rows_quarantined / max(report.rows_in, 1)
    if fraction > settings.max_quarantine_fraction:
        problems.append(
            f"{report.rows_quarantined} of {report.rows_in} rows quarantined ({fraction:.0%}), "
            f"more than validate.max_quarantine_fraction={settings.max_quarantine_fraction}; "
            "see the quarantine file for reasons"
        )
    if report.rows_accepted < settings.min_rows:
        problems.append(
            f"only {report.rows_accepted} rows accepted, fewer than validate.min_rows="
            f"{settings.min_rows}"
        )
    counts = labels_by_line.loc[report.accepted_lines].value_counts()
    short = {
        label: int(counts.get(label, 0))
        for label in report.labels
        if counts.get(label, 0) < settings.min_rows_per_class
    }
    if short:
        detail = ", ".join(f"{k}={v}" for k, v in short.items())
        problems.append(
            f"classes below validate.min_rows_per_class={settings.min_rows_per_class}: {detail}"
        )
    return problems


def write_report(report: ValidationReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(), indent=1))
    return path


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes (streamed)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validation_key(
    data: DataSettings, settings: ValidateSettings, feedback: FeedbackInput | None = None
) -> str:
    """Content of the data file (+ the feedback batches read with it, content-addressed) +
    every setting that changes the report."""
    digest = hashlib.sha256()
    digest.update(file_digest(data.path).encode())
    digest.update(data.model_dump_json(exclude={"path", "test_path"}).encode())
    digest.update(settings.model_dump_json().encode())
    if feedback is not None and feedback.batches:
        digest.update(json.dumps(feedback.batches).encode())
    return digest.hexdigest()[:24]


def validate_file(
    data: DataSettings,
    settings: ValidateSettings,
    out_dir: Path,
    feedback: FeedbackInput | None = None,
) -> ValidationReport:
    """Read (with the feedback batches), validate and write `validation_report.json` (+ Data
    Docs) under `out_dir`."""
    report = validate_records(
        load_dataset(data, feedback), data, settings, out_dir if settings.data_docs else None
    )
    report.file_sha256 = file_digest(data.path)
    report.feedback = feedback if feedback is not None and feedback.batches else None
    write_report(report, out_dir / "validation_report.json")
    return report


def _validate_task_key(context, parameters: dict) -> str:  # noqa: ANN001 - TaskRunContext
    out_dir = str(Path(parameters["out_dir"]).resolve())
    key = validation_key(parameters["data"], parameters["settings"], parameters.get("feedback"))
    return f"validate-{key}-{hashlib.sha256(out_dir.encode()).hexdigest()[:8]}"


@task(name="validate", cache_key_fn=_validate_task_key, persist_result=True)
def validate_task(
    data: DataSettings,
    settings: ValidateSettings,
    out_dir: Path,
    feedback: FeedbackInput | None = None,
) -> ValidationReport:
    """Validate `data.path` (+ `feedback` batches) into `out_dir/<content key>/`; cached on
    file content + batches + settings."""
    key = validation_key(data, settings, feedback)
    report = validate_file(data, settings, Path(out_dir) / key, feedback)
    stage_logger(__name__).info(
        "validated %d rows: %d accepted, %d quarantined",
        report.rows_in,
        report.rows_accepted,
        report.rows_quarantined,
    )
    return report
