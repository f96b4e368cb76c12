"""The promotion gate: a pure function from metrics to a decision with every reason.

Checks, each reported with its numbers whether it passed or not:
- absolute target: candidate macro-F1 >= `gate.min_f1`;
- margin over baseline: candidate - baseline >= `gate.min_margin_over_baseline`;
- no regression against the champion: candidate >= champion - `gate.max_regression`
  (skipped, and said so, when there is no champion);
- latency: candidate p95 seconds per example <= `gate.max_latency_s`.
"""

from __future__ import annotations

from prefect import task
from pydantic import BaseModel, ConfigDict, Field


class GateSettings(BaseModel):
    """Targets a candidate must meet before it may become champion."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(default="f1_macro", description="Headline metric the checks compare.")
    min_f1: float = Field(default=0.85, ge=0, le=1, description="Absolute target for the metric.")
    min_margin_over_baseline: float = Field(
        default=0.05, description="Required lead over the untuned baseline."
    )
    max_regression: float = Field(
        default=0.0, ge=0, description="Largest drop below the current champion tolerated."
    )
    max_latency_s: float = Field(
        default=5.0, gt=0, description="Ceiling on p95 seconds per example (the method: 5 s)."
    )


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class GateDecision(BaseModel):
    passed: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]


def decide_promotion(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    champion: dict[str, float] | None,
    settings: GateSettings,
) -> GateDecision:
    """Apply every check; the candidate passes only if all of them pass."""
    key = settings.metric
    value = candidate[key]
    checks = [
        Check(
            name="absolute_target",
            passed=value >= settings.min_f1,
            detail=f"{key} {value:.4f} vs target {settings.min_f1:.4f}",
        )
    ]
    if baseline is None:
        checks.append(
            Check(name="margin_over_baseline", passed=False, detail="no baseline metrics")
        )
    else:
        margin = value - baseline[key]
        checks.append(
            Check(
                name="margin_over_baseline",
                passed=margin >= settings.min_margin_over_baseline,
                detail=(
                    f"{key} {value:.4f} - baseline {baseline[key]:.4f} = {margin:+.4f} "
                    f"vs required {settings.min_margin_over_baseline:+.4f}"
                ),
            )
        )
    if champion is None:
        checks.append(
            Check(name="no_regression_vs_champion", passed=True, detail="no champion yet")
        )
    else:
        delta = value - champion[key]
        checks.append(
            Check(
                name="no_regression_vs_champion",
                passed=delta >= -settings.max_regression,
                detail=(
                    f"{key} {value:.4f} - champion {champion[key]:.4f} = {delta:+.4f} "
                    f"vs tolerance -{settings.max_regression:.4f}"
                ),
            )
        )
    p95 = candidate.get("latency_p95_s")
    if p95 is None:
        checks.append(Check(name="latency_p95", passed=False, detail="latency not measured"))
    else:
        checks.append(
            Check(
                name="latency_p95",
                passed=p95 <= settings.max_latency_s,
                detail=f"p95 {p95:.4f}s vs limit {settings.max_latency_s:.1f}s",
            )
        )
    return GateDecision(passed=all(c.passed for c in checks), checks=checks)


@task(name="gate")
def gate_task(
    candidate: dict[str, float],
    baseline: dict[str, float] | None,
    champion: dict[str, float] | None,
    settings: GateSettings,
) -> GateDecision:
    return decide_promotion(candidate, baseline, champion, settings)
