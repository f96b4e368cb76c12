"""Read a labelled data file (JSONL, CSV or Parquet) without ever crashing on bad bytes.

Every physical record gets a 1-based `_line` number. Records that cannot be parsed (a malformed
JSON line, bytes that are not UTF-8, a lone surrogate escape, a JSON value that is not an
object, a CSV record the csv module gives up on) are returned as `unreadable` rows with their
line and reason, so validation can quarantine them; a file that cannot be read at all raises
`DataReadError` with one line that names the path and the cause. A reader never resumes inside
a record it could not parse, so no row is ever invented from the middle of another.

The records keep the types they were written with (an int stays an int, a nested object stays
an object): the frame is built with `object` columns, and `LoadedData.record` gives the record
as read, for the quarantine file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

SUPPORTED_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# Column names the stages add to records; a data file that uses one is refused (it would be
# overwritten or mistaken for ours).
RESERVED_COLUMNS = ("_line", "_reason", "_source", "_raw")


class DataSettings(BaseModel):
    """Where the labelled data lives and which columns hold what."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="Labelled data file: JSONL, CSV or Parquet.")
    test_path: Path | None = Field(
        default=None,
        description="Optional held-out test file (same columns). Otherwise split from data.path.",
    )
    text_column: str = Field(default="text", description="Column with the input text.")
    label_column: str = Field(default="label", description="Column with the label.")
    id_column: str | None = Field(
        default=None, description="Optional unique id column, checked for uniqueness."
    )
    labels: list[str] | None = Field(
        default=None,
        description="Allowed labels. Inferred from the data (sorted) when absent.",
    )
    target_column: str | None = Field(
        default=None,
        description="Generation (model.task: generation): column with the text to write, e.g. "
        "the summary. Set, it replaces label_column and labels.",
    )

    @model_validator(mode="after")
    def _target_or_labels(self) -> DataSettings:
        if self.target_column is not None and self.labels is not None:
            raise ValueError(
                "data.labels: a generation data set (data.target_column set) has no labels; "
                "remove data.labels"
            )
        return self

    @property
    def y_column(self) -> str:
        """The column a model learns to produce: the target text, else the label."""
        return self.target_column or self.label_column

    @property
    def generation(self) -> bool:
        return self.target_column is not None


class DataReadError(Exception):
    """The file cannot be read at all (missing, empty, binary, unknown format)."""


class SourceSpan(BaseModel):
    """One input (the data file, or a feedback batch) inside a run's row keys.

    A row's key (`_line`) is `offset` + its line in the source, so keys stay unique when several
    sources are read as one data set, and every key maps back to the real file and line.
    """

    name: str  # what `_source` says in the quarantine file: the file name, `feedback:<batch>`
    offset: int = 0
    lines: int = 0  # the source's last line number: its keys are offset+1 .. offset+lines


@dataclass
class LoadedData:
    """Parsed records plus the ones that could not be parsed."""

    frame: pd.DataFrame  # one row per parsed record, with `_line`; object columns
    unreadable: list[dict] = field(default_factory=list)  # {"_line", "_reason", "_raw"}
    records: dict[int, dict] | None = None  # key -> the record as read (types kept), no `_line`
    sources: list[SourceSpan] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        return len(self.frame) + len(self.unreadable)

    def record(self, line: int) -> dict:
        """The record with key `line` as it was read; missing values are None."""
        if self.records is not None:
            return dict(self.records[line])
        row = self.frame.loc[self.frame["_line"] == line].iloc[0].to_dict()
        return {k: _missing_to_none(v) for k, v in row.items() if k != "_line"}

    def origin(self, line: int) -> tuple[str, int]:
        """(source name, line in that source) for a row key."""
        for span in reversed(self.sources):
            if line > span.offset:
                return span.name, line - span.offset
        return (self.sources[0].name if self.sources else ""), line


def _missing_to_none(value: object) -> object:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def detect_format(path: Path) -> str:
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataReadError(
            f"{path}: unsupported file type '{path.suffix}'; use .jsonl, .csv or .parquet"
        )
    return fmt


