"""The stages of the retrain flow: plain typed functions, their settings, a thin Prefect task."""

from __future__ import annotations

import logging


def stage_logger(name: str = "tunegate") -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a flow or task run (so lines reach the UI), else `name`'s.

    Stage functions and `task.fn()` are also called outside any run, in tests and benchmarks.
    Prefect is imported here, not at the top: the training worker imports this package and
    never needs Prefect (seconds of its start-up).
    """
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
