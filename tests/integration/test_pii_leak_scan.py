"""The leak scan: PII planted everywhere a user can put it never reaches anything the run writes.

Values are planted in the free text, the label, the id, extra columns, nested objects and bare
numbers of a small data file; the retrain flow runs end to end (tiny model, MLflow on SQLite,
the Prefect test server); then EVERY file under the test's folder (run folder, Data Docs,
quarantine, MLflow database and artifacts, feedback store, caches), the Prefect database and
result storage, and the captured logs and output are searched for each value: raw, and as JSON,
CSV or a float would write it. A failure names which file holds which planted value.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from flows.config import load_config
from flows.retrain import retrain
from tunegate.demo_data.loans import generate

pytestmark = pytest.mark.integration

LABELS = ["low_risk", "medium_risk", "high_risk", "decline"]

# name -> the value as planted (every one distinctive: no generator or tokenizer makes it)
PLANTED: dict[str, object] = {
    "email in text": "zq.leakscan@example.org",
    "ssn in text": "536-22-8841",
    "card in text": "4539 5787 6362 1486",
    "phone in text": "(415) 867-5309",
    "name in text": "Adebayo-Okafor",
    "email as label": "mallory.label@example.com",
    "email as id": "ivy.idfield@example.net",
    "ssn as id": "536-22-9914",
    "email in extra column": "xc.extracol@example.org",
    "phone in extra column": "+44 20 7946 0958",
    "email nested": "nest.deep@example.org",
    "card nested in a list": "4716 6126 5206 4279",
    "ssn as a number": 536228843,
    "card as a number": 5425884370374244,
}


def _rows() -> list[dict]:
    """Clean demo rows, then rows carrying the planted values (some accepted, some not)."""
    rows = [
        {"application_id": r["application_id"], "narrative": r["narrative"], "risk_label": lbl}
        for r in generate(n=160, seed=4, defect_rate=0)
        if r["narrative"] and (lbl := r["risk_label"]) in LABELS
    ][:140]
    p = PLANTED
    extra = {
        "contact_email": p["email in extra column"],
        "contact_phone": p["phone in extra column"],
        "meta": {"owner": {"email": p["email nested"]}, "cards": [p["card nested in a list"]]},
        "ssn_number": p["ssn as a number"],
        "card_number": p["card as a number"],
    }
    text = (
        f"Notes on Dr. Oluwaseun {p['name in text']}: $9,000 for solar panels. "
        f"SSN {p['ssn in text']}, card {p['card in text']}, call {p['phone in text']} "
        f"or write to {p['email in text']}. The credit file is excellent."
    )
    planted = [  # the texts differ by their last word, or all but one would be duplicates
        # accepted rows: PII in the text and the extra columns
        {"application_id": "APP-LEAK-1", "narrative": text, "risk_label": "low_risk", **extra},
        {"application_id": p["email as id"], "narrative": text, "risk_label": "decline", **extra},
        {"application_id": p["ssn as id"], "narrative": text, "risk_label": "high_risk"},
        # quarantined rows: a label that is PII, and a row with no text
        {"application_id": "APP-LEAK-4", "narrative": text, "risk_label": p["email as label"]},
        {"application_id": "APP-LEAK-5", "narrative": "", "risk_label": "low_risk", **extra},
    ]
    for i, row in enumerate(planted):
        row["narrative"] = row["narrative"] and f"{row['narrative']} Filed as batch {i + 1}."
    return rows + planted


def _variants(value: object) -> set[str]:
    """The value as it can appear in a file: raw, JSON-escaped, digits only, as a float."""
    if isinstance(value, int):
        return {str(value), repr(float(value)), f"{float(value):.15g}", f"{value:,}"}
    text = str(value)
    out = {text, json.dumps(text)[1:-1]}
    digits = "".join(c for c in text if c.isdigit())
    if len(digits) >= 9 and "@" not in text:  # SSNs, cards, phones written without separators
        out.add(digits)
    return out


def _readable(path: Path) -> list[str]:
    """Every text form of a file: its bytes (as UTF-8 and UTF-16), a parquet file's rows as CSV
    and JSON, a SQLite database's dump."""
    raw = path.read_bytes()
    forms = [raw.decode("utf-8", "replace"), raw.decode("utf-16-le", "ignore")]
    if raw[:4] == b"PAR1":
        frame = pd.read_parquet(path)
        forms += [frame.to_csv(), frame.to_json(orient="records", force_ascii=False)]
    if raw[:16] == b"SQLite format 3\x00":
        forms.append(_sqlite_dump(path))
    return forms


def _sqlite_dump(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return "\n".join(conn.iterdump())


def _leaks(sources: dict[str, list[str]]) -> dict[str, list[str]]:
    """planted value name -> the sources (file paths, 'logs') that hold it in any form."""
    found: dict[str, list[str]] = {}
    for name, value in PLANTED.items():
        variants = _variants(value)
        for source, forms in sources.items():
            if any(v in form for form in forms for v in variants):
                found.setdefault(name, []).append(source)
    return found


def test_no_planted_pii_in_any_file_the_run_writes(
    prefect_backend, tiny_model_dir, tmp_path, caplog, capfd
):
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_LOCAL_STORAGE_PATH

    source = tmp_path / "input" / "loans.jsonl"  # the one file that holds them by design
    source.parent.mkdir()
    rows = _rows()
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    store = out / "mlflow"
    config = load_config(
        None,
        [
            f"data.path={source}",
            "data.text_column=narrative",
            "data.label_column=risk_label",
            "data.id_column=application_id",
            f"data.labels=[{', '.join(LABELS)}]",
            f"model.base_model={tiny_model_dir}",
            "model.max_length=64",
            "train.epochs=1",
            "evaluate.latency_samples=2",
            "evaluate.bootstrap_resamples=50",
            "augment.ratio=0.2",
            "adversarial.max_train_examples=10",
            "adversarial.max_test_examples=10",
            "adversarial.max_steps=1",
            "adversarial.candidates_per_step=2",
            "gate.max_latency_s=600",
            f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db",
            f"mlflow.artifact_location={store}/artifacts",
            "mlflow.registered_model=leak-scan",
            f"work_dir={out}/runs",
            f"feedback.store={out}/feedback",
        ],
    )
    with caplog.at_level("DEBUG"):
        state = retrain(config, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary.rows["in"] == len(rows)
    assert summary.rows["quarantined"] >= 2  # the PII label and the empty text

    prefect_db = Path(PREFECT_API_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    files = [p for p in out.rglob("*") if p.is_file()]
    files += [p for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).rglob("*") if p.is_file()]
    sources = {
        str(p.relative_to(tmp_path) if p.is_relative_to(tmp_path) else p): _readable(p)
        for p in files
    }
    sources["prefect database"] = [_sqlite_dump(prefect_db)]
    captured = capfd.readouterr()
    sources["logs and captured output"] = [caplog.text, captured.out, captured.err]
    # the scan does read what the run wrote: the scrubbed narrative is there, with placeholders
    assert any("The credit file is excellent." in f for forms in sources.values() for f in forms)
    assert len(files) > 20 and any("data_docs" in s for s in sources)

    leaks = _leaks(sources)
    assert leaks == {}, "planted PII found:\n" + "\n".join(
        f"  {name} ({PLANTED[name]!r}): {', '.join(where)}" for name, where in leaks.items()
    )
