import pytest

from tasks.gate import GateSettings, Interval, decide_promotion

pytestmark = pytest.mark.unit

SETTINGS = GateSettings(
    min_f1=0.85, min_margin_over_baseline=0.05, max_regression=0.01, max_latency_s=5
)
CLASSES = {"f1/a": 0.9, "f1/b": 0.8}


def _m(f1, p95=0.05, **extra):
    return {"f1_macro": f1, "latency_p95_s": p95, **CLASSES, **extra}


def _g(rouge1, p95=1.0):
    return {"rouge1": rouge1, "rouge2": 0.1, "latency_p95_s": p95}


def _iv(low, high, delta=None):
    delta = (low + high) / 2 if delta is None else delta
    return Interval(
        metric="f1_macro", delta=delta, low=low, high=high, confidence=0.95, resamples=100, n=50
    )


def _check(decision, name):
    return next(c for c in decision.checks if c.name == name)


def test_passes_when_every_check_passes_without_champion():
    d = decide_promotion(_m(0.9), {"f1_macro": 0.5}, None, SETTINGS)
    assert d.passed
    champion = _check(d, "no_regression_vs_champion")
    assert champion.skipped and champion.passed
    assert "no champion yet" in champion.detail
    assert [c.name for c in d.checks] == [
        "absolute_target",
        "margin_over_baseline",
        "no_regression_vs_champion",
        "latency_p95",
        "per_class_floor",
        "production_corrections_regression",
    ]
    assert d.reasons[2].startswith("SKIP no_regression_vs_champion")


@pytest.mark.parametrize(
    "candidate, baseline, champion, failing",
    [
        (_m(0.80), {"f1_macro": 0.5}, None, "absolute_target"),
        (_m(0.90), {"f1_macro": 0.88}, None, "margin_over_baseline"),
        (_m(0.90), {"f1_macro": 0.5}, {"f1_macro": 0.95}, "no_regression_vs_champion"),
        (_m(0.90, p95=6.0), {"f1_macro": 0.5}, None, "latency_p95"),
        ({"f1_macro": 0.9, **CLASSES}, {"f1_macro": 0.5}, None, "latency_p95"),
        (_m(0.90), None, None, "margin_over_baseline"),
    ],
)
def test_each_check_can_fail_alone(candidate, baseline, champion, failing):
    d = decide_promotion(candidate, baseline, champion, SETTINGS)
    assert not d.passed
    assert d.failed == [failing]


def test_numbers_in_every_reason():
    d = decide_promotion(_m(0.90, p95=0.25), {"f1_macro": 0.5}, {"f1_macro": 0.905}, SETTINGS)
    assert d.passed  # a 0.005 drop is within the 0.01 tolerance
    assert "f1_macro 0.9000 vs target 0.8500" in d.reasons[0]
    assert "baseline 0.5000 = +0.4000 vs required +0.0500" in d.reasons[1]
    assert "champion 0.9050 = -0.0050 vs tolerance -0.0100" in d.reasons[2]
    assert "p95 0.2500s vs limit 5.00s" in d.reasons[3]
    assert _check(d, "no_regression_vs_champion").value == pytest.approx(-0.005)


def test_missing_baseline_fails_unless_explicitly_allowed():
    strict = decide_promotion(_m(0.9), None, None, SETTINGS)
    assert not strict.passed
    assert "gate.require_baseline=false" in _check(strict, "margin_over_baseline").detail
    lenient = decide_promotion(
        _m(0.9), None, None, SETTINGS.model_copy(update={"require_baseline": False})
    )
    assert lenient.passed
    assert _check(lenient, "margin_over_baseline").skipped


def test_required_improvement_needs_interval_above_zero():
    settings = SETTINGS.model_copy(update={"require_improvement": True})
    champ = {"f1_macro": 0.88}
    ok = decide_promotion(
        _m(0.92), {"f1_macro": 0.5}, champ, settings, intervals={"champion": _iv(0.01, 0.07)}
    )
    assert ok.passed
    assert "CI [+0.0100, +0.0700]" in _check(ok, "no_regression_vs_champion").detail
    noisy = decide_promotion(
        _m(0.92), {"f1_macro": 0.5}, champ, settings, intervals={"champion": _iv(-0.02, 0.09)}
    )
    assert noisy.failed == ["improvement_vs_champion"]
    assert "lower bound -0.0200 must be > 0" in _check(noisy, "improvement_vs_champion").detail
    unmeasured = decide_promotion(_m(0.92), {"f1_macro": 0.5}, champ, settings)
    assert unmeasured.failed == ["improvement_vs_champion"]
    first = decide_promotion(_m(0.92), {"f1_macro": 0.5}, None, settings)
    assert first.passed and _check(first, "improvement_vs_champion").skipped
    # without the option the check is not there at all
    assert "improvement_vs_champion" not in [
        c.name for c in decide_promotion(_m(0.92), {"f1_macro": 0.5}, champ, SETTINGS).checks
    ]


