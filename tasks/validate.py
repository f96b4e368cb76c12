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
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks import stage_logger
from tasks.load import DataSettings, LoadedData, read_records
from tasks.progress import Progress


class ExpectationSpec(BaseModel):
    """A user expectation from the YAML: a GX expectation type and its keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="GX expectation type, e.g. expect_column_values_to_match_regex.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Its keyword arguments.")
    reason: str | None = Field(
        default=None, description="Quarantine reason for failing rows (default: the type)."
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if expectation_class(value) is None:
            raise ValueError(
                f"unknown Great Expectations expectation type '{value}' "
                "(e.g. expect_column_values_to_match_regex)"
            )
        return value


class ValidateSettings(BaseModel):
    """Row- and table-level checks applied before anything is trained."""

    model_config = ConfigDict(extra="forbid")

    min_chars: int = Field(default=1, ge=1, description="Shortest accepted text (stripped).")
    max_chars: int = Field(default=5000, ge=1, description="Longest accepted text (stripped).")
    min_rows: int = Field(default=20, ge=1, description="Fewest accepted rows to train on.")
    min_rows_per_class: int = Field(
        default=5, ge=1, description="Fewest accepted rows per label; also the bar for inference."
    )
    max_quarantine_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Stop when more than this share is quarantined."
    )
    unique_texts: bool = Field(
        default=True, description="Quarantine a text equal (after normalising) to an earlier one."
    )
    unique_ids: bool = Field(
        default=True, description="Quarantine a repeated data.id_column value."
    )
    regexes: dict[str, str] = Field(
        default_factory=dict,
        description="Column -> regex every value must match (row-level; failing rows quarantined).",
    )
    extra_expectations: list[ExpectationSpec] = Field(
        default_factory=list,
        description="More GX expectations, e.g. [{type: expect_column_values_to_match_regex, "
        "kwargs: {column: id, regex: '^APP-'}}]. Row-level ones quarantine rows; "
        "table-level ones stop the flow.",
    )
    data_docs: bool = Field(
        default=True, description="Write GX Data Docs (HTML) with a file-mode context."
    )

    @field_validator("regexes")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for column, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{column}: {pattern!r} is not a valid regex ({exc})") from None
        return value


def expectation_class(type_name: str) -> type | None:
    """`expect_column_values_to_match_regex` -> gxe.ExpectColumnValuesToMatchRegex."""
    import great_expectations.expectations as gxe

    camel = "".join(part.capitalize() for part in type_name.split("_"))
    cls = getattr(gxe, camel, None)
    return cls if isinstance(cls, type) else None


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None = None
    success: bool
    unexpected_count: int = 0


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


class ValidationFailed(Exception):
    """A table-level check failed: the flow must stop before training."""


def normalise_text(text: str) -> str:
    """Lower-case, collapse whitespace: two texts equal after this are duplicates."""
    return " ".join(str(text).lower().split())


def resolve_labels(
    frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings
) -> list[str]:
    """The allowed labels: configured, or every label with at least `min_rows_per_class` rows."""
    if data.generation:
        return []  # generation: a target text per row, no label set
    if data.labels:
        return [str(label) for label in data.labels]
    counts = frame[data.label_column].dropna().astype(str).value_counts()
    labels = sorted(counts[counts >= settings.min_rows_per_class].index)
    if len(labels) < 2:
        raise ValidationFailed(
            f"could not infer labels from '{data.label_column}': fewer than 2 labels have "
            f"{settings.min_rows_per_class}+ rows; set data.labels or validate.min_rows_per_class"
        )
    return labels


def _as_text(value: object) -> str | None:
    """Missing values (None, NaN, pandas NA) -> None; anything else -> its string."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)


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


# The suite runs on derived columns (hashes, lengths, labels), never on the raw text, so neither
# the stored GX results nor the Data Docs can show a value from a row.
TEXT_SHA = "text_sha256"
TEXT_CHARS = "text_chars_stripped"
NORM_SHA = "text_normalised_sha256"
ID_SHA = "id_sha256"
TARGET_SHA = "target_sha256"  # generation: the target text, hashed like the input
TARGET_CHARS = "target_chars_stripped"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _build_suite(
    data: DataSettings, settings: ValidateSettings, labels: list[str], regex_columns: list[str]
):  # noqa: ANN202 - a gx.ExpectationSuite
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="tunegate_rows")
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=TEXT_SHA))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column=TEXT_CHARS, min_value=settings.min_chars, max_value=settings.max_chars
        )
    )
    if data.generation:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=TARGET_SHA))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(
                column=TARGET_CHARS, min_value=1, max_value=settings.max_chars
            )
        )
    else:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=data.label_column))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column=data.label_column, value_set=labels)
        )
    if settings.unique_texts:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=NORM_SHA))
    if data.id_column and settings.unique_ids:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=ID_SHA))
    for column in regex_columns:
        if column.startswith("text_matches_regex"):
            suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
        else:
            suite.add_expectation(
                gxe.ExpectColumnValuesToMatchRegex(column=column, regex=settings.regexes[column])
            )
    for spec in settings.extra_expectations:
        suite.add_expectation(expectation_class(spec.type)(**spec.kwargs))
    # Table level: enough rows and every allowed label present (counts per class: check_table).
    suite.add_expectation(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=settings.min_rows, meta={"tunegate": "validate.min_rows"}
        )
    )
    return suite


