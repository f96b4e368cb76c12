"""Validate labelled records with a Great Expectations suite built from the config.

Row-level failures (null or blank text, text too short or too long, a label outside the allowed
set, a duplicate text or id) quarantine that row with a reason. A missing column raises
`ValidationFailed`; the other table-level failures (too few rows, a class below its minimum, too
much quarantined) are listed in `report.problems` and the flow stops before training. Every row is accounted for: rows in = accepted + quarantined.

The report holds line numbers and reasons only, never text, so it is safe to log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from tasks.load import DataSettings, LoadedData, read_records

TEXT_HELPER = "_text_stripped"
NORM_HELPER = "_text_normalised"


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
    wanted = {"data.text_column": data.text_column, "data.label_column": data.label_column}
    if data.id_column:
        wanted["data.id_column"] = data.id_column
    for key, column in wanted.items():
        if column not in frame.columns:
            raise ValidationFailed(
                f"{key} '{column}' is not a column of the data (columns: {', '.join(present)})"
            )


def _build_suite(data: DataSettings, settings: ValidateSettings, labels: list[str]):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="tunegate_rows")
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=data.text_column))
    suite.add_expectation(
        gxe.ExpectColumnValueLengthsToBeBetween(
            column=TEXT_HELPER, min_value=settings.min_chars, max_value=settings.max_chars
        )
    )
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=data.label_column))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column=data.label_column, value_set=labels)
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=NORM_HELPER))
    if data.id_column:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=data.id_column))
    return suite


REASONS = {
    ("expect_column_values_to_not_be_null", "text"): "text is missing",
    ("expect_column_value_lengths_to_be_between", TEXT_HELPER): "text length out of bounds",
    ("expect_column_values_to_not_be_null", "label"): "label is missing",
    ("expect_column_values_to_be_in_set", "label"): "label not in the allowed set",
    ("expect_column_values_to_be_unique", NORM_HELPER): "duplicate text",
    ("expect_column_values_to_be_unique", "id"): "duplicate id",
}


def run_expectations(frame: pd.DataFrame, build_suite: Callable[[], object]) -> list:
    """Run the suite `build_suite()` makes on `frame` in an ephemeral GX context.

    Results use the COMPLETE format, so every failing index is listed, not a sample.
    """
    import great_expectations as gx

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
    result = definition.run(
        batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"}
    )
    return list(result.results)


def validate_records(
    loaded: LoadedData, data: DataSettings, settings: ValidateSettings
) -> ValidationReport:
    """Quarantine bad rows with a reason; raise `ValidationFailed` on table-level problems."""
    frame = loaded.frame
    quarantined: dict[int, str] = {int(r["_line"]): r["_reason"] for r in loaded.unreadable}
    if frame.empty:
        raise ValidationFailed("no readable records in the data file")
    check_columns(frame, data)
    labels = resolve_labels(frame, data, settings)

    texts = [_as_text(v) for v in frame[data.text_column]]
    work = pd.DataFrame(
        {
            "_line": frame["_line"].astype(int).to_numpy(),
            data.text_column: pd.Series(texts, dtype=object),
            data.label_column: pd.Series(
                [_as_text(v) for v in frame[data.label_column]], dtype=object
            ),
            TEXT_HELPER: pd.Series(
                [t.strip() if t is not None else None for t in texts], dtype=object
            ),
            NORM_HELPER: pd.Series(
                [normalise_text(t) if t is not None and t.strip() else None for t in texts],
                dtype=object,
            ),
        }
    )
    if data.id_column:
        work[data.id_column] = frame[data.id_column].astype(str).to_numpy()

    results = run_expectations(work, lambda: _build_suite(data, settings, labels))
    outcomes: list[ExpectationOutcome] = []
    # Uniqueness last: of a group of duplicates, the first row that passed every other check is
    # kept, so a valid row is never dropped as the "duplicate" of a row quarantined for its label.
    unique_last = sorted(
        results, key=lambda r: r.expectation_config.type == "expect_column_values_to_be_unique"
    )
    for res in unique_last:
        cfg = res.expectation_config
        column = cfg.kwargs.get("column")
        indices = res.result.get("unexpected_index_list") or []
        role = {data.text_column: "text", data.label_column: "label", data.id_column: "id"}.get(
            column, column
        )
        reason = REASONS.get((cfg.type, role), f"{cfg.type} failed on {column}")
        if cfg.type == "expect_column_values_to_be_unique":
            indices = _later_duplicates(work, column, indices, quarantined)
        outcomes.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=column,
                success=bool(res.success),
                unexpected_count=len(indices),
            )
        )
        for i in indices:
            line = int(work.at[i, "_line"])
            quarantined.setdefault(line, reason)

    accepted = [int(x) for x in work["_line"] if int(x) not in quarantined]
    report = ValidationReport(
        rows_in=loaded.rows_in,
        accepted_lines=accepted,
        quarantined=quarantined,
        labels=labels,
        expectations=outcomes,
    )
    report.problems = check_table(report, work.set_index("_line")[data.label_column], settings)
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


@task(name="validate")
def validate_task(
    data: DataSettings, settings: ValidateSettings, out_dir: Path
) -> ValidationReport:
    """Validate `data.path`; the report (lines and reasons, no text) is written to `out_dir`."""
    report = validate_records(read_records(data.path), data, settings)
    write_report(report, out_dir / "validation_report.json")
    get_run_logger().info(
        "validated %d rows: %d accepted, %d quarantined",
        report.rows_in,
        report.rows_accepted,
        report.rows_quarantined,
    )
    return report
