"""`tunegate validate` and `tunegate scrub`: exit codes, one-line errors, summary, audit."""

import json

import pytest

from tunegate.cli import main

pytestmark = pytest.mark.unit


def _rows(n=24):
    return [
        {"text": f"Loan request number {i} for Mr. Tobias Okonjo", "label": "ab"[i % 2]}
        for i in range(n)
    ]


def test_validate_exit_codes_and_summary(tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(30)))
    summary = tmp_path / "s.json"
    sets = ["--set", "validate.min_rows=10", "--set", "validate.data_docs=false"]
    code = main(
        ["validate", str(good), *sets, "--summary-json", str(summary), "--out", str(tmp_path / "o")]
    )
    assert code == 0
    data = json.loads(summary.read_text())
    assert data["rows"] == {"in": 30, "accepted": 30, "quarantined": 0}
    assert data["failed_expectations"] == []

    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in _rows()) + "{broken\n" * 20)
    code = main(
        ["validate", str(bad), *sets, "--summary-json", str(summary), "--out", str(tmp_path / "o")]
    )
    assert code == 1
    data = json.loads(summary.read_text())
    assert data["rows"] == {"in": 44, "accepted": 24, "quarantined": 20}
    assert "max_quarantine_fraction" in data["problems"][0]
    quarantine = (tmp_path / "o" / "bad_quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) == 20 and json.loads(quarantine[0])["_reason"].startswith("malformed")

    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    capsys.readouterr()
    assert main(["validate", str(binary), *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "binary" in err and "Traceback" not in err


def test_scrub_writes_the_output_and_prints_the_audit(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)))
    out = tmp_path / "out.csv"
    assert main(["scrub", str(source), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "text" in printed and "PERSON" in printed and "Okonjo" not in printed
    assert "Okonjo" not in out.read_text() and "<PERSON_1>" in out.read_text()


def test_scrub_reads_its_section_through_config_and_set(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)))
    out = tmp_path / "out.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text("pii: {entities: [PERSON]}\n")
    # --set overrides the file, as for `tunegate run`: PERSON is not scrubbed any more
    assert main(["scrub", str(source), str(out), "--config", str(config), "--set", "pii.entities=[EMAIL_ADDRESS]"]) == 0  # fmt: skip
    assert "Okonjo" in out.read_text()
    capsys.readouterr()
    assert main(["scrub", str(source), str(out), "--set", "pii.entitys=[PERSON]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunegate: config error: pii.entitys: unknown key")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_quarantine_and_scrub_output_scrub_nested_values_and_numbers_keep_types(tmp_path):
    rows = [{"text": f"row number {i}", "label": "ab"[i % 2], "n": i} for i in range(24)]
    rows.append(
        {
            "text": "quarantined for its label",
            "label": "zzz",
            "n": 7,
            "ssn": 536904399,
            "card": 4111111111111111,
            "contact": {"email": "jane.roe@example.org", "phones": ["+1 415 555 0143"]},
            "tags": ["mail jane.roe@example.org", 3, True, None],
        }
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = ["--set", "validate.min_rows=10", "--set", "validate.data_docs=false"]
    assert main(["validate", str(source), *sets, "--out", str(tmp_path / "o")]) == 0
    (quarantined,) = [
        json.loads(x) for x in (tmp_path / "o" / "in_quarantine.jsonl").read_text().splitlines()
    ]
    out = tmp_path / "out.jsonl"
    assert main(["scrub", str(source), str(out)]) == 0
    scrubbed = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["n"] for r in scrubbed] == [r["n"] for r in rows]  # ints stay ints
    assert all(type(r["n"]) is int for r in scrubbed)
    for record in (quarantined, scrubbed[-1]):
        written = json.dumps(record)
        for value in ("536904399", "4111111111111111", "jane.roe", "555 0143"):
            assert value not in written
        assert record["n"] == 7 and record["tags"][1:] == [3, True, None]
        assert record["contact"]["email"].startswith("<EMAIL")
    assert quarantined["_source"] == "in.jsonl" and quarantined["_line"] == 25


def test_reviews_file_is_the_generator_output_byte_for_byte(tmp_path):
    """`data/loan_reviews.jsonl` is shipped: `demo-data --kind reviews` rewrites it exactly, and
    every specific of a reference review is in its own narrative (no unsupported details)."""
    from pathlib import Path

    from tasks.unsupported import unsupported_details

    out = tmp_path / "reviews.jsonl"
    assert main(["demo-data", "--kind", "reviews", "--out", str(out)]) == 0
    shipped = Path(__file__).resolve().parents[2] / "data" / "loan_reviews.jsonl"
    assert out.read_bytes() == shipped.read_bytes()
    rows = [json.loads(line) for line in shipped.read_text().splitlines()]
    assert len(rows) == 480 and len({r["id"] for r in rows}) == 480
    assert all(not unsupported_details(r["review"], r["narrative"])[1] for r in rows)
    # varied wording: no single review text repeats often, several headers appear
    assert len({r["review"] for r in rows}) > 0.9 * len(rows)
    assert {r["review"].split(":")[0] for r in rows} == {"Risk flags", "Flags", "Risks"}