def test_per_class_floors():
    floors = SETTINGS.model_copy(update={"min_class_f1": 0.75, "class_min_f1": {"a": 0.95}})
    d = decide_promotion(_m(0.9), {"f1_macro": 0.5}, None, floors)
    assert d.failed == ["per_class_floor"]
    assert "a 0.9000 < 0.9500" in _check(d, "per_class_floor").detail
    ok = decide_promotion(
        _m(0.9), {"f1_macro": 0.5}, None, floors.model_copy(update={"class_min_f1": {}})
    )
    assert ok.passed
    assert "lowest b 0.8000 vs floor 0.7500" in _check(ok, "per_class_floor").detail
    typo = decide_promotion(
        _m(0.9), {"f1_macro": 0.5}, None, floors.model_copy(update={"class_min_f1": {"zz": 0.1}})
    )
    assert "does not have: ['zz']" in _check(typo, "per_class_floor").detail
    unmeasured = decide_promotion(
        {"f1_macro": 0.9, "latency_p95_s": 0.1}, {"f1_macro": 0.5}, None, SETTINGS
    )
    assert unmeasured.failed == ["per_class_floor"]


def test_generation_uses_rouge1_targets_and_the_methods_margin():
    s = GateSettings(min_rouge1=0.3)
    assert s.min_rouge1_margin_over_baseline == 0.15  # the method's default
    ok = decide_promotion(_g(0.45), {"rouge1": 0.29}, None, s, task="generation")
    assert ok.passed and ok.metric == "rouge1"
    assert "per_class_floor" not in [c.name for c in ok.checks]
    assert decide_promotion(_g(0.40), {"rouge1": 0.29}, None, s, task="generation").failed == [
        "margin_over_baseline"
    ]
    assert decide_promotion(_g(0.25), {"rouge1": 0.0}, None, s, task="generation").failed == [
        "absolute_target"
    ]
    assert decide_promotion(
        _g(0.45, p95=7), {"rouge1": 0.2}, None, s, task="generation"
    ).failed == ["latency_p95"]
    assert decide_promotion(
        _g(0.45), {"rouge1": 0.2}, {"rouge1": 0.5}, s, task="generation"
    ).failed == ["no_regression_vs_champion"]
    with pytest.raises(ValueError, match="lack 'rouge1'"):
        decide_promotion(_m(0.9), None, None, s, task="generation")


def test_one_headline_table_gives_todays_names():
    from tasks.gate import HEADLINE
    from tasks.metrics import LISTED, shown_metrics, tagged_metrics
    from tasks.registry import HEADLINE_TAGS

    assert HEADLINE == {"classification": "f1_macro", "generation": "rouge1"}
    assert LISTED == HEADLINE_TAGS == ("f1_macro", "rouge1", "accuracy", "latency_p95_s")
    measured = {
        "f1_macro": 0.9,
        "accuracy": 0.8,
        "f1_weighted": 0.85,
        "f1/a": 0.7,
        "latency_p95_s": 0.01,
    }
    assert tagged_metrics("classification", measured) == {
        "f1_macro": "0.9000",
        "accuracy": "0.8000",
        "f1_weighted": "0.8500",
        "latency_p95_s": "0.0100",
    }
    assert shown_metrics("classification", measured) == (
        "macro-F1 0.9000, accuracy 0.8000, p95 latency (s) 0.0100"
    )
    generated = {"rouge1": 0.4, "rouge2": 0.2, "rougeL": 0.3, "exact_match": 0.1}
    assert tagged_metrics("generation", generated) == {"rouge1": "0.4000", "rougeL": "0.3000"}
    assert shown_metrics("generation", generated) == "ROUGE-1 0.4000, ROUGE-L 0.3000"


def test_unsupported_detail_rate_is_gated_on_the_candidate_with_the_others_beside():
    base, champ = {"rouge1": 0.2, "unsupported_rate": 0.4}, {"rouge1": 0.4, "unsupported_rate": 0.1}
    cand = {**_g(0.6), "unsupported_rate": 0.05}
    unset = decide_promotion(cand, base, champ, GateSettings(), task="generation")
    check = _check(unset, "unsupported_details")
    assert unset.passed and check.skipped  # not gated by default, still reported
    assert "0.0500, baseline 0.4000, champion 0.1000" in check.detail
    strict = GateSettings(max_unsupported_rate=0.04)
    failed = decide_promotion(cand, base, champ, strict, task="generation")
    assert failed.failed == ["unsupported_details"]
    assert "gate.max_unsupported_rate" in _check(failed, "unsupported_details").detail
    assert decide_promotion(
        cand, base, champ, GateSettings(max_unsupported_rate=0.05), task="generation"
    ).passed
    # a limit with nothing measured fails; classification has no such check
    assert decide_promotion(_g(0.6), base, None, strict, task="generation").failed == [
        "unsupported_details"
    ]
    assert "unsupported_details" not in [
        c.name for c in decide_promotion(_m(0.9), None, None, SETTINGS).checks
    ]
