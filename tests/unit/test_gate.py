import pytest

from tasks.gate import GateSettings, decide_promotion

pytestmark = pytest.mark.unit

SETTINGS = GateSettings(
    min_f1=0.85, min_margin_over_baseline=0.05, max_regression=0.01, max_latency_s=5
)


def _m(f1, p95=0.05):
    return {"f1_macro": f1, "latency_p95_s": p95}


def _check(decision, name):
    return next(c for c in decision.checks if c.name == name)


def test_passes_when_every_check_passes_without_champion():
    d = decide_promotion(_m(0.9), {"f1_macro": 0.5}, None, SETTINGS)
    assert d.passed
    assert _check(d, "no_regression_vs_champion").detail == "no champion yet"


@pytest.mark.parametrize(
    "candidate, baseline, champion, failing",
    [
        (_m(0.80), {"f1_macro": 0.5}, None, "absolute_target"),
        (_m(0.90), {"f1_macro": 0.88}, None, "margin_over_baseline"),
        (_m(0.90), {"f1_macro": 0.5}, {"f1_macro": 0.95}, "no_regression_vs_champion"),
        (_m(0.90, p95=6.0), {"f1_macro": 0.5}, None, "latency_p95"),
        (_m(0.90), None, None, "margin_over_baseline"),
    ],
)
def test_each_check_can_fail_alone(candidate, baseline, champion, failing):
    d = decide_promotion(candidate, baseline, champion, SETTINGS)
    assert not d.passed
    assert [c.name for c in d.checks if not c.passed] == [failing]


def test_regression_within_tolerance_passes_and_reasons_carry_numbers():
    d = decide_promotion(_m(0.90), {"f1_macro": 0.5}, {"f1_macro": 0.905}, SETTINGS)
    assert d.passed
    assert any("champion 0.9050" in r for r in d.reasons)
