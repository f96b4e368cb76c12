"""The server's side of the prediction log: sample, buffer, flush; find a prediction for feedback.

Every answer becomes a `tasks.predictions.PredictionRecord` holding the scrubbed text only. A
share `serving.log_sample_rate` is the monitor's sample (`sampled: true`); the rest are written
with `sampled: false` only when `serving.log_unsampled` is on. Every record, sampled or not, is
also kept in memory for `serving.feedback_window_s` (at most `serving.feedback_max_ids`, oldest
forgotten first), which is where `/v1/feedback` looks first; after that it looks in an index
of the log within the window, which finds sampled records of any replica (and unsampled ones
with `log_unsampled`). The index maps id -> (time, file) and is bounded like the memory (window
and `feedback_max_ids`); a miss lists the log's files and reads only those it has not indexed
yet (a file is written once, so a new prediction is always in a new or grown file), so a burst
of unknown ids costs one listing each, not a scan of the log. Writes happen off the event loop:
a flusher thread writes one file per flush, every `serving.log_flush_s` or once
`serving.log_flush_records` wait, and at shutdown.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tasks.predictions import PredictionRecord, list_log_files, read_log_file, write_records

log = logging.getLogger("tunegate.model_server")


class PredictionLog:
    def __init__(
        self,
        url: str,
        sample_rate: float,
        write_unsampled: bool,
        flush_s: float,
        flush_records: int,
        window_s: float,
        max_ids: int,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.sample_rate = sample_rate
        self.write_unsampled = write_unsampled
        self.flush_s = flush_s
        self.flush_records = flush_records
        self.window = timedelta(seconds=window_s)
        self.max_ids = max_ids
        self.draw = draw
        self.written = 0
        self.write_failures = 0
        self._recent: OrderedDict[str, PredictionRecord] = OrderedDict()
        # the log's ids within the window -> (time, file), oldest first; the files indexed
        self._index: OrderedDict[str, tuple[datetime, str]] = OrderedDict()
        self._indexed: dict[str, int] = {}  # path -> size when read
        self._index_lock = threading.Lock()
        self._buffer: list[PredictionRecord] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._flusher, name="tunegate-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write what is buffered."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.flush()

    def add(self, records: list[PredictionRecord]) -> None:
        with self._lock:
            for record in records:
                record.sampled = self.draw() < self.sample_rate
                if record.status == 200:
                    self._recent[record.prediction_id] = record
                if record.sampled or self.write_unsampled:
                    self._buffer.append(record)
            while len(self._recent) > self.max_ids:
                self._recent.popitem(last=False)
            full = len(self._buffer) >= self.flush_records
        if full:
            self._wake.set()

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return
            try:
                write_records(self.url, batch)
                self.written += len(batch)
            except OSError as exc:
                # The log is an observation: a full disk must not stop the answers. The records
                # go back to the buffer for the next flush; counted in /metrics.
                self.write_failures += 1
                log.warning("prediction log write failed (%s); will retry", type(exc).__name__)
                with self._lock:
                    self._buffer[:0] = batch[-10 * self.flush_records :]

    def _flusher(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()

    def find(self, prediction_id: str, now: datetime | None = None) -> PredictionRecord | None:
        """The answer with this id if it is younger than the feedback window, else None."""
        now = now or datetime.now(UTC)
        since = now - self.window
        with self._lock:
            record = self._recent.get(prediction_id)
        if record is not None:
            return record if record.time >= since else None
        with self._index_lock:
            self._update_index(since)
            found = self._index.get(prediction_id)
        if found is None or found[0] < since:
            return None
        for record in read_log_file(self.url, found[1]):
            if record.prediction_id == prediction_id and record.status == 200:
                return record
        return None

    def _update_index(self, since: datetime) -> None:
        """Read the log files that are new (or grew) since the last look; forget what is older
        than the window, and the oldest ids past `max_ids`."""
        files = list_log_files(self.url, since=since)
        for path, size in files.items():
            if self._indexed.get(path) == size:
                continue
            for record in read_log_file(self.url, path):
                if record.status == 200 and record.time >= since:
                    self._index[record.prediction_id] = (record.time, path)
            self._indexed[path] = size
        for path in [p for p in self._indexed if p not in files]:
            del self._indexed[path]  # its day left the window (or the file was removed)
        while self._index and (
            len(self._index) > self.max_ids or next(iter(self._index.values()))[0] < since
        ):
            self._index.popitem(last=False)
