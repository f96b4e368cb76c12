import json

import pytest

from tasks.load import DataSettings, read_records
from tasks.validate import ValidateSettings, ValidationFailed, validate_records

pytestmark = pytest.mark.unit


def _write(tmp_path, rows):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(n=30):
    return [{"text": f"example number {i}", "label": "ab"[i % 2]} for i in range(n)]


def test_every_row_is_accounted_for_with_a_reason(tmp_path):
    rows = _rows() + [
        {"text": None, "label": "a"},
        {"text": "   ", "label": "a"},
        {"text": "unknown label", "label": "zzz"},
        {"text": "Example   number 3", "label": "b"},  # duplicate after normalising
    ]
    path = _write(tmp_path, rows)
    data = DataSettings(path=path, labels=["a", "b"])
    report = validate_records(read_records(path), data, ValidateSettings(min_rows=10))
    assert report.rows_in == 34
    assert report.rows_accepted + report.rows_quarantined == report.rows_in
    assert report.quarantined == {
        31: "text is missing",
        32: "text length out of bounds",
        33: "label not in the allowed set",
        34: "duplicate text",
    }
    assert report.passed


def test_labels_are_inferred_from_frequent_values(tmp_path):
    path = _write(tmp_path, _rows() + [{"text": "rare one", "label": "c"}])
    report = validate_records(
        read_records(path), DataSettings(path=path), ValidateSettings(min_rows=10)
    )
    assert report.labels == ["a", "b"]
    assert report.quarantined[31] == "label not in the allowed set"


def test_missing_column_names_the_key(tmp_path):
    path = _write(tmp_path, _rows())
    with pytest.raises(ValidationFailed, match="data.text_column 'body'"):
        validate_records(
            read_records(path), DataSettings(path=path, text_column="body"), ValidateSettings()
        )


def test_table_level_problems_stop_training(tmp_path):
    rows = _rows(10) + [{"text": None, "label": "a"}] * 5
    path = _write(tmp_path, rows)
    report = validate_records(
        read_records(path),
        DataSettings(path=path, labels=["a", "b"]),
        ValidateSettings(min_rows=20, max_quarantine_fraction=0.2),
    )
    assert not report.passed
    assert any("max_quarantine_fraction" in p for p in report.problems)
    assert any("validate.min_rows=20" in p for p in report.problems)


def test_duplicate_of_a_quarantined_row_keeps_the_valid_one(tmp_path):
    rows = _rows() + [
        {"text": "shared text", "label": "zzz"},
        {"text": "shared text", "label": "a"},
    ]
    path = _write(tmp_path, rows)
    report = validate_records(
        read_records(path),
        DataSettings(path=path, labels=["a", "b"]),
        ValidateSettings(min_rows=10),
    )
    assert report.quarantined == {31: "label not in the allowed set"}
    assert 32 in report.accepted_lines