def run_expectations(
    frame: pd.DataFrame, build_suite: Callable[[], object], docs_dir: Path | None = None
) -> tuple[list, str | None]:
    """Run the suite on `frame`: (results, Data Docs index.html or None).

    With `docs_dir` a file-mode context under it stores the results and builds the Data Docs;
    without, an ephemeral context. Results use the COMPLETE format: every failing index.
    """
    import great_expectations as gx

    if docs_dir is not None:
        shutil.rmtree(docs_dir / "gx", ignore_errors=True)
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    else:
        context = gx.get_context(mode="ephemeral")
    suite = build_suite()  # GX needs an active context before a suite can be built
    source = context.data_sources.add_pandas("tunegate")
    batch_definition = source.add_dataframe_asset("records").add_batch_definition_whole_dataframe(
        "all"
    )
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="tunegate_rows", data=batch_definition, suite=suite)
    )
    result_format = {"result_format": "COMPLETE", "include_unexpected_rows": False}
    if docs_dir is None:
        result = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
        return list(result.results), None
    from great_expectations.checkpoint import UpdateDataDocsAction

    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="tunegate",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs")],
            result_format=result_format,
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    results = list(next(iter(result.run_results.values())).results)
    index = docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return results, str(index) if index.is_file() else None


def _validation_frame(
    frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings
) -> tuple[pd.DataFrame, list[str]]:
    """Derived, text-free columns for the suite, plus the regex columns it checks."""
    texts = [_as_text(v) for v in frame[data.text_column]]
    stripped = [t.strip() if t is not None else None for t in texts]
    work = pd.DataFrame(
        {
            "_line": frame["_line"].astype(int).to_numpy(),
            TEXT_SHA: pd.Series([None if t is None else _sha(t) for t in texts], dtype=object),
            TEXT_CHARS: pd.Series([None if t is None else len(t) for t in stripped], dtype="Int64"),
            NORM_SHA: pd.Series(
                [_sha(normalise_text(t)) if t else None for t in stripped], dtype=object
            ),
        }
    )
    if data.generation:
        targets = [_as_text(v) for v in frame[data.y_column]]
        work[TARGET_SHA] = pd.Series(
            [None if t is None else _sha(t) for t in targets], dtype=object
        )
        work[TARGET_CHARS] = pd.Series(
            [None if t is None else len(t.strip()) for t in targets], dtype="Int64"
        )
    else:
        work[data.label_column] = pd.Series(
            [_as_text(v) for v in frame[data.label_column]], dtype=object
        )
    if data.id_column:
        work[ID_SHA] = [_sha(str(v)) for v in frame[data.id_column]]
    regex_columns = []
    for i, (column, pattern) in enumerate(settings.regexes.items()):
        if column not in frame.columns:
            raise ValidationFailed(f"validate.regexes: '{column}' is not a column of the data")
        if column == data.text_column:
            compiled = re.compile(pattern)
            name = f"text_matches_regex_{i}"
            work[name] = [t is not None and bool(compiled.search(t)) for t in texts]
        else:
            name = column
            work[column] = [_as_text(v) for v in frame[column]]
        regex_columns.append(name)
    for i, spec in enumerate(settings.extra_expectations):
        for key in ("column", "column_A", "column_B"):
            column = spec.kwargs.get(key)
            if column is None:
                continue
            if column == data.text_column:
                raise ValidationFailed(
                    f"validate.extra_expectations[{i}]: '{column}' is the free-text column, whose "
                    "values must not reach GX results; check it with validate.regexes instead"
                )
            if column not in frame.columns and column not in work.columns:
                raise ValidationFailed(
                    f"validate.extra_expectations[{i}]: '{column}' is not a column of the data"
                )
            if column not in work.columns:
                work[column] = frame[column].to_numpy()
    return work, regex_columns


