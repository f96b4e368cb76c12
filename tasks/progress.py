"""Progress lines for stages that loop over rows, so a slow or stuck stage is visible in the UI.

A stage that works through thousands of rows says how far it got at least every `every_s`
seconds of work (a Prefect log line inside a run, a plain log line outside one), and once at the
end. Only counts are logged, never a row's content: rows may hold PII.

    progress = Progress("scrub", total=len(records))
    for record in records:
        ...
        progress.advance()
    progress.done()
"""

from __future__ import annotations

import time

from tasks import stage_logger


class Progress:
    """Counts rows of one stage and logs `<stage>: <done>/<total> rows (<rate>/s)` now and then."""

    def __init__(self, stage: str, total: int | None = None, every_s: float = 5.0) -> None:
        self.stage = stage
        self.total = total
        self.every_s = every_s
        self.count = 0
        self._start = time.monotonic()
        self._last = self._start
        self._log = stage_logger(f"tasks.{stage}")

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.stage}: {self.count}{of} rows ({self.count / elapsed:.0f}/s)"

    def done(self) -> None:
        """The closing line, with the total time (logged whatever the interval)."""
        elapsed = time.monotonic() - self._start
        self._log.info("%s, done in %.1f s", self.line(), elapsed)
