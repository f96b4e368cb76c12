"""Read a labelled data file (JSONL, CSV or Parquet) without ever crashing on bad bytes.

Every physical record gets a 1-based `_line` number. Records that cannot be parsed (a malformed
JSON line, bytes that are not UTF-8, a JSON value that is not an object) are returned as
`unreadable` rows with their line and reason, so validation can quarantine them; a file that
cannot be read at all raises `DataReadError` with one line that names the path and the cause.
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


@dataclass
class LoadedData:
    """Parsed records plus the ones that could not be parsed."""

    frame: pd.DataFrame  # one row per parsed record, with `_line`
    unreadable: list[dict] = field(default_factory=list)  # {"_line", "_reason", "_raw"}

    @property
    def rows_in(self) -> int:
        return len(self.frame) + len(self.unreadable)


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
        return _read_jsonl(path, raw)
    return _read_csv(path, raw)


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


def _read_jsonl(path: Path, raw: bytes) -> LoadedData:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    stripped = raw.lstrip()
    if stripped.startswith(b"["):
        raise DataReadError(
            f"{path}: holds a JSON array, not JSON Lines; write one object per line"
        )
    records: list[dict] = []
    unreadable: list[dict] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        text, problem = _decode(line)
        if problem is None:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                problem = f"malformed JSON ({exc.msg})"
            else:
                if isinstance(value, dict):
                    value["_line"] = number
                    records.append(value)
                    continue
                problem = f"JSON {type(value).__name__} where an object was expected"
        unreadable.append(
            {"_line": number, "_reason": problem, "_raw": line.decode("utf-8", "replace")}
        )
    if not records and not unreadable:
        raise DataReadError(f"{path}: no records (only blank lines)")
    return LoadedData(_frame(records), unreadable)


def _read_csv(path: Path, raw: bytes) -> LoadedData:
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataReadError(f"{path}: file is empty") from None
    except csv.Error as exc:
        raise DataReadError(f"{path}: unreadable CSV header ({exc})") from None
    records: list[dict] = []
    unreadable: list[dict] = []
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            unreadable.append({"_line": number, "_reason": f"malformed CSV ({exc})", "_raw": ""})
            continue
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
    return LoadedData(_frame(records), unreadable)


def _read_parquet(path: Path) -> LoadedData:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataReadError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    frame = frame.reset_index(drop=True)
    frame["_line"] = range(1, len(frame) + 1)
    if frame.empty:
        raise DataReadError(f"{path}: Parquet file has no rows")
    return LoadedData(frame)


def _frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    if "_line" not in frame:
        frame["_line"] = pd.Series(dtype="int64")
    return frame


def write_records(rows: list[dict], stem: Path, like: Path) -> Path:
    """Write `rows` next to `stem` in the format of `like` (JSONL, CSV or Parquet).

    Used for the quarantine file, so it opens with the same tools as the input. Values that
    are not plain scalars are written as JSON text in CSV and Parquet.
    """
    fmt = detect_format(Path(like))
    path = Path(f"{stem}{'.jsonl' if fmt == 'jsonl' else '.' + fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return path
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if rows and "_reason" in rows[0]:
        columns = [c for c in columns if c not in ("_line", "_reason")] + ["_line", "_reason"]

    def cell(value: object) -> object:
        if value is None or isinstance(value, str | int | float | bool):
            return value
        return json.dumps(value, ensure_ascii=False, default=str)

    if fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: cell(row.get(k)) for k in columns})
        return path
    frame = pd.DataFrame(
        {
            k: pd.Series(
                [row.get(k) if k == "_line" else _as_str(cell(row.get(k))) for row in rows],
                dtype="int64" if k == "_line" else object,
            )
            for k in columns
        }
    )
    frame.to_parquet(path, index=False)
    return path


def _as_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)