def _reason_for(
    expectation: str, column: str | None, data: DataSettings, settings: ValidateSettings
) -> str:
    fixed = {
        ("expect_column_values_to_not_be_null", TEXT_SHA): "text is missing",
        ("expect_column_values_to_be_between", TEXT_CHARS): "text length out of bounds",
        ("expect_column_values_to_not_be_null", data.label_column): "label is missing",
        ("expect_column_values_to_be_in_set", data.label_column): "label not in the allowed set",
        ("expect_column_values_to_be_unique", NORM_SHA): "duplicate text",
        ("expect_column_values_to_not_be_null", TARGET_SHA): "target is missing",
        ("expect_column_values_to_be_between", TARGET_CHARS): "target is blank or too long",
        ("expect_column_values_to_be_unique", ID_SHA): "duplicate id",
    }
    if (expectation, column) in fixed:
        return fixed[(expectation, column)]
    for spec in settings.extra_expectations:
        if spec.type == expectation and spec.kwargs.get("column") == column and spec.reason:
            return spec.reason
    if column and column.startswith("text_matches_regex"):
        return "text does not match validate.regexes"
    if column in settings.regexes and expectation == "expect_column_values_to_match_regex":
        return f"{column} does not match validate.regexes"
    return f"{expectation} failed on {column}"


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
    labels = resolve_labels(frame, data, settings)
    progress = Progress("validate", total=len(frame))
    work, regex_columns = _validation_frame(frame, data, settings)
    results, docs = run_expectations(
        work, lambda: _build_suite(data, settings, labels, regex_columns), docs_dir
    )
    progress.advance(len(frame))
    outcomes: list[ExpectationOutcome] = []
    problems: list[str] = []
    # Uniqueness last: of a group of duplicates, the first row that passed every other check is
    # kept, so a valid row is never dropped as the "duplicate" of a row quarantined for its label.
    unique_last = sorted(
        results, key=lambda r: r.expectation_config.type == "expect_column_values_to_be_unique"
    )
    for res in unique_last:
        cfg = res.expectation_config
        column = cfg.kwargs.get("column")
        indices = res.result.get("unexpected_index_list")
        if indices is None:  # table level
            outcomes.append(ExpectationOutcome(expectation=cfg.type, success=bool(res.success)))
            builtin = (cfg.meta or {}).get("tunegate") == "validate.min_rows"  # check_table
            if not res.success and not builtin:
                problems.append(
                    f"validate.extra_expectations: {cfg.type} failed "
                    f"(observed {res.result.get('observed_value')})"
                )
            continue
        if cfg.type == "expect_column_values_to_be_unique":
            indices = _later_duplicates(work, column, indices, quarantined)
        reason = _reason_for(cfg.type, column, data, settings)
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=column,
                success=bool(res.success),
                unexpected_count=len(indices),
            )
        )
        lines = work["_line"].to_numpy()
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
    )
    report.problems = problems + check_table(
        report,
        work.set_index("_line")[TARGET_SHA if data.generation else data.label_column],
        settings,
    )
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


def validation_key(data: DataSettings, settings: ValidateSettings) -> str:
    """Content of the data file + every setting that changes the report."""
    digest = hashlib.sha256()
    digest.update(file_digest(data.path).encode())
    digest.update(data.model_dump_json(exclude={"path", "test_path"}).encode())
    digest.update(settings.model_dump_json().encode())
    return digest.hexdigest()[:24]


def validate_file(
    data: DataSettings, settings: ValidateSettings, out_dir: Path
) -> ValidationReport:
    """Read, validate and write `validation_report.json` (+ Data Docs) under `out_dir`."""
    report = validate_records(
        read_records(data.path), data, settings, out_dir if settings.data_docs else None
    )
    report.file_sha256 = file_digest(data.path)
    write_report(report, out_dir / "validation_report.json")
    return report


def _validate_task_key(context, parameters: dict) -> str:  # noqa: ANN001 - TaskRunContext
    out_dir = str(Path(parameters["out_dir"]).resolve())
    key = validation_key(parameters["data"], parameters["settings"])
    return f"validate-{key}-{hashlib.sha256(out_dir.encode()).hexdigest()[:8]}"


@task(name="validate", cache_key_fn=_validate_task_key, persist_result=True)
def validate_task(
    data: DataSettings, settings: ValidateSettings, out_dir: Path
) -> ValidationReport:
    """Validate `data.path` into `out_dir/<content key>/`; cached on file content + settings."""
    report = validate_file(data, settings, Path(out_dir) / validation_key(data, settings))
    stage_logger(__name__).info(
        "validated %d rows: %d accepted, %d quarantined",
        report.rows_in,
        report.rows_accepted,
        report.rows_quarantined,
    )
    return report
