"""The parity rule: when a served answer counts as agreeing, and how a failure fails the gate."""

from __future__ import annotations

import pytest

from tasks.gate import Check, GateDecision
from tasks.parity import ParityResult, agreeing, int8_tags, with_parity

pytestmark = pytest.mark.unit


def test_labels_agree_only_when_equal():
    assert agreeing("classification", ["a", "b", "b"], ["a", "b", "B"]) == [True, True, False]
    with pytest.raises(ValueError, match="2 served answers for 3 evaluated"):
        agreeing("classification", ["a", "b"], ["a", "b", "c"])


def test_outputs_agree_when_equal_folded_or_rouge_l_at_least_0_9():
    evaluated = [
        "grace cancelled one green shelves at the perth store",
        "Bob  bought chairs",
        "alice returned two red lamps",
        "",
    ]
    served = [
        "grace cancelled one green shelves at the perth store today",  # ROUGE-L 0.95
        "bob bought chairs",  # case and spaces folded
        "alice bought two blue tables",  # another model's answer
        "",
    ]
    assert agreeing("generation", served, evaluated) == [True, True, False, True]


def test_a_parity_failure_fails_the_gate_with_its_numbers():
    passed = GateDecision(
        passed=True,
        task="classification",
        metric="f1_macro",
        checks=[Check(name="margin_over_baseline", passed=True, detail="ok")],
    )
    bad = ParityResult(task="classification", examples=200, agreeing=180, min_agreement=0.995)
    decision = with_parity(passed, bad)
    assert not decision.passed and decision.failed == ["parity"]
    assert "180 of 200 served labels agree" in decision.reasons[-1]
    assert "90.0%" in decision.reasons[-1] and "parity_min_agreement=0.995" in decision.reasons[-1]
    good = ParityResult(task="generation", examples=200, agreeing=200, min_agreement=0.995)
    assert with_parity(passed, good).passed


def test_the_int8_agreement_rides_on_the_decision_and_becomes_the_version_tags():
    passed = GateDecision(passed=True, task="classification", metric="f1_macro", checks=[])
    parity = ParityResult(
        task="classification", examples=200, agreeing=200, min_agreement=0.995, int8_agreeing=198
    )
    decision = with_parity(passed, parity)
    assert decision.passed and decision.failed == []  # int8 does not gate
    assert decision.int8_agreement == 0.99
    assert int8_tags(decision.int8_agreement, 0.995) == {
        "parity_int8_agreement": "0.9900",
        "serve_int8": "false",
    }
    assert int8_tags(0.995, 0.995)["serve_int8"] == "true"
    assert int8_tags(None, 0.995) == {}  # generation, or not measured: auto serves none
