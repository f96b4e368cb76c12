"""Seconds per stage of one retrain, for the summary's `timings` and the `timing/<stage>` metrics.

A run that sits in one stage for minutes should say which stage, and a user sizing a data set
wants to see where the time goes. `start_timings` opens a record in the current context (the
flow run); `timed(stage)` adds the wall time of its block to that record, and does nothing
outside a run, so the stage code it wraps stays callable from tests and one-stage commands.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Every key the summary reports, in pipeline order; a stage the run skipped reports 0.0.
STAGES = (
    "validate",
    "scrub",
    "split",
    "augment",
    "adversarial",
    "baseline",
    "train",
    "evaluate",
    "gate",
    "register",
)

_ACTIVE: ContextVar[dict[str, float] | None] = ContextVar("tunegate_stage_timings", default=None)


def start_timings() -> dict[str, float]:
    """A fresh record for this run; later `timed` blocks in the same context add to it."""
    timings: dict[str, float] = {}
    _ACTIVE.set(timings)
    return timings


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Add the block's wall time to `stage` (summed: validate runs per file), even if it fails."""
    began = time.perf_counter()
    try:
        yield
    finally:
        timings = _ACTIVE.get()
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - began


def stage_seconds(timings: dict[str, float]) -> dict[str, float]:
    """Every stage of `STAGES` (0.0 when skipped) plus any other timed block, rounded to ms."""
    names = [*STAGES, *sorted(set(timings) - set(STAGES))]
    return {name: round(timings.get(name, 0.0), 3) for name in names}
