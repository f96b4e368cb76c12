"""What Great Expectations checks, and how it checks without seeing a value from a row.

GX stores failing values (`COMPLETE` results) in its validation results and the Data Docs, and
a label, an id or an extra column may hold an email or an SSN as well as the text. So the main
suite runs on derived columns only: group numbers for uniqueness, lengths, label tokens
(`label_<i>`), and one boolean column per `validate.regexes` entry and per row-level
`validate.extra_expectations` entry. The user's expectations themselves run on the raw columns
they name in an ephemeral context (nothing written), and only their outcome leaves it: which
rows failed (as the boolean column) and, for table-level ones, whether they passed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.load import DataSettings, normalise_text


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


class ValidationFailed(Exception):
    """A table-level check failed: the flow must stop before training."""


# The derived columns of the main suite.
TEXT_KEY = "text_present"  # 1 where the text is a value, null where missing
TEXT_CHARS = "text_chars_stripped"
NORM_KEY = "text_normalised_group"  # equal normalised texts share a group number
ID_KEY = "id_group"
TARGET_KEY = "target_present"  # generation: the target text, checked like the input
TARGET_CHARS = "target_chars_stripped"
LABEL_TOKEN = "label_token"  # label_<i> for the i-th allowed label, else "not_allowed"
NOT_ALLOWED = "not_allowed"


def _value_kind(value: object) -> str:
    """missing | nested (a list or an object) | scalar."""
    if value is None:
        return "missing"
    if isinstance(value, list | dict | tuple) or hasattr(value, "__array__"):
        return "nested"
    try:
        return "missing" if pd.isna(value) else "scalar"
    except (TypeError, ValueError):
        return "nested"


def as_text(value: object) -> str | None:
    """Missing values (None, NaN, pandas NA) and nested values -> None; else its string."""
    return str(value) if _value_kind(value) == "scalar" else None


def _groups(values: list[str | None]) -> pd.Series:
    """Equal values -> one group number (nullable int), so GX can test uniqueness on numbers."""
    numbers: dict[str, int] = {}
    return pd.Series(
        [None if v is None else numbers.setdefault(v, len(numbers)) for v in values],
        dtype="Int64",
    )


def build_suite(
    data: DataSettings, settings: ValidateSettings, labels: list[str], derived: list[str]
) -> Any:  # a gx.ExpectationSuite
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name="tunegate_rows")
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=TEXT_KEY))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column=TEXT_CHARS, min_value=settings.min_chars, max_value=settings.max_chars
        )
    )
    if data.generation:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=TARGET_KEY))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(
                column=TARGET_CHARS, min_value=1, max_value=settings.max_chars
            )
        )
    else:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=LABEL_TOKEN))
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(
                column=LABEL_TOKEN, value_set=[f"label_{i}" for i in range(len(labels))]
            )
        )
    if settings.unique_texts:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=NORM_KEY))
    if data.id_column and settings.unique_ids:
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=ID_KEY))
    for column in derived:  # validate.regexes and row-level extra expectations, as booleans
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True]))
    # Table level: enough rows and every allowed label present (counts per class: check_table).
    suite.add_expectation(
        gxe.ExpectTableRowCountToBeBetween(
            min_value=settings.min_rows, meta={"tunegate": "validate.min_rows"}
        )
    )
    return suite


def _build_extra_suite(settings: ValidateSettings):  # noqa: ANN201, ANN202 - a gx.ExpectationSuite
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="tunegate_extra")
    for i, spec in enumerate(settings.extra_expectations):
        expectation = expectation_class(spec.type)(**spec.kwargs)
        expectation.meta = {**(expectation.meta or {}), "tunegate_extra": i}
        suite.add_expectation(expectation)
    return suite


def run_expectations(
    frame: pd.DataFrame, build_suite: Callable[[], object], docs_dir: Path | None = None
) -> tuple[list, str | None]:
    """Run the suite on `frame`: (results, Data Docs index.html or None).

    With `docs_dir` a file-mode context under it stores the results and builds the Data Docs;
    without, an ephemeral context (nothing written). Results use the COMPLETE format: every
    failing index.
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


class Derived(BaseModel):
    """What the main suite checks besides the built-in columns: one boolean column each."""

    column: str
    expectation: str  # the name the report shows
    shown_column: str | None  # the user's column it is about
    reason: str


def nested_rows(frame: pd.DataFrame, data: DataSettings) -> dict[int, str]:
    """Rows whose text, label, target or id is a list or an object: quarantined, not a crash."""
    roles = {data.text_column: "text"}
    roles[data.y_column] = "target" if data.generation else "label"
    if data.id_column:
        roles.setdefault(data.id_column, "id")
    found: dict[int, str] = {}
    lines = frame["_line"].to_numpy()
    for column, role in roles.items():
        for i, value in enumerate(frame[column].to_numpy()):
            if _value_kind(value) == "nested":
                kind = "an object" if isinstance(value, dict) else "a list"
                found.setdefault(int(lines[i]), f"{role} is {kind}, not a string")
    return found