def read_records(path: Path) -> LoadedData:
    """Parse `path` into records; never raises on a bad record, only on an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise DataReadError(f"{path}: file not found")
    fmt = detect_format(path)
    if path.stat().st_size == 0:
        raise DataReadError(f"{path}: file is empty")
    if fmt == "parquet":
        return _read_parquet(path)
    raw = path.read_bytes()
    if _looks_binary(raw[:4096]):
        raise DataReadError(f"{path}: looks like a binary file, not {fmt.upper()} text")
    if fmt == "jsonl":
        if raw.lstrip().startswith(b"["):
            raise DataReadError(
                f"{path}: holds a JSON array, not JSON Lines; write one object per line"
            )
        records, unreadable, lines = parse_jsonl(raw)
        if not records and not unreadable:
            raise DataReadError(f"{path}: no records (only blank lines)")
        return loaded_from(records, unreadable, SourceSpan(name=path.name, lines=lines))
    return _read_csv(path, raw)


def loaded_from(records: list[dict], unreadable: list[dict], *spans: SourceSpan) -> LoadedData:
    """A `LoadedData` over records that carry their key in `_line`."""
    by_key = {int(r["_line"]): {k: v for k, v in r.items() if k != "_line"} for r in records}
    return LoadedData(_frame(records), unreadable, by_key, list(spans))


def _looks_binary(head: bytes) -> bool:
    """NUL bytes or many control characters: not a text file, whatever its name says."""
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return len(head) > 0 and control / len(head) > 0.1


def _decode(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start})"


def has_lone_surrogate(value: object) -> bool:
    """A string (at any depth, keys too) holding a lone surrogate: no UTF-8 encoding exists."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


def _record_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"JSON {type(value).__name__} where an object was expected"
    reserved = [k for k in RESERVED_COLUMNS if k in value]
    if reserved:
        return f"uses the reserved column name {reserved[0]!r}; rename that field"
    if has_lone_surrogate(value):
        return "lone surrogate escape (not valid Unicode)"
    return None


