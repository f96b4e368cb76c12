"""Feedback batches: record checks, the content-addressed private store, the
record-level merge, batch states (included, quarantined, excluded), retention, the lock.

The webhook that receives them is tested in `test_webhook.py`, the deployments in
`test_deploy.py`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tasks.dataset import load_dataset, merge_records
from tasks.feedback import (
    FeedbackInput,
    FeedbackStore,
    RecordsRefused,
    parse_records,
)
from tasks.load import DataSettings
from tasks.pii import PIISettings, write_quarantine
from tasks.validate import ValidateSettings, validate_records

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


def test_merge_is_record_level_keeps_origins_and_writes_nothing(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_bytes(
        b'{"id": 1, "text": "Kept as it is", "label": "good"}\n'
        b'{"id": 2, "text": "Relabelled later", "label": "good"}\n'
        b"{not json\n"
        b'{"id": 3, "text": "bad \xff byte", "label": "good"}\n'
    )
    data = DATA.model_copy(update={"path": base, "id_column": "id"})
    store = FeedbackStore(str(tmp_path / "store"))
    batch = store.write_batch(
        [
            {"id": 9, "text": "kept  as it IS", "label": "good", "extra": "dropped column"},
            {"id": 10, "text": "Relabelled later", "label": "bad"},
            {"id": 11, "text": "Brand new", "label": ["not", "a", "string"]},
        ]
    ).batch_id
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    loaded, merged = merge_records(data, store, [batch])
    assert (merged.rows, merged.added, merged.duplicates, merged.relabelled) == (3, 2, 1, 1)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before  # nothing written
    # every row keeps its real file and line; undecodable bytes stay unreadable (no U+FFFD row)
    origins = {loaded.origin(k): loaded.record(k) for k in loaded.frame["_line"]}
    assert origins == {
        ("base.jsonl", 1): {"id": 1, "text": "Kept as it is", "label": "good"},
        (f"feedback:{batch}", 2): {"id": 10, "text": "Relabelled later", "label": "bad"},
        (f"feedback:{batch}", 3): {"id": 11, "text": "Brand new", "label": ["not", "a", "string"]},
    }
    assert [(loaded.origin(u["_line"]), u["_reason"][:9]) for u in loaded.unreadable] == [
        (("base.jsonl", 3), "malformed"),
        (("base.jsonl", 4), "not valid"),
    ]
    settings = ValidateSettings(min_rows=1, min_rows_per_class=1)
    report = validate_records(loaded, data, settings)
    assert report.rows_in == 5 and report.rows_accepted == 2
    quarantine = write_quarantine(
        loaded, report.quarantined, PIISettings(), tmp_path / "q", base
    ).read_text()
    where = {
        (q["_source"], q["_line"]): q["_reason"] for q in map(json.loads, quarantine.splitlines())
    }
    assert where == {
        ("base.jsonl", 3): where[("base.jsonl", 3)],
        ("base.jsonl", 4): where[("base.jsonl", 4)],
        (f"feedback:{batch}", 3): "label is a list, not a string",
    }


def test_load_dataset_reads_the_same_rows_for_validation_and_scrubbing(tmp_path):
    base = tmp_path / "base.jsonl"
    base.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": "good"}) + "\n" for i in range(3))
    )
    store = FeedbackStore(str(tmp_path / "store"))
    batch = store.write_batch([{"text": "new row", "label": "bad"}]).batch_id
    data = DATA.model_copy(update={"path": base})
    assert load_dataset(data).rows_in == 3
    source = FeedbackInput(store=str(tmp_path / "store"), batches=[batch])
    both = load_dataset(data, source)
    assert (
        both.rows_in == 4
        and both.origin(int(both.frame["_line"].iloc[-1]))[0] == f"feedback:{batch}"
    )


def test_store_files_are_private_and_old_merged_files_are_removed(tmp_path):
    import os
    import stat

    root = tmp_path / "store"
    (root / "merged").mkdir(parents=True)
    (root / "merged" / "run.jsonl").write_text('{"text": "raw left by a killed run"}\n')
    old = os.umask(0o022)
    try:
        store = FeedbackStore(str(root))
        store.write_batch([{"text": "a", "label": "good"}])
        store.remember_delivery("d1", "b")
        store.mark_included(store.batch_ids(), "r", "m")
    finally:
        os.umask(old)
    assert not (root / "merged").exists()
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_retention_deletes_raw_batches_once_decided_and_keeps_the_ledger(tmp_path):
    store = FeedbackStore(str(tmp_path / "store"))
    included = store.write_batch([{"text": "a", "label": "good"}]).batch_id
    pending = store.write_batch([{"text": "b", "label": "good"}]).batch_id
    store.mark_included([included], "run-1", "m-1")
    now = time.time()
    assert store.prune(30, now=now) == []  # just included: kept
    assert store.prune(None, now=now + 365 * 86400) == []  # null: kept for ever
    assert store.prune(30, now=now + 31 * 86400) == [included]
    assert store.batch_ids() == [pending]  # a pending batch is never pruned
    states = {s.batch_id: s for s in store.states()}
    assert states[included].state == "included" and states[included].raw_deleted
    assert states[included].flow_run == "run-1" and states[pending].state == "pending"


def test_batch_states_exclude_and_quarantine_take_batches_out(tmp_path, capsys):
    from tunegate.cli import main

    root = tmp_path / "store"
    store = FeedbackStore(str(root))
    ids = [store.write_batch([{"text": t, "label": "good"}]).batch_id for t in "abcd"]
    store.mark_included([ids[0]], "run-7", "m-7")
    store.quarantine_batch(
        ids[1], "9 of 10 rows quarantined: label not in the allowed set (9)", "run-8"
    )
    sets = ["--set", f"feedback.store={root}"]
    assert main(["feedback", "exclude", ids[2][:10], *sets]) == 0
    assert store.active_ids() == [ids[0], ids[3]] and store.pending_ids() == [ids[3]]
    capsys.readouterr()
    assert main(["feedback", "list", "--json", *sets]) == 0
    listed = {x["batch_id"]: x for x in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {b: x["state"] for b, x in listed.items()} == {
        ids[0]: "included",
        ids[1]: "quarantined",
        ids[2]: "excluded",
        ids[3]: "pending",
    }
    assert listed[ids[0]]["flow_run"] == "run-7" and "label not in" in listed[ids[1]]["reason"]
    assert main(["feedback", "list", *sets]) == 0
    table = capsys.readouterr().out
    assert "included in run run-7" in table and "excluded: excluded by an operator" in table
    for bad in ("nothex!", "abc", "0" * 12):
        assert main(["feedback", "exclude", bad, *sets]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err


def test_a_mostly_quarantined_batch_is_quarantined_and_leaves_the_run(tmp_path, monkeypatch):
    import logging

    import flows.retrain as retrain_module
    from flows.config import load_config
    from tasks.dataset import merge_feedback_task
    from tasks.validate import validate_task

    base = tmp_path / "base.jsonl"
    base.write_text(
        "".join(
            json.dumps({"text": f"row {i}", "label": "good bad".split()[i % 2]}) + "\n"
            for i in range(40)
        )
    )
    store = FeedbackStore(str(tmp_path / "store"))
    good = store.write_batch([{"text": "fine new row", "label": "bad"}]).batch_id
    bad = store.write_batch(
        [{"text": f"{'far too long ' * 3}{i}", "label": "good"} for i in range(12)]
    )
    config = load_config(
        None,
        [
            f"data.path={base}",
            "data.labels=[good, bad]",
            f"feedback.store={tmp_path / 'store'}",
            f"work_dir={tmp_path / 'runs'}",
            "validate.min_rows=10",
            "validate.max_chars=30",  # every row of the bad batch is longer
            "validate.data_docs=false",
        ],
    )
    monkeypatch.setattr(retrain_module, "validate_task", validate_task.fn)
    monkeypatch.setattr(retrain_module, "merge_feedback_task", merge_feedback_task.fn)
    monkeypatch.setattr(retrain_module, "get_run_logger", lambda: logging.getLogger("t"))
    feedback = merge_feedback_task.fn(config.data, config.feedback, "run")
    report = validate_task.fn(config.data, config.validate_, tmp_path / "cache", feedback.source)
    assert not report.passed  # before: every later retrain failed on the quarantine limit
    kept = retrain_module._quarantine_bad_batches(config, tmp_path / "cache", feedback, "run")
    assert kept.batches == [good] and list(kept.quarantined_batches) == [bad.batch_id]
    assert "12 of 12 rows quarantined" in kept.quarantined_batches[bad.batch_id]
    assert store.active_ids() == [good]
    state = {s.batch_id: s for s in store.states()}[bad.batch_id]
    assert state.state == "quarantined" and "text length out of bounds (12)" in state.reason
    report = validate_task.fn(config.data, config.validate_, tmp_path / "cache", kept.source)
    assert report.passed and report.rows_in == 41


def test_feedback_run_takes_the_lock_before_looking_for_pending_batches(tmp_path, monkeypatch):
    import contextlib
    import logging

    import flows.retrain as retrain_module
    from flows.config import load_config

    base = tmp_path / "base.jsonl"
    base.write_text(json.dumps({"text": "x", "label": "good"}) + "\n")
    store = FeedbackStore(str(tmp_path / "store"))
    batch = store.write_batch([{"text": "a", "label": "good"}]).batch_id
    config = load_config(None, [f"data.path={base}", f"feedback.store={tmp_path / 'store'}"])

    @contextlib.contextmanager
    def lock_taken_after_another_run(*args, **kwargs):
        store.mark_included([batch], "the-other-run", "m")  # it finished while we waited
        yield

    def must_not_start(*args, **kwargs):
        raise AssertionError("retrained on batches another run already took")

    monkeypatch.setattr(retrain_module, "concurrency", lock_taken_after_another_run)
    monkeypatch.setattr(retrain_module, "get_run_logger", lambda: logging.getLogger("t"))
    monkeypatch.setattr(retrain_module, "open_tracking", must_not_start)
    state = retrain_module.retrain.fn(config, only_new_feedback=True)
    assert "nothing to retrain" in state.message
