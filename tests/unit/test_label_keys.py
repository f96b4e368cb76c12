"""User strings (labels, ids, column names) inside names: escaped, hashed, mapped, never raw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from flows.config import load_config
from tasks.evaluate import EvalResult, EvaluateSettings, cached_baseline, classification_metrics
from tasks.metrics import name_key, name_keys, per_class_metrics
from tasks.report import md, plot_confusion, write_report

pytestmark = pytest.mark.unit

HOSTILE = [
    "reverted_card_payment?",
    "Refund",
    "refund",
    "a/b #1 %50",
    "café ünïcödé 日本",
    "..",
    "",
    "$x^{$ | pipe\nnext line",
    "long " * 60,
]


def _usable(key: str) -> None:
    _validate_metric_name(f"class_count/train/{key}")
    _validate_param_name(f"gate.class_min_f1.{key}")
    assert "/" not in key and key not in {".", ".."} and len(key) <= 64
    assert Path(key).name == key  # one path segment: a file name


def test_every_hostile_label_gets_a_usable_distinct_key():
    keys = name_keys(HOSTILE)
    for key in keys.values():
        _usable(key)
    assert len({k.lower() for k in keys.values()}) == len(HOSTILE)
    assert keys["refund"] == "refund"  # already safe: kept readable
    assert keys["reverted_card_payment?"].startswith("reverted_card_payment-")
    assert name_key("Refund") == keys["Refund"]  # the same key in every run and label set


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=8, unique=True))
def test_any_strings_map_to_usable_keys_unique_ignoring_case(names):
    keys = name_keys(names)
    for key in keys.values():
        _usable(key)
    assert len({k.lower() for k in keys.values()}) == len(set(names))


def test_a_label_chosen_to_look_like_another_ones_key_is_refused_by_name():
    with pytest.raises(ValueError, match="rename one"):
        name_keys(["Refund", name_key("Refund").lower()])


def test_per_class_metrics_are_renamed_by_label_key_others_kept():
    metrics = {"f1_macro": 0.5, "f1/a/b #1": 0.25, "f1/ok": 1.0, "latency_p95_s": 0.1}
    out = per_class_metrics(metrics, ["a/b #1", "ok"])
    assert out == {
        "f1_macro": 0.5,
        f"f1/{name_key('a/b #1')}": 0.25,
        "f1/ok": 1.0,
        "latency_p95_s": 0.1,
    }


def test_user_keyed_settings_are_one_json_param(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "t", "label": "a"}\n')
    config = load_config(
        None, [f"data.path={data}", 'gate.class_min_f1={"card lost?": 0.3, "refund": 0.2}']
    )
    flat = config.flat()
    assert json.loads(flat["gate.class_min_f1"]) == {"card lost?": 0.3, "refund": 0.2}
    for name in flat:
        _validate_param_name(name)
    assert "train.epochs" in flat  # sections still flatten into dotted names


def test_baseline_cache_keys_tell_models_with_one_folder_name_apart(tmp_path, monkeypatch):
    """`org-a/bert` and `org-b/bert` once shared a cache file: the second got the first's baseline."""
    import tasks.evaluate as evaluate

    calls: list[str] = []

    def fake_baseline(base_model, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(base_model)
        return EvalResult(metrics={"f1_macro": len(calls) / 10})

    monkeypatch.setattr(evaluate, "few_shot_baseline", fake_baseline)
    args = ("v1", Path("t"), Path("t"), ["a"], EvaluateSettings(), 0)
    first, _ = cached_baseline(tmp_path, "org-a/bert?", *args)
    second, cached = cached_baseline(tmp_path, "org-b/bert?", *args)
    again, cached_again = cached_baseline(tmp_path, "org-a/bert?", *args)
    assert not cached and calls == ["org-a/bert?", "org-b/bert?"]
    assert second.metrics != first.metrics and cached_again and again == first
    for path in tmp_path.iterdir():
        assert "?" not in path.name


def test_report_and_confusion_plot_take_markdown_and_math_characters(tmp_path):
    labels = ["$x^{$ | pipe\nnext", "refund", "long " * 60]
    result = classification_metrics(labels * 2, labels[::-1] * 2, labels)
    report = write_report(result, None, None, tmp_path / "evaluation.md").read_text()
    rows = report.split("| class |")[1].split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 3
    assert all(row.replace("\\|", "").count("|") == 6 for row in rows)
    assert md("a|b\nc") == "a\\|b c"
    plot = plot_confusion(result, tmp_path / "confusion.png", "Candidate")
    assert plot.stat().st_size > 0
