"""The promotion gate: a pure function from metrics to a decision with every reason.

The headline metric depends on the task (`tasks.metrics.HEADLINE`): macro-F1 for
classification, ROUGE-1 (F) for generation. Checks, each reported with its numbers whether it passed, failed or was skipped:

- `absolute_target`: headline >= `gate.min_f1` (classification) / `gate.min_rouge1` (generation);
- `margin_over_baseline`: headline - baseline >= `gate.min_margin_over_baseline` /
  `gate.min_rouge1_margin_over_baseline` (the method's +0.15 ROUGE-1). No baseline: failed
  unless `gate.require_baseline` is false, then skipped and said so;
- `no_regression_vs_champion`: headline >= champion - `gate.max_regression`. No champion (the
  first model): skipped and said so;
- `improvement_vs_champion` (only with `gate.require_improvement`): the lower end of the paired
  bootstrap interval of candidate - champion is above zero;
- `latency_p95`: p95 seconds per example <= `gate.max_latency_s`;
- `per_class_floor` (classification): every class F1 >= its floor (`gate.class_min_f1[label]`,
  else `gate.min_class_f1`);
- `unsupported_details` (generation): the candidate's unsupported-detail rate (numbers, dates
  and names in its answers that their inputs lack, `tasks.unsupported`) <= `gate.max_unsupported_rate`,
  with baseline and champion rates beside; unset: skipped, the rates still reported;
- `production_corrections_regression`: on the held-out production corrections (test rows whose
  record carries a `prediction_id`: feedback on served predictions), headline >= champion's -
  `gate.max_regression`. A model may win on the whole test split and lose on the traffic it
  actually got wrong; this check keeps that from shipping. No such rows or no champion: skipped.

`gate.approval: required` adds a person after these checks (flows/approval.py): the gate here
stays a pure function of the numbers.

A skipped check does not block promotion; a missing measurement that a check needs fails it.
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks.metrics import HEADLINE, Task

__all__ = [
    "HEADLINE",
    "GateDecision",
    "GateSettings",
    "Interval",
    "ProductionSlice",
    "Task",
    "approval_refusal",
    "gate_task",
]

CLASS_F1_PREFIX = "f1/"


class GateSettings(BaseModel):
    """Targets a candidate must meet before it may become champion."""

    model_config = ConfigDict(extra="forbid")

    min_f1: float = Field(
        default=0.85, ge=0, le=1, description="Classification: absolute target for macro-F1."
    )
    min_rouge1: float = Field(
        default=0.35, ge=0, le=1, description="Generation: absolute target for ROUGE-1 F."
    )
    min_margin_over_baseline: float = Field(
        default=0.05, description="Classification: required macro-F1 lead over the baseline."
    )
    min_rouge1_margin_over_baseline: float = Field(
        default=0.15, description="Generation: required ROUGE-1 lead over the baseline (method)."
    )
    require_baseline: bool = Field(
        default=True,
        description="Fail when no baseline was measured; false skips the margin check instead.",
    )
    max_regression: float = Field(
        default=0.0, ge=0, description="Largest drop below the current champion tolerated."
    )
    require_improvement: bool = Field(
        default=False,
        description="Also require the bootstrap interval of candidate - champion above zero.",
    )
    max_latency_s: float = Field(
        default=5.0, gt=0, description="Ceiling on p95 seconds per example (the method: 5 s)."
    )
    min_class_f1: float = Field(
        default=0.0, ge=0, le=1, description="Classification: F1 floor for every class."
    )
    class_min_f1: dict[str, float] = Field(
        default_factory=dict, description="Classification: per-class F1 floors (label -> floor)."
    )
    max_unsupported_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Generation: ceiling on the candidate's unsupported-detail rate (share of the "
        "numbers, dates and names in its answers that their inputs lack); unset: not gated.",
    )
    approval: Literal["none", "required"] = Field(
        default="none",
        description="required: after the automatic gate passes, the run pauses in the Prefect UI "
        "for a person to approve (promote) or reject; needs a Prefect server (PREFECT_API_URL).",
    )
    approval_timeout_s: int = Field(
        default=86400,
        ge=1,
        description="With gate.approval=required: seconds to wait for a decision; then the run "
        "ends Rejected and nothing is promoted.",
    )

    def target(self, task: Task) -> float:
        return self.min_f1 if task == "classification" else self.min_rouge1

    def margin(self, task: Task) -> float:
        return (
            self.min_margin_over_baseline
            if task == "classification"
            else self.min_rouge1_margin_over_baseline
        )


class Interval(BaseModel):
    """A paired bootstrap interval for `metric`(candidate) - `metric`(other) on one example set."""

    metric: str
    delta: float
    low: float
    high: float
    confidence: float
    resamples: int
    n: int


class Check(BaseModel):
    name: str
    passed: bool
    detail: str
    skipped: bool = False
    value: float | None = None
    target: float | None = None

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


class GateDecision(BaseModel):
    passed: bool
    task: Task
    metric: str
    checks: list[Check]
    # Not a check: the share of test labels the int8 serving path (`serving.quantize`) agrees
    # on with the evaluated model, measured with parity; None when not measured.
    int8_agreement: float | None = None

    @property
    def reasons(self) -> list[str]:
        return [f"{c.status} {c.name}: {c.detail}" for c in self.checks]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]


def _ci_text(interval: Interval | None) -> str:
    if interval is None:
        return ""
    return (
        f"; {interval.confidence:.0%} CI [{interval.low:+.4f}, {interval.high:+.4f}] "
        f"over {interval.n} paired examples"
    )


def decide_promotion(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    champion: dict[str, float] | None,
    settings: GateSettings,
    task: Task = "classification",
    intervals: dict[str, Interval] | None = None,
    production: ProductionSlice | None = None,
) -> GateDecision:
    """Apply every check; the candidate passes only if none fails.

    `intervals` may hold paired bootstrap intervals under "baseline" and "champion"; they are
    reported with the margin checks and required by `gate.require_improvement`. `production`:
    candidate and champion on the held-out production corrections (None: the run has none).
    """
    key = HEADLINE[task]
    if key not in candidate:
        raise ValueError(f"gate: candidate metrics lack '{key}', the {task} headline metric")
    intervals = intervals or {}
    value = candidate[key]
    target = settings.target(task)
    target_key = "min_f1" if task == "classification" else "min_rouge1"
    checks = [
        Check(
            name="absolute_target",
            passed=value >= target,
            value=value,
            target=target,
            detail=f"{key} {value:.4f} vs target {target:.4f} (gate.{target_key})",
        )
    ]

    margin = settings.margin(task)
    if baseline is None or key not in baseline:
        if settings.require_baseline:
            checks.append(
                Check(
                    name="margin_over_baseline",
                    passed=False,
                    target=margin,
                    detail="no baseline metrics; measure one or set gate.require_baseline=false",
                )
            )
        else:
            checks.append(
                Check(
                    name="margin_over_baseline",
                    passed=True,
                    skipped=True,
                    target=margin,
                    detail="no baseline metrics; skipped (gate.require_baseline=false)",
                )
            )
    else:
        lead = value - baseline[key]
        checks.append(
            Check(
                name="margin_over_baseline",
                passed=lead >= margin,
                value=lead,
                target=margin,
                detail=(
                    f"{key} {value:.4f} - baseline {baseline[key]:.4f} = {lead:+.4f} "
                    f"vs required {margin:+.4f}" + _ci_text(intervals.get("baseline"))
                ),
            )
        )

    if champion is None or key not in champion:
        checks.append(
            Check(
                name="no_regression_vs_champion",
                passed=True,
                skipped=True,
                detail="no champion yet: nothing to regress against",
            )
        )
    else:
        delta = value - champion[key]
        checks.append(
            Check(
                name="no_regression_vs_champion",
                passed=delta >= -settings.max_regression,
                value=delta,
                target=-settings.max_regression,
                detail=(
                    f"{key} {value:.4f} - champion {champion[key]:.4f} = {delta:+.4f} "
                    f"vs tolerance -{settings.max_regression:.4f}"
                    + _ci_text(intervals.get("champion"))
                ),
            )
        )

    if settings.require_improvement:
        interval = intervals.get("champion")
        if champion is None:
            checks.append(
                Check(
                    name="improvement_vs_champion",
                    passed=True,
                    skipped=True,
                    detail="no champion yet: no improvement to require",
                )
            )
        elif interval is None:
            checks.append(
                Check(
                    name="improvement_vs_champion",
                    passed=False,
                    target=0.0,
                    detail="no bootstrap interval against the champion was measured",
                )
            )
        else:
            checks.append(
                Check(
                    name="improvement_vs_champion",
                    passed=interval.low > 0,
                    value=interval.low,
                    target=0.0,
                    detail=(
                        f"{interval.metric} candidate - champion = {interval.delta:+.4f}, "
                        f"{interval.confidence:.0%} CI lower bound {interval.low:+.4f} must be > 0"
                    ),
                )
            )

    p95 = candidate.get("latency_p95_s")
    if p95 is None:
        checks.append(
            Check(
                name="latency_p95",
                passed=False,
                target=settings.max_latency_s,
                detail="latency not measured",
            )
        )
    else:
        checks.append(
            Check(
                name="latency_p95",
                passed=p95 <= settings.max_latency_s,
                value=p95,
                target=settings.max_latency_s,
                detail=f"p95 {p95:.4f}s vs limit {settings.max_latency_s:.2f}s",
            )
        )

    if task == "classification":
        checks.append(_per_class_floor(candidate, settings))
    else:
        checks.append(_unsupported_check(candidate, baseline, champion, settings))
    checks.append(production_regression(production, settings, key))
    return GateDecision(passed=all(c.passed for c in checks), task=task, metric=key, checks=checks)


class ProductionSlice(BaseModel):
    """Headline metrics on the test rows that are corrections of served predictions."""

    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None = None


PRODUCTION_CHECK = "production_corrections_regression"


def production_regression(
    production: ProductionSlice | None, settings: GateSettings, key: str
) -> Check:
    """`gate.max_regression` applied on the production-corrections slice alone."""
    if production is None or production.rows == 0:
        return Check(
            name=PRODUCTION_CHECK,
            passed=True,
            skipped=True,
            detail="no production corrections (rows with a prediction_id) in the test split",
        )
    if production.champion is None or key not in production.champion:
        return Check(
            name=PRODUCTION_CHECK,
            passed=True,
            skipped=True,
            detail=f"no champion yet: nothing to regress against on {production.rows} rows",
        )
    if key not in production.candidate:
        return Check(
            name=PRODUCTION_CHECK,
            passed=False,
            detail=f"candidate {key} not measured on the production corrections",
        )
    value, other = production.candidate[key], production.champion[key]
    delta = value - other
    return Check(
        name=PRODUCTION_CHECK,
        passed=delta >= -settings.max_regression,
        value=delta,
        target=-settings.max_regression,
        detail=(
            f"on {production.rows} held-out production corrections: {key} {value:.4f} - "
            f"champion {other:.4f} = {delta:+.4f} vs tolerance -{settings.max_regression:.4f} "
            "(gate.max_regression)"
        ),
    )


def approval_refusal(settings: GateSettings, api_url: str | None) -> str | None:
    """Why a run with `gate.approval: required` cannot be approved by anyone, or None.

    Without a Prefect server the flow runs on the temporary one `tunegate run` starts; nobody
    can open its UI to answer, so the run would only wait out `gate.approval_timeout_s` after
    training. Saying so before any work is cheaper.
    """
    if settings.approval != "required" or (api_url or "").strip():
        return None
    return (
        "gate.approval=required needs a Prefect server someone can approve the run on, and "
        "PREFECT_API_URL is not set (only a temporary server would run). Start one "
        "(`prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api) and "
        "run again, or run the retrain deployment under `tunegate serve`; or set "
        "gate.approval=none"
    )


UNSUPPORTED = "unsupported_rate"


def _unsupported_check(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    champion: dict[str, float] | None,
    settings: GateSettings,
) -> Check:
    """`gate.max_unsupported_rate` on the candidate; baseline and champion rates beside."""
    limit = settings.max_unsupported_rate
    value = candidate.get(UNSUPPORTED)
    beside = "".join(
        f", {name} {other[UNSUPPORTED]:.4f}"
        for name, other in (("baseline", baseline), ("champion", champion))
        if other is not None and UNSUPPORTED in other
    )
    if value is None:
        return Check(
            name="unsupported_details",
            passed=limit is None,
            skipped=limit is None,
            target=limit,
            detail="unsupported-detail rate not measured"
            + ("" if limit is None else f" (gate.max_unsupported_rate={limit})"),
        )
    if limit is None:
        return Check(
            name="unsupported_details",
            passed=True,
            skipped=True,
            value=value,
            detail=f"{UNSUPPORTED} {value:.4f}{beside}; not gated (set gate.max_unsupported_rate)",
        )
    return Check(
        name="unsupported_details",
        passed=value <= limit,
        value=value,
        target=limit,
        detail=f"{UNSUPPORTED} {value:.4f} vs limit {limit:.4f} (gate.max_unsupported_rate)"
        + beside,
    )


def _per_class_floor(candidate: dict[str, float], settings: GateSettings) -> Check:
    per_class = {
        k.removeprefix(CLASS_F1_PREFIX): v
        for k, v in candidate.items()
        if k.startswith(CLASS_F1_PREFIX)
    }
    if not per_class:
        return Check(name="per_class_floor", passed=False, detail="per-class F1 not measured")
    unknown = sorted(set(settings.class_min_f1) - set(per_class))
    below = {
        label: (f1, settings.class_min_f1.get(label, settings.min_class_f1))
        for label, f1 in per_class.items()
        if f1 < settings.class_min_f1.get(label, settings.min_class_f1)
    }
    worst = min(per_class, key=per_class.get)
    if unknown:
        return Check(
            name="per_class_floor",
            passed=False,
            detail=f"gate.class_min_f1 names classes the model does not have: {unknown}",
        )
    if below:
        return Check(
            name="per_class_floor",
            passed=False,
            value=min(f1 for f1, _ in below.values()),
            detail="below floor: "
            + ", ".join(f"{k} {f1:.4f} < {floor:.4f}" for k, (f1, floor) in sorted(below.items())),
        )
    return Check(
        name="per_class_floor",
        passed=True,
        value=per_class[worst],
        target=settings.class_min_f1.get(worst, settings.min_class_f1),
        detail=(
            f"every class at or above its floor; lowest {worst} {per_class[worst]:.4f} "
            f"vs floor {settings.class_min_f1.get(worst, settings.min_class_f1):.4f}"
        ),
    )


@task(name="gate")
def gate_task(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    champion: dict[str, float] | None,
    settings: GateSettings,
    task: Task = "classification",
    intervals: dict[str, Interval] | None = None,
    production: ProductionSlice | None = None,
) -> GateDecision:
    return decide_promotion(candidate, baseline, champion, settings, task, intervals, production)
