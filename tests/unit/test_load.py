import json

import pandas as pd
import pytest

from tasks.load import DataReadError, read_records

pytestmark = pytest.mark.unit


def test_jsonl_bad_lines_become_unreadable_rows_with_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'{"text": "ok one", "label": "a"}\n'
        b"{not json}\n"
        b'{"text": "bad \xff byte", "label": "a"}\n'
        b"[1, 2]\n"
        b'{"text": "ok two", "label": "b"}\r\n'
    )
    loaded = read_records(path)
    assert list(loaded.frame["_line"]) == [1, 5]
    assert {r["_line"]: r["_reason"].split(" ")[0] for r in loaded.unreadable} == {
        2: "malformed",
        3: "not",
        4: "JSON",
    }
    assert loaded.rows_in == 5


def test_jsonl_with_bom_reads(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "x", "label": "a"}\n')
    assert read_records(path).frame["text"].tolist() == ["x"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b'[{"text": "x"}]', "JSON array"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_unreadable_files_raise_one_clear_error(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataReadError, match=message):
        read_records(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataReadError, match="not found"):
        read_records(tmp_path / "nope.jsonl")
    other = tmp_path / "d.txt"
    other.write_text("x")
    with pytest.raises(DataReadError, match="unsupported"):
        read_records(other)


def test_csv_header_only_and_ragged_rows(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataReadError, match="no rows"):
        read_records(header_only)
    ragged = tmp_path / "r.csv"
    ragged.write_text('text,label\n"hello, world",a\nonly-one-field\n')
    loaded = read_records(ragged)
    assert loaded.frame["text"].tolist() == ["hello, world"]
    assert loaded.unreadable[0]["_line"] == 3


def test_parquet_rows_are_numbered(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}).to_parquet(path)
    assert read_records(path).frame["_line"].tolist() == [1, 2]
    (tmp_path / "bad.parquet").write_text(json.dumps({"not": "parquet"}))
    with pytest.raises(DataReadError, match="Parquet"):
        read_records(tmp_path / "bad.parquet")
