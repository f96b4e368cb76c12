"""The approval step's pieces without a server: refusal, the form, the decision's tags, the
review a person reads; and the production-corrections slice and its gate check."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.approval import (
    COMMENT_MAX,
    Approval,
    ApprovalInput,
    ApprovalRefused,
    apply_decision,
    needs_approval,
    rejected_state,
    require_approver,
    review_markdown,
)
from flows.config import load_config
from flows.record import Evaluation, RetrainSummary
from tasks.dataset import merge_records
from tasks.evaluate import classification_metrics, generation_metrics
from tasks.feedback import FeedbackStore
from tasks.gate import GateSettings, ProductionSlice, decide_promotion
from tasks.load import DataSettings
from tasks.production import production_lines, production_positions, slice_result
from tasks.registry import Registration
from tunegate.commands.common import CLIError
from tunegate.commands.run import _preflight

pytestmark = pytest.mark.unit

REQUIRED = GateSettings(approval="required", max_regression=0.02)
PASSING = {"f1_macro": 0.95, "latency_p95_s": 0.01, "f1/a": 0.95, "f1/b": 0.95}


def _data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) + "\n" for i in range(6))
    )
    return path


# ------------------------------------------------------------------ refusing early


def test_required_approval_without_a_prefect_server_is_refused_with_what_to_start():
    with pytest.raises(ApprovalRefused) as refused:
        require_approver(REQUIRED, None)
    message = str(refused.value)
    assert "PREFECT_API_URL" in message and "prefect server start" in message
    assert "tunegate serve" in message and "gate.approval=none" in message
    require_approver(REQUIRED, "http://127.0.0.1:4200/api")  # a server: fine
    require_approver(GateSettings(), None)  # approval none: nothing to refuse


def test_tunegate_run_refuses_before_reading_data_or_training(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = load_config(None, [f"data.path={_data_file(tmp_path)}", "gate.approval=required"])
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(CLIError) as refused:
        _preflight(config)
    assert refused.value.code == 2 and "gate.approval=required" in str(refused.value)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        _preflight(config)  # with a server address the preflight lets it through


def test_only_a_passing_gate_asks_a_person():
    passed = decide_promotion(PASSING, {"f1_macro": 0.5}, None, REQUIRED)
    failed = decide_promotion({**PASSING, "f1_macro": 0.1}, {"f1_macro": 0.5}, None, REQUIRED)
    assert needs_approval(REQUIRED, passed) and not needs_approval(REQUIRED, failed)
    assert not needs_approval(GateSettings(), passed)


# ------------------------------------------------------------------ the form and the decision


def test_form_caps_the_comment_and_keeps_it_one_line():
    answer = ApprovalInput(decision="reject", comment="bad\n| <b>" + "x" * 2000, reviewer="")
    assert len(answer.comment) == COMMENT_MAX and "\n" not in answer.comment
    with pytest.raises(ValueError):
        ApprovalInput(decision="maybe")


class FakeRegistry:
    def __init__(self) -> None:
        self.tags: dict[str, str] = {"gate": "awaiting-approval"}

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[key] = value


def test_rejection_tags_the_version_and_promotes_nothing():
    client = FakeRegistry()
    registration = Registration(name="m", version="3", aliases=["challenger"], promoted=False)
    rejected = apply_decision(
        client, registration, Approval(decision="reject", by="ana", comment="worse on refunds"), "2"
    )
    assert not rejected.promoted and "reject by ana" in rejected.note
    assert client.tags == {
        "gate": "rejected",  # `tunegate promote 3` now refuses it without --force
        "tunegate.approval": "rejected",
        "tunegate.approval.by": "ana",
        "tunegate.approval.comment": "worse on refunds",
    }
    timeout = Approval(decision="timeout", by="timeout", comment="")
    assert timeout.tags()["tunegate.approval"] == "timed-out"


def test_rejected_runs_end_cancelled_named_rejected_with_the_summary():
    summary = RetrainSummary(
        mlflow_run_id="r",
        prefect_flow_run_id=None,
        dataset_version="v",
        rows={},
        metrics={},
        gate={},
        model={"name": "m", "version": "3", "note": "reject by ana: champion unchanged"},
        run_dir="/tmp",
        tracking_uri="sqlite:///x.db",
    )
    state = rejected_state(summary)
    assert state.name == "Rejected" and state.is_cancelled() and not state.is_failed()
    assert "reject by ana" in state.message


# ------------------------------------------------------------------ what the reviewer reads


def test_review_shows_twenty_outputs_beside_the_champions_and_escapes_user_strings(tmp_path):
    labels = ["ok", "a|b"]
    refs = [labels[i % 2] for i in range(30)]
    mine = list(refs)
    theirs = list(refs)
    theirs[25] = "ok" if refs[25] != "ok" else "a|b"  # one disagreement, listed first
    test_path = tmp_path / "test.parquet"
    pd.DataFrame({"_line": range(30), "text": [f"text {i}" for i in range(30)]}).to_parquet(
        test_path
    )
    evaluation = Evaluation(
        candidate=classification_metrics(refs, mine, labels),
        baseline=None,
        champion=classification_metrics(refs, theirs, labels),
        adversarial={},
        intervals={},
    )
    config = load_config(None, [f"data.path={_data_file(tmp_path)}", "gate.approval=required"])
    decision = decide_promotion(PASSING, {"f1_macro": 0.5}, None, REQUIRED)
    text = review_markdown(
        config,
        Registration(name="m", version="3", aliases=[], promoted=False),
        evaluation,
        decision,
        test_path,
        tmp_path / "evaluation.md",
        "run1",
    )
    samples = text.split("sample outputs")[1].strip().splitlines()[4:]
    assert len(samples) == 20 and samples[0].startswith("| text 25 |")
    assert "a\\|b" in text and "| a|b |" not in text  # a label cannot break the table
    assert "Confusion matrix" in text and "Label Studio" not in text  # no review section


# ------------------------------------------------------------------ production corrections


def test_champion_better_on_the_slice_by_more_than_max_regression_fails_the_gate():
    overall_champion = {"f1_macro": 0.90}
    tight = ProductionSlice(rows=12, candidate={"f1_macro": 0.70}, champion={"f1_macro": 0.80})
    d = decide_promotion(PASSING, {"f1_macro": 0.5}, overall_champion, REQUIRED, production=tight)
    assert d.failed == ["production_corrections_regression"]
    check = d.checks[-1]
    assert "12 held-out production corrections" in check.detail and check.value == pytest.approx(
        -0.1
    )
    within = tight.model_copy(update={"candidate": {"f1_macro": 0.79}})
    assert decide_promotion(
        PASSING, {"f1_macro": 0.5}, overall_champion, REQUIRED, production=within
    ).passed
    first = tight.model_copy(update={"champion": None})
    skipped = decide_promotion(PASSING, {"f1_macro": 0.5}, None, REQUIRED, production=first)
    assert skipped.passed and skipped.checks[-1].skipped
    none = decide_promotion(PASSING, {"f1_macro": 0.5}, overall_champion, REQUIRED)
    assert none.checks[-1].skipped and "no production corrections" in none.checks[-1].detail


def test_slice_is_rescored_from_the_stored_predictions():
    refs = ["a", "b", "a", "b"]
    result = classification_metrics(refs, ["a", "b", "b", "a"], ["a", "b"])
    part = slice_result(result, [2, 3])
    assert part.metrics["accuracy"] == 0.0 and part.labels == ["a", "b"]
    gen = slice_result(generation_metrics(["x y", "z"], ["x y", "q"]), [0])
    assert gen.metrics["exact_match"] == 1.0


def test_feedback_rows_keep_their_prediction_id_into_the_test_split_keys(tmp_path):
    data = DataSettings(path=_data_file(tmp_path))
    store = FeedbackStore(tmp_path / "store")
    batch = store.write_batch(
        [
            {"text": "served and corrected", "label": "b", "prediction_id": "p-1"},
            {"text": "plain feedback", "label": "a"},
        ]
    )
    loaded, _ = merge_records(data, store, [batch.batch_id])
    lines = production_lines(loaded)
    assert len(lines) == 1
    (line,) = lines
    assert loaded.record(line)["text"] == "served and corrected"
    test_path = tmp_path / "test.parquet"
    pd.DataFrame({"_line": [1, line, 3], "text": ["a", "b", "c"]}).to_parquet(test_path)
    assert production_positions(test_path, lines) == [1]
