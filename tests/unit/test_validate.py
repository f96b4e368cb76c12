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


def test_regexes_and_user_expectations_from_the_config(tmp_path):
    rows = [dict(r, id=f"A-{i}") for i, r in enumerate(_rows())]
    rows[3]["id"] = "bad-3"
    rows[5]["text"] = "example number 5 has a forbidden #tag"
    path = _write(tmp_path, rows)
    settings = ValidateSettings.model_validate(
        {
            "min_rows": 10,
            "regexes": {"id": r"^A-\d+$", "text": r"^[\w ]+$"},
            "extra_expectations": [
                {
                    "type": "expect_column_values_to_not_match_regex",
                    "kwargs": {"column": "id", "regex": "^A-7$"},
                    "reason": "id 7 is blocked",
                },
                {"type": "expect_table_row_count_to_be_between", "kwargs": {"max_value": 10}},
            ],
        }
    )
    report = validate_records(
        read_records(path), DataSettings(path=path, id_column="id", labels=["a", "b"]), settings
    )
    assert report.quarantined == {
        4: "id does not match validate.regexes",
        6: "text does not match validate.regexes",
        8: "id 7 is blocked",
    }
    assert any("expect_table_row_count_to_be_between failed" in p for p in report.problems)
    assert {e.expectation for e in report.failed_expectations} >= {
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
    }


def test_unknown_expectation_type_is_refused():
    with pytest.raises(ValueError, match="unknown Great Expectations expectation type"):
        ValidateSettings.model_validate({"extra_expectations": [{"type": "expect_magic"}]})


def test_data_docs_are_written_without_any_row_text(tmp_path):
    rows = _rows() + [{"text": "Secret Zanzibar-Quokka example", "label": "zzz"}]
    rows.append(dict(rows[0]))  # a duplicate: its value must not reach the docs either
    path = _write(tmp_path, rows)
    report = validate_records(
        read_records(path),
        DataSettings(path=path, labels=["a", "b"]),
        ValidateSettings(min_rows=10),
        docs_dir=tmp_path / "docs",
    )
    assert report.data_docs and report.data_docs.endswith("index.html")
    written = "".join(
        p.read_text(errors="replace") for p in (tmp_path / "docs").rglob("*") if p.is_file()
    )
    assert "expect_column_values_to_be_in_set" in written or "be in set" in written.lower()
    assert "Zanzibar" not in written and "example number 0" not in written


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


def test_generation_rows_need_a_target_and_no_labels(tmp_path):
    rows = [{"note": f"note number {i}", "summary": f"summary {i}"} for i in range(30)]
    rows += [
        {"note": "no summary here"},
        {"note": "blank summary", "summary": "  "},
        {"note": "a summary with an address", "summary": "call me at jane@example.org"},
    ]
    path = _write(tmp_path, rows)
    data = DataSettings(path=path, text_column="note", target_column="summary")
    report = validate_records(read_records(path), data, ValidateSettings(min_rows=10))
    assert report.labels == [] and report.passed
    assert report.quarantined == {31: "target is missing", 32: "target is blank or too long"}
    assert report.rows_accepted == 31
    # the suite sees hashes and lengths of the target, never its text
    assert "jane@example.org" not in report.model_dump_json()
    with pytest.raises(ValidationFailed, match="data.target_column 'summary_text'"):
        validate_records(
            read_records(path),
            data.model_copy(update={"target_column": "summary_text"}),
            ValidateSettings(),
        )
    with pytest.raises(ValueError, match="data.labels"):
        DataSettings(path=path, target_column="summary", labels=["a", "b"])


def test_list_or_object_values_and_numbers_are_quarantined_or_read_not_crashing(tmp_path):
    rows = _rows() + [
        {"text": ["a", "list"], "label": "a"},
        {"text": {"an": "object"}, "label": "b"},
        {"text": "label is a list", "label": ["a"]},
        {"text": "label is an object", "label": {"x": "a"}},
    ]
    path = _write(tmp_path, rows)
    report = validate_records(
        read_records(path),
        DataSettings(path=path, labels=["a", "b"]),
        ValidateSettings(min_rows=10),
    )
    assert report.quarantined == {
        31: "text is a list, not a string",
        32: "text is an object, not a string",
        33: "label is a list, not a string",
        34: "label is an object, not a string",
    }
    assert report.rows_accepted == 30


PLANTED = ["jane.roe@example.org", "536-90-4399", "4111111111111111", "Zanzibar-Quokka"]


def test_gx_results_and_docs_hold_no_label_id_or_extra_column_value(tmp_path):
    rows = [dict(r, id=f"A-{i}", note="ok") for i, r in enumerate(_rows())]
    rows[1]["label"] = PLANTED[0]  # a label outside the set: GX used to store it
    rows[2]["id"] = PLANTED[1]  # fails validate.regexes on id
    rows[3]["note"] = PLANTED[2]  # fails a user expectation on note
    rows[4]["note"] = PLANTED[3]
    rows[5]["id"] = rows[6]["id"] = "A-dup"  # duplicate ids: their value must not be stored
    path = _write(tmp_path, rows)
    settings = ValidateSettings.model_validate(
        {
            "min_rows": 10,
            "regexes": {"id": r"^A-"},
            "extra_expectations": [
                {
                    "type": "expect_column_values_to_match_regex",
                    "kwargs": {"column": "note", "regex": "^ok$"},
                    "reason": "note is not ok",
                },
                {
                    "type": "expect_column_distinct_values_to_be_in_set",
                    "kwargs": {"column": "note", "value_set": ["ok"]},
                },
            ],
        }
    )
    data = DataSettings(path=path, id_column="id", labels=["a", "b"])
    report = validate_records(read_records(path), data, settings, docs_dir=tmp_path / "docs")
    # the expectations decide as before
    assert report.quarantined == {
        2: "label not in the allowed set",
        3: "id does not match validate.regexes",
        4: "note is not ok",
        5: "note is not ok",
        7: "duplicate id",
    }
    assert any("expect_column_distinct_values_to_be_in_set failed" in p for p in report.problems)
    assert report.data_docs
    written = [p for p in (tmp_path / "docs").rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written)  # stored validation results
    text = "".join(p.read_text(errors="replace") for p in written)
    text += report.model_dump_json()
    for value in [*PLANTED, "A-dup"]:
        assert value not in text