def validation_frame(
    frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings, labels: list[str]
) -> tuple[pd.DataFrame, pd.Series, list[Derived]]:
    """The value-free columns the suite checks, the raw labels by line (counted by
    check_table, never given to GX), and the derived boolean checks."""
    texts = [as_text(v) for v in frame[data.text_column]]
    stripped = [t.strip() if t is not None else None for t in texts]
    lines = frame["_line"].astype(int).to_numpy()
    work = pd.DataFrame(
        {
            "_line": lines,
            TEXT_KEY: pd.Series([None if t is None else 1 for t in texts], dtype="Int64"),
            TEXT_CHARS: pd.Series([None if t is None else len(t) for t in stripped], dtype="Int64"),
            NORM_KEY: _groups([normalise_text(t) if t else None for t in stripped]),
        }
    )
    ys = [as_text(v) for v in frame[data.y_column]]
    if data.generation:
        work[TARGET_KEY] = pd.Series([None if t is None else 1 for t in ys], dtype="Int64")
        work[TARGET_CHARS] = pd.Series(
            [None if t is None else len(t.strip()) for t in ys], dtype="Int64"
        )
    else:
        tokens = {label: f"label_{i}" for i, label in enumerate(labels)}
        work[LABEL_TOKEN] = pd.Series(
            [None if y is None else tokens.get(y, NOT_ALLOWED) for y in ys], dtype=object
        )
    by_line = pd.Series(ys, index=lines, dtype=object)
    if data.id_column:
        work[ID_KEY] = _groups(
            [None if _value_kind(v) == "nested" else str(v) for v in frame[data.id_column]]
        )
    derived: list[Derived] = []
    for i, (column, pattern) in enumerate(settings.regexes.items()):
        if column not in frame.columns:
            raise ValidationFailed(f"validate.regexes: '{column}' is not a column of the data")
        compiled = re.compile(pattern)
        name = f"regex_{i}_matches"
        # like GX's regex expectation: a missing value is not checked, a present one searched
        work[name] = pd.Series(
            [
                None if _value_kind(v) == "missing" else bool(compiled.search(str(v)))
                for v in frame[column]
            ],
            dtype=object,
        )
        shown = "text" if column == data.text_column else column
        derived.append(
            Derived(
                column=name,
                expectation="expect_column_values_to_match_regex",
                shown_column=column,
                reason=f"{shown} does not match validate.regexes",
            )
        )
    return work, by_line, derived


def _extra_columns(frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings) -> list:
    """The raw columns the user's expectations read (never the free text)."""
    columns: list[str] = []
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
            if column not in frame.columns:
                raise ValidationFailed(
                    f"validate.extra_expectations[{i}]: '{column}' is not a column of the data"
                )
            if column not in columns:
                columns.append(column)
        for column in spec.kwargs.get("column_list") or []:
            if column == data.text_column or column not in frame.columns:
                raise ValidationFailed(
                    f"validate.extra_expectations[{i}]: column_list names '{column}', which is "
                    "the free-text column or not a column of the data"
                )
            if column not in columns:
                columns.append(column)
    return columns


# Table-level results whose observed value is a count, not a value from a row.
_COUNT_EXPECTATIONS = ("expect_table_row_count", "expect_table_column_count")


def run_extras(
    frame: pd.DataFrame, data: DataSettings, settings: ValidateSettings, work: pd.DataFrame
) -> tuple[list[Derived], list[ExpectationOutcome], list[str]]:
    """The user's expectations, on the raw columns they name, in an ephemeral context: only
    their outcome (which rows failed, counts) leaves it, as a boolean column per row-level
    expectation for the main suite, or a problem per failed table-level one."""
    if not settings.extra_expectations:
        return [], [], []
    raw = frame[["_line", *_extra_columns(frame, data, settings)]].reset_index(drop=True)
    results, _ = run_expectations(raw, lambda: _build_extra_suite(settings))
    derived: list[Derived] = []
    outcomes: list[ExpectationOutcome] = []
    problems: list[str] = []
    for res in results:
        i = int((res.expectation_config.meta or {})["tunegate_extra"])
        spec = settings.extra_expectations[i]
        column = spec.kwargs.get("column")
        indices = (res.result or {}).get("unexpected_index_list")
        errored = bool((res.exception_info or {}).get("raised_exception"))
        if indices is None or errored:
            outcomes.append(ExpectationOutcome(expectation=spec.type, success=bool(res.success)))
            if errored:
                problems.append(
                    f"validate.extra_expectations[{i}]: {spec.type} raised an error in "
                    "Great Expectations; check its kwargs against the column's values"
                )
            elif not res.success:
                observed = ""
                if spec.type.startswith(_COUNT_EXPECTATIONS):
                    observed = f" (observed {res.result.get('observed_value')})"
                problems.append(f"validate.extra_expectations: {spec.type} failed{observed}")
            continue
        failing = {int(x) for x in indices}
        name = f"extra_{i}_passes"
        work[name] = pd.Series([j not in failing for j in range(len(raw))], dtype=object)
        derived.append(
            Derived(
                column=name,
                expectation=spec.type,
                shown_column=column,
                reason=spec.reason or f"{spec.type} failed on {column}",
            )
        )
    return derived, outcomes, problems


def reason_for(expectation: str, column: str | None, derived: dict[str, Derived]) -> str:
    fixed = {
        ("expect_column_values_to_not_be_null", TEXT_KEY): "text is missing",
        ("expect_column_values_to_be_between", TEXT_CHARS): "text length out of bounds",
        ("expect_column_values_to_not_be_null", LABEL_TOKEN): "label is missing",
        ("expect_column_values_to_be_in_set", LABEL_TOKEN): "label not in the allowed set",
        ("expect_column_values_to_be_unique", NORM_KEY): "duplicate text",
        ("expect_column_values_to_not_be_null", TARGET_KEY): "target is missing",
        ("expect_column_values_to_be_between", TARGET_CHARS): "target is blank or too long",
        ("expect_column_values_to_be_unique", ID_KEY): "duplicate id",
    }
    if column in derived:
        return derived[column].reason
    return fixed.get((expectation, column), f"{expectation} failed on {column}")
