"""Feedback batches: record checks, the content-addressed store, merging.

The webhook that receives them is tested in `test_webhook.py`, the deployments in
`test_deploy.py`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tasks.feedback import (
    FeedbackStore,
    RecordsRefused,
    merge_feedback,
    parse_records,
)
from tasks.load import DataSettings

pytestmark = pytest.mark.unit

DATA = DataSettings(
    path=Path("unused.jsonl"),
    text_column="text",
    label_column="label",
    labels=["good", "bad"],
)


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_parse_records_reads_json_and_jsonl_and_names_bad_lines():
    rows = [{"text": "fine", "label": "good"}, {"text": "also", "label": "bad"}]
    assert parse_records(_jsonl(rows), DATA) == rows
    assert parse_records(json.dumps(rows).encode(), DATA) == rows
    assert parse_records(json.dumps({"records": rows}).encode(), DATA) == rows
    body = _jsonl(rows) + b"\n{broken\n" + _jsonl([{"text": "", "label": "good"}, {"text": "x"}])
    body += _jsonl([{"text": "x", "label": "maybe"}])
    with pytest.raises(RecordsRefused) as refused:
        parse_records(body, DATA)
    problems = refused.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 4", "line 5", "line 6", "line 7"]
    assert "malformed JSON" in problems[0] and "allowed labels" in problems[3]
    with pytest.raises(RecordsRefused, match="record 2"):
        parse_records(json.dumps([rows[0], "text"]).encode(), DATA)


def test_store_writes_content_addressed_batches_once(tmp_path):
    store = FeedbackStore(str(tmp_path / "store"))
    rows = [{"text": "a", "label": "good"}, {"label": "bad", "text": "b"}]
    first = store.write_batch(rows)
    again = store.write_batch([dict(reversed(list(r.items()))) for r in rows])  # key order
    assert not first.duplicate and again.duplicate and first.batch_id == again.batch_id
    files = list((tmp_path / "store" / "batches").iterdir())
    assert [f.name for f in files] == [f"{first.batch_id}.jsonl"]  # no temporary file left
    assert store.pending_ids() == [first.batch_id]
    store.mark_included([first.batch_id], "flow-run", "mlflow-run")
    assert store.pending_ids() == [] and store.included_ids() == {first.batch_id}
    assert not store.delivery_seen("d1")
    store.remember_delivery("d1", first.batch_id)
    assert store.delivery_seen("d1")


def test_store_works_on_an_fsspec_url():
    store = FeedbackStore(f"memory://tunegate-test-{time.time_ns()}")
    batch = store.write_batch([{"text": "a", "label": "good"}])
    assert batch.location.startswith("memory://")
    assert store.read_batch(batch.batch_id) == [{"label": "good", "text": "a"}]
    assert store.pending_ids() == [batch.batch_id]


def test_merge_drops_duplicates_applies_relabels_and_keeps_unreadable_lines(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_text(
        '{"id": 1, "text": "Kept as it is", "label": "good"}\n'
        '{"id": 2, "text": "Relabelled later", "label": "good"}\n'
        "{not json\n"
    )
    data = DATA.model_copy(update={"path": base, "id_column": "id"})
    store = FeedbackStore(str(tmp_path / "store"))
    store.write_batch(
        [
            {"id": 9, "text": "kept  as it IS", "label": "good", "extra": "dropped column"},
            {"id": 10, "text": "Relabelled later", "label": "bad"},
            {"id": 11, "text": "Brand new", "label": "bad"},
        ]
    )
    merged = merge_feedback(data, store, tmp_path / "merged.jsonl")
    assert (merged.rows, merged.added, merged.duplicates, merged.relabelled) == (3, 2, 1, 1)
    assert merged.new_batches == merged.batches and len(merged.batches) == 1
    lines = (tmp_path / "merged.jsonl").read_text().splitlines()
    assert lines[-1] == "{not json"
    records = [json.loads(x) for x in lines[:-1]]
    assert records == [
        {"id": 1, "text": "Kept as it is", "label": "good"},
        {"id": 10, "text": "Relabelled later", "label": "bad"},
        {"id": 11, "text": "Brand new", "label": "bad"},
    ]
    store.mark_included(merged.batches, "r", "m")
    again = merge_feedback(data, store, tmp_path / "merged2.jsonl")
    assert again.batches == merged.batches and again.new_batches == []


def test_merge_without_batches_leaves_the_data_alone(tmp_path):
    merged = merge_feedback(DATA, FeedbackStore(str(tmp_path / "s")), tmp_path / "m.jsonl")
    assert merged.merged_path is None and not (tmp_path / "m.jsonl").exists()