def parse_jsonl(raw: bytes, offset: int = 0) -> tuple[list[dict], list[dict], int]:
    """JSON Lines bytes -> (records with `_line`, unreadable rows, last line number).

    `offset` is added to every line number (the row key of a source read after another).
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    records: list[dict] = []
    unreadable: list[dict] = []
    lines = raw.splitlines()
    for number, line in enumerate(lines, start=offset + 1):
        if not line.strip():
            continue
        text, problem = _decode(line)
        if problem is None:
            try:
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:  # ValueError: also a 5,000-digit int
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                problem = f"malformed JSON ({reason})"
            else:
                problem = _record_problem(value)
                if problem is None:
                    value["_line"] = number
                    records.append(value)
                    continue
        unreadable.append(
            {"_line": number, "_reason": problem, "_raw": line.decode("utf-8", "replace")}
        )
    return records, unreadable, len(lines)


def _read_csv(path: Path, raw: bytes) -> LoadedData:
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    # A field cannot be longer than the file: with the limit there, the csv module never stops
    # inside a long field (it would resume mid-field and read its lines as rows). Long texts
    # are then quarantined by validation (validate.max_chars).
    if csv.field_size_limit() < len(text) + 1:
        csv.field_size_limit(len(text) + 1)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataReadError(f"{path}: file is empty") from None
    except csv.Error as exc:
        raise DataReadError(f"{path}: unreadable CSV header ({exc})") from None
    _check_header(path, header)
    records: list[dict] = []
    unreadable: list[dict] = []
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # Where the record ends is unknown: stop rather than read its inside as rows.
            unreadable.append(
                {
                    "_line": number,
                    "_reason": f"malformed CSV ({exc}); the rest of the file was not read",
                    "_raw": "",
                }
            )
            break
        if not row:
            continue
        joined = ",".join(row)
        if any("\udc80" <= ch <= "\udcff" for ch in joined):
            unreadable.append(
                {
                    "_line": number,
                    "_reason": "not valid UTF-8",
                    "_raw": joined.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                }
            )
            continue
        if len(row) != len(header):
            unreadable.append(
                {
                    "_line": number,
                    "_reason": f"{len(row)} fields where the header has {len(header)}",
                    "_raw": joined,
                }
            )
            continue
        record = dict(zip(header, row, strict=True))
        record["_line"] = number
        records.append(record)
    if not records and not unreadable:
        raise DataReadError(f"{path}: has a header but no rows")
    return loaded_from(records, unreadable, SourceSpan(name=path.name, lines=reader.line_num))


def _check_header(path: Path, header: list[str]) -> None:
    if any("\udc80" <= ch <= "\udcff" for ch in "".join(header)):
        raise DataReadError(f"{path}: the CSV header is not valid UTF-8")
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise DataReadError(
                f"{path}: CSV header column {position} repeats an earlier name; "
                "give every column its own name"
            )
        if name in RESERVED_COLUMNS:
            raise DataReadError(f"{path}: CSV header uses the reserved column name {name!r}")
        seen.add(name)


def _read_parquet(path: Path) -> LoadedData:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataReadError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    if table.num_rows == 0:
        raise DataReadError(f"{path}: Parquet file has no rows")
    names = table.column_names
    reserved = [n for n in names if n in RESERVED_COLUMNS or n == "__index_level_0__"]
    if "__index_level_0__" in reserved:  # a pandas index written as a column
        table = table.drop(["__index_level_0__"])
        reserved.remove("__index_level_0__")
    if reserved:
        raise DataReadError(f"{path}: uses the reserved column name {reserved[0]!r}")
    if len(set(table.column_names)) != len(table.column_names):
        raise DataReadError(f"{path}: two columns share a name; give every column its own name")
    records = table.to_pylist()  # Python values: ints stay ints, lists and structs stay nested
    for number, record in enumerate(records, start=1):
        record["_line"] = number
    return loaded_from(records, [], SourceSpan(name=path.name, lines=len(records)))


def _frame(records: list[dict]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame({"_line": pd.Series(dtype="int64")})
    frame = pd.DataFrame(records, dtype=object)
    frame["_line"] = frame["_line"].astype("int64")
    return frame


def write_records(rows: list[dict], stem: Path, like: Path) -> Path:
    """Write `rows` next to `stem` in the format of `like` (JSONL, CSV or Parquet).

    Used for the quarantine file, so it opens with the same tools as the input.
    """
    fmt = detect_format(Path(like))
    return write_rows(rows, Path(f"{stem}{'.jsonl' if fmt == 'jsonl' else '.' + fmt}"))


def write_rows(rows: list[dict], path: Path) -> Path:
    """Write `rows` to `path` in the format its suffix names, keeping the values' types.

    JSONL keeps every value as it is. CSV writes values that are not plain scalars as JSON
    text. Parquet keeps a column's type where its values share one, else writes the values
    that are not strings as JSON text.
    """
    path = Path(path)
    fmt = detect_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return path
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tail = [c for c in ("_source", "_line", "_reason") if c in columns]
    if rows and "_reason" in rows[0]:
        columns = [c for c in columns if c not in tail] + tail
    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [_parquet_column([row.get(k) for row in rows]) for k in columns]
    pq.write_table(pa.table(arrays, names=columns), path)
    return path


def _cell(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _parquet_column(values: list) -> object:
    import pyarrow as pa

    try:
        array = pa.array(values)
        if _parquet_writable(array.type):
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    return pa.array(
        [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values],
        type=pa.string(),
    )


def _parquet_writable(kind: object) -> bool:
    """Parquet cannot hold a struct without fields (an empty object) or a null-typed list."""
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_parquet_writable(f.type) for f in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _parquet_writable(kind.value_type)
    return True


def normalise_text(text: str) -> str:
    """Lower-case, collapse whitespace: two texts equal after this are duplicates."""
    return " ".join(str(text).lower().split())
