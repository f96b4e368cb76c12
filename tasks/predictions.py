"""The prediction log: what the model server answered, read back by the monitor and review flows.

One JSON line per prediction, in files under `serving.log_url` (any fsspec URL; default
`<work_dir>/predictions`), one folder per UTC day and one file per flush:
`<log_url>/<YYYY-MM-DD>/<HHMMSS>-<uuid>.jsonl`. Replicas of the server share nothing but this
URL, so each writes its own files and never appends to another's. Texts are written only after
the PII stage scrubbed them; nothing raw is stored here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictionRecord(BaseModel):
    """One answer of the model server, as logged and as read back."""

    model_config = ConfigDict(extra="ignore")

    prediction_id: str
    time: datetime = Field(description="UTC time the answer was sent.")
    model_name: str
    model_version: str
    latency_ms: float
    status: int = Field(default=200, description="HTTP status of the request it belonged to.")
    text: str = Field(description="The input after PII scrubbing (never the raw input).")
    label: str | None = Field(default=None, description="Classification: the predicted label.")
    score: float | None = Field(default=None, description="Classification: its probability.")
    output: str | None = Field(default=None, description="Generation: the generated text.")
    sampled: bool = Field(
        default=True,
        description="False for records kept only so feedback can find them "
        "(serving.feedback_window_s), not part of the log_sample_rate sample.",
    )


def _fs(url: str, options: dict[str, Any] | None):  # noqa: ANN202 - fsspec filesystem
    import fsspec

    return fsspec.core.url_to_fs(url, **(options or {}))


def write_records(
    url: str, records: Iterable[PredictionRecord], options: dict[str, Any] | None = None
) -> str | None:
    """Write one new file of records under `url`; return its path (None when there were none)."""
    records = list(records)
    if not records:
        return None
    fs, root = _fs(url, options)
    now = datetime.now(UTC)
    folder = f"{root.rstrip('/')}/{now:%Y-%m-%d}"
    fs.makedirs(folder, exist_ok=True)
    path = f"{folder}/{now:%H%M%S}-{uuid.uuid4().hex}.jsonl"
    body = "".join(r.model_dump_json() + "\n" for r in records)
    with fs.open(path, "w", encoding="utf-8") as fh:
        fh.write(body)
    return path


def list_log_files(
    url: str, since: datetime | None = None, options: dict[str, Any] | None = None
) -> dict[str, int]:
    """path -> size of the log's files, oldest first; only day folders from `since`'s day on."""
    fs, root = _fs(url, options)
    if not fs.exists(root):
        return {}
    found = fs.glob(f"{root.rstrip('/')}/*/*.jsonl", detail=True)
    first_day = None if since is None else f"{since:%Y-%m-%d}"
    return {
        path: int(info.get("size") or 0)
        for path, info in sorted(found.items())
        if first_day is None or path.rsplit("/", 2)[-2] >= first_day
    }


def read_log_file(
    url: str, path: str, options: dict[str, Any] | None = None
) -> Iterator[PredictionRecord]:
    """The records of one log file (a path from `list_log_files`), in order.

    Lines that do not parse (a file cut short by a crash) are skipped, not fatal: the log is an
    observation, and a monitor run must not fail on one torn line.
    """
    fs, _root = _fs(url, options)
    with fs.open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            try:
                yield PredictionRecord.model_validate(json.loads(line))
            except (ValueError, TypeError):
                continue


def read_records(
    url: str,
    since: datetime | None = None,
    until: datetime | None = None,
    options: dict[str, Any] | None = None,
) -> Iterator[PredictionRecord]:
    """Records with `since <= time < until` (either bound optional), oldest file first."""
    for path in list_log_files(url, since, options):
        for record in read_log_file(url, path, options):
            if since is not None and record.time < since:
                continue
            if until is not None and record.time >= until:
                continue
            yield record
