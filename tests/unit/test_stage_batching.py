"""Work the data stages do once per batch, not once per row or per split: what keeps them linear
in the rows on templated data (benchmarks/stage_scaling.py). Counted, not timed."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import tasks.pii.scrub as scrub_module
import tasks.split as split_module
from tasks.load import SourceSpan, loaded_from
from tasks.pii import PIIAudit, PIISettings, scrub_record, write_quarantine
from tasks.split import SplitSettings, near_duplicates, write_splits
from tunegate.demo_data.intents import generate_intents

pytestmark = pytest.mark.unit


def _counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, name)

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_quarantined_rows_are_scrubbed_in_one_batch_with_the_per_row_result(tmp_path, monkeypatch):
    # 40 duplicates of templated data (the quarantine of a large file is mostly these), some
    # with PII in the text and in nested values, and one unreadable line holding an email
    records = []
    for i in range(40):
        text = f"call me on +44 20 7946 {1000 + i} please" if i % 3 else f"lost card {i}"
        record = {"text": text, "label": "card_lost"}
        if i % 5 == 0:
            record["meta"] = {"email": f"user{i}@example.com", "ids": [i, "ok"]}
        records.append({"_line": i + 1, **record})
    loaded = loaded_from(
        records,
        [{"_line": 41, "_reason": "malformed JSON", "_raw": "{bad ann@example.com"}],
        SourceSpan(name="data.jsonl", lines=41),
    )
    quarantined = {i: "duplicate text" for i in range(1, 41)} | {41: "malformed JSON"}
    settings = PIISettings()
    want_audit = PIIAudit()
    want = [scrub_record(loaded.record(i), settings, want_audit) for i in range(1, 41)]
    want.append(scrub_record({"_raw": "{bad ann@example.com"}, settings, want_audit))

    calls = _counting(monkeypatch, scrub_module, "scrub_records")
    audit = PIIAudit()
    path = write_quarantine(
        loaded, quarantined, settings, tmp_path / "q", tmp_path / "data.jsonl", audit
    )
    assert len(calls) == 2  # the rows' values, then each distinct reason once
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert [{k: v for k, v in g.items() if not k.startswith("_")} for g in got[:40]] == want[:40]
    assert got[40]["_raw"] == want[40]["_raw"] == "{bad <EMAIL_1>"
    assert [(g["_source"], g["_line"], g["_reason"]) for g in got[:2]] == [
        ("data.jsonl", 1, "duplicate text"),
        ("data.jsonl", 2, "duplicate text"),
    ]
    assert audit.as_dict() == want_audit.as_dict()
    assert audit.entities["PHONE_NUMBER"] == 26 and audit.entities["EMAIL_ADDRESS"] == 9


def test_split_builds_the_training_signatures_once_for_val_and_test(tmp_path, monkeypatch):
    rows = [{"text": r["utterance"], "label": r["intent"]} for r in generate_intents(n=600)]
    frame = pd.DataFrame(rows).drop_duplicates("text").reset_index(drop=True)
    frame.insert(0, "_line", range(1, len(frame) + 1))
    frame.to_parquet(tmp_path / "accepted.parquet", index=False)
    settings = SplitSettings(near_duplicate_threshold=0.5)

    calls = _counting(monkeypatch, split_module, "minhash_signatures")
    result = write_splits(tmp_path / "accepted.parquet", settings, tmp_path / "splits")
    assert len(calls) == 3  # train once, val, test
    train = pd.read_parquet(result.train_path)
    for name, path in (("val", result.val_path), ("test", result.test_path)):
        alone = near_duplicates(train, pd.read_parquet(path), settings.near_duplicate_threshold)
        assert result.near_duplicates[name] == len(alone) > 0


def test_a_large_scrub_forks_one_pool_and_matches_the_in_process_result(monkeypatch):
    # 4,100 values: three 2,000-value steps, which used to fork a pool each
    def name(i: int) -> str:  # letters only: digits would wake the slower number detectors
        return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(i))

    texts = [f"mail ann.{name(i)}@example.com about the card" for i in range(4100)]
    texts[7] = None
    settings = PIISettings(processes=2)  # the default settings' scrubber: loaded once per run
    alone = [None if t is None else scrub_module.scrub_one(t, settings) for t in texts]
    pools = _counting(monkeypatch, scrub_module, "ProcessPoolExecutor")
    records = scrub_module.scrub_records({"text": texts}, settings, PIIAudit(), rows=len(texts))
    pooled = [r.values["text"] for r in records]
    assert len(pools) == 1
    assert pooled[7] is None and alone[7] is None
    assert [(r.text, r.counts) for r in pooled if r] == [(r.text, r.counts) for r in alone if r]
    assert pooled[0].text == "mail <EMAIL_1> about the card"
