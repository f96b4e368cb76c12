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


BAD_INPUTS = {
    # name: (suffix, bytes, expected: "rows" -> quarantined lines, else error substring)
    "malformed_json_line": (".jsonl", b'{"text": "a", "label": "x"}\n{oops\n', {2: "malformed"}),
    "non_utf8_byte": (".jsonl", b'{"text": "a\xff", "label": "x"}\n', {1: "not valid UTF-8"}),
    "non_utf8_csv": (".csv", b"text,label\nok,x\nbad \xfe,x\n", {3: "not valid UTF-8"}),
    "bom_jsonl": (".jsonl", b'\xef\xbb\xbf{"text": "a", "label": "x"}\n', {}),
    "bom_csv": (".csv", b"\xef\xbb\xbftext,label\na,x\n", {}),
    "crlf_jsonl": (".jsonl", b'{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\r\n', {}),
    "crlf_csv": (".csv", b"text,label\r\na,x\r\nb,y\r\n", {}),
    "json_array_in_jsonl": (".jsonl", b'[{"text": "a", "label": "x"}]\n', "JSON array"),
    "empty_jsonl": (".jsonl", b"", "empty"),
    "empty_csv": (".csv", b"", "empty"),
    "header_only_csv": (".csv", b"text,label\n", "no rows"),
    "binary_as_jsonl": (".jsonl", bytes(range(256)) * 8, "binary"),
    "binary_as_csv": (".csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary"),
    "binary_as_parquet": (".parquet", b"\x89PNG\r\n\x1a\n\x00\x00" * 20, "Parquet"),
    "blank_lines_only": (".jsonl", b"\n\n  \n", "no records"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_every_bad_input_gives_rows_or_one_clear_error(tmp_path, name):
    suffix, content, expected = BAD_INPUTS[name]
    path = tmp_path / f"d{suffix}"
    path.write_bytes(content)
    if isinstance(expected, str):
        with pytest.raises(DataReadError, match=expected) as info:
            read_records(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        return
    loaded = read_records(path)
    got = {r["_line"]: r["_reason"] for r in loaded.unreadable}
    assert set(got) == set(expected)
    for line, start in expected.items():
        assert got[line].startswith(start)
    assert loaded.rows_in == len(loaded.frame) + len(got)
    if not expected:
        assert list(loaded.frame.columns[:2]) == ["text", "label"]
        assert all("\r" not in str(v) for v in loaded.frame["label"])


def test_single_2mb_row_is_read(tmp_path):
    path = tmp_path / "big.jsonl"
    big = "word " * 420_000
    path.write_text(json.dumps({"text": big, "label": "x"}) + "\n")
    loaded = read_records(path)
    assert len(loaded.frame.loc[0, "text"]) == len(big)


def _read_back(path):
    """A written file read with the everyday tools (its `_line`/`_reason` columns are reserved
    names for `read_records`)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_write_records_keeps_the_input_format(tmp_path, suffix):
    from tasks.load import write_records

    rows = [{"text": "a", "extra": {"k": 1}, "_line": 3, "_reason": "duplicate text"}]
    out = write_records(rows, tmp_path / "q", tmp_path / f"in{suffix}")
    assert out.suffix == suffix
    (back,) = _read_back(out)
    assert back["_reason"] == "duplicate text" and str(back["_line"]) == "3"
    if suffix != ".csv":  # CSV has text only
        assert back["_line"] == 3


def test_csv_field_over_the_csv_limit_is_one_row_and_invents_none(tmp_path):
    # 200,000 characters (over the csv module's 131,072 default) with lines that look like rows
    long_text = "x" * 200_000 + "\nforged,row\nanother,forged"
    path = tmp_path / "d.csv"
    path.write_text(f'text,label\n"{long_text}",a\nok,b\n')
    loaded = read_records(path)
    assert loaded.frame["text"].tolist() == [long_text, "ok"]
    assert loaded.frame["label"].tolist() == ["a", "b"]
    assert loaded.unreadable == [] and loaded.rows_in == 2


def test_csv_error_stops_instead_of_reading_inside_a_record(tmp_path, monkeypatch):
    import csv

    path = tmp_path / "d.csv"
    path.write_text('text,label\nfirst,a\n"second\nlooks,like a row",b\nlast,a\n')
    real = csv.reader

    def failing_reader(*args, **kwargs):
        rows = real(*args, **kwargs)

        class Reader:
            line_num = 0

            def __iter__(self):
                return self

            def __next__(self):
                row = next(rows)
                self.line_num = rows.line_num
                if row and row[0].startswith("second"):
                    raise csv.Error("simulated")
                return row

        return Reader()

    monkeypatch.setattr(csv, "reader", failing_reader)
    loaded = read_records(path)
    assert loaded.frame["text"].tolist() == ["first"]
    assert [u["_line"] for u in loaded.unreadable] == [3]
    assert "rest of the file was not read" in loaded.unreadable[0]["_reason"]


def test_jsonl_lone_surrogate_and_reserved_names_are_unreadable_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "fine", "label": "a"}\n'
        '{"text": "bad \\ud800 escape", "label": "a"}\n'
        '{"text": "fine too", "label": "a", "meta": {"\\udfff": 1}}\n'
        '{"text": "mine", "label": "a", "_line": 99}\n'
    )
    loaded = read_records(path)
    assert loaded.frame["_line"].tolist() == [1]
    reasons = {u["_line"]: u["_reason"] for u in loaded.unreadable}
    assert reasons[2].startswith("lone surrogate") and reasons[3].startswith("lone surrogate")
    assert "reserved column name '_line'" in reasons[4]


def test_records_keep_their_types_and_origin(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"text": "a", "label": "x", "n": 12, "ssn": 536904399, "nested": {"k": [1, "v"]}}\n'
        '{"text": "b", "label": "y"}\n'
    )
    loaded = read_records(path)
    first = loaded.record(1)
    assert first["n"] == 12 and type(first["n"]) is int and first["nested"] == {"k": [1, "v"]}
    assert loaded.frame.loc[0, "n"] == 12 and type(loaded.frame.loc[0, "n"]) is int
    assert loaded.origin(2) == ("d.jsonl", 2)
    parquet = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a"], "n": pd.array([7], dtype="Int64"), "l": [[1, 2]]}).to_parquet(
        parquet
    )
    record = read_records(parquet).record(1)
    assert record == {"text": "a", "n": 7, "l": [1, 2]} and type(record["n"]) is int
