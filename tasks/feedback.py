"""Feedback batches: durable storage, and merging into the next dataset version.

The webhook (`deployments/webhook.py`) checks a request's Standard Webhooks signature
(`deployments/signature.py`), parses it with
`parse_records` and stores it with `FeedbackStore.write_batch`: canonical JSONL under a name
derived from its content hash, written to a temporary name and renamed, so a retried delivery
never duplicates data and a crash never leaves half a file.

The retrain flow calls `merge_feedback` before validation: every stored batch is merged into
one combined data file in the input's columns, so validation and PII scrubbing apply to
feedback exactly as to the base data. The combined file holds raw text, so it is written inside
the feedback store (or a private temporary folder for a remote store) and removed after
scrubbing. Batches a run includes for the first time are marked as included once the run has
finished (`FeedbackStore.mark_included`); until then they stay pending and the next run
includes them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from tasks import stage_logger
from tasks.load import DataSettings, read_records
from tasks.validate import normalise_text

EVENT_NAME = "tunegate.feedback.landed"
INCOMING = "incoming"  # the only folder of the store a webhook `ref` may name


class FeedbackSettings(BaseModel):
    """Where feedback batches are stored and when they trigger a retrain."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(
        default=".tunegate/feedback",
        description="Folder or fsspec URL where accepted feedback batches are stored.",
    )
    enabled: bool = Field(
        default=True, description="Merge the stored feedback batches into each retrain's data."
    )
    trigger_min_rows: int = Field(
        default=50,
        ge=1,
        description="New feedback rows to accumulate before the webhook signals a retrain.",
    )
    trigger_max_wait_s: float = Field(
        default=3600.0,
        gt=0,
        description="Signal a retrain anyway once the oldest unsignalled batch is this old (s).",
    )


class WebhookSettings(BaseModel):
    """The feedback receiver (`tunegate webhook`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8787, ge=1, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(
        default=10_000_000, ge=1, description="Largest accepted request body (bytes); else 413."
    )
    max_age_s: int = Field(
        default=300,
        ge=1,
        le=300,
        description="Largest accepted distance between webhook-timestamp and now (s); else 401. "
        "At most 300: Standard Webhooks libraries hold timestamps to five minutes.",
    )
    prefect_api_url: str | None = Field(
        default=None,
        description="Prefect API for the feedback event; default: the environment's PREFECT_API_URL.",
    )


# --- records --------------------------------------------------------------------------------


class RecordsRefused(Exception):
    """Malformed records (HTTP 422); `problems` name the line or record numbers."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_records(body: bytes, data: DataSettings) -> list[dict]:
    """JSON (an array, or `{"records": [...]}`) or JSONL -> records, checked against `data`.

    Numbers in problems are 1-based lines for JSONL and record positions for JSON.
    """
    stripped = body.lstrip()
    if not stripped:
        raise RecordsRefused(["body: empty"])
    items: list[tuple[int, str, object]] = []
    problems: list[tuple[int, str]] = []
    parsed = None
    if stripped[:1] in (b"[", b"{"):
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed = None  # perhaps JSONL: parsed line by line below
    if isinstance(parsed, dict) and isinstance(parsed.get("records"), list):
        parsed = parsed["records"]
    if isinstance(parsed, list):
        items = [(i, f"record {i}", value) for i, value in enumerate(parsed, start=1)]
    else:
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((number, f"line {number}", json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                problems.append((number, f"line {number}: malformed JSON ({reason})"))
    records = []
    for number, where, value in items:
        problem = _record_problem(value, data)
        if problem:
            problems.append((number, f"{where}: {problem}"))
        else:
            records.append(value)
    if problems:
        raise RecordsRefused([text for _, text in sorted(problems)])
    if not records:
        raise RecordsRefused(["body: no records"])
    return records


def _record_problem(value: object, data: DataSettings) -> str | None:
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    text = value.get(data.text_column)
    if not isinstance(text, str) or not text.strip():
        return f"'{data.text_column}' must be a non-empty string"
    label = value.get(data.y_column)  # the label, or the target text of generation data
    if not isinstance(label, str) or not label.strip():
        return f"'{data.y_column}' must be a non-empty string"
    if data.labels is not None and label not in data.labels:
        return f"'{data.y_column}' is not one of the allowed labels (data.labels)"
    return None


def canonical_jsonl(records: list[dict]) -> bytes:
    """One sorted-key JSON object per line: equal batches give equal bytes and hashes."""
    return "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records
    ).encode()


# --- the store ------------------------------------------------------------------------------


class StoredBatch(BaseModel):
    batch_id: str
    rows: int
    location: str
    duplicate: bool


class FeedbackStore:
    """Batches under `<store>/batches/<content hash>.jsonl`; delivery ids and the ledger beside.

    `deliveries/<sha256 of the id>` remembers delivery ids already accepted;
    `included/<batch id>.json` records which run first included a batch.
    """

    def __init__(self, url: str) -> None:
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in _protocols(self.fs)
        if self.local:
            self.root = str(Path(self.root).resolve())
        for sub in ("batches", "deliveries", "included"):
            self.fs.makedirs(self._path(sub), exist_ok=True)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.local else str(Path(self.root, *parts))

    def location(self, batch_id: str) -> str:
        path = self._path("batches", f"{batch_id}.jsonl")
        return path if self.local else self.fs.unstrip_protocol(path)

    def _write_atomic(self, path: str, content: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        if self.local:
            with open(tmp, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(tmp, content)
            self.fs.mv(tmp, path)

    def write_batch(self, records: list[dict]) -> StoredBatch:
        content = canonical_jsonl(records)
        batch_id = hashlib.sha256(content).hexdigest()[:32]
        path = self._path("batches", f"{batch_id}.jsonl")
        duplicate = self.fs.exists(path)
        if not duplicate:
            self._write_atomic(path, content)
        return StoredBatch(
            batch_id=batch_id,
            rows=len(records),
            location=self.location(batch_id),
            duplicate=duplicate,
        )

    def _delivery_path(self, delivery_id: str) -> str:
        return self._path("deliveries", hashlib.sha256(delivery_id.encode()).hexdigest())

    def delivery_seen(self, delivery_id: str) -> bool:
        return self.fs.exists(self._delivery_path(delivery_id))

    def remember_delivery(self, delivery_id: str, batch_id: str) -> None:
        self._write_atomic(self._delivery_path(delivery_id), batch_id.encode())

    def read_ref(self, ref: str, max_bytes: int) -> bytes:
        """A file a system dropped under `<store>/incoming/`, size-capped.

        Only `incoming/` is readable: the store's own folders hold raw text (batches, a merged
        file a killed run left behind) that a signed `ref` must not turn into a new batch.
        """
        clean = posixpath.normpath(ref.replace("\\", "/"))
        parts = clean.split("/")
        if "://" in ref or clean.startswith("/") or len(parts) < 2 or parts[0] != INCOMING:
            raise RecordsRefused([f"ref: must name a file under {INCOMING}/ in feedback.store"])
        path = self._path(*parts)
        if self.local:
            inside = Path(self._path(INCOMING)).resolve()
            if not Path(path).resolve().is_relative_to(inside):  # a link out of incoming/
                raise RecordsRefused([f"ref: must name a file under {INCOMING}/ in feedback.store"])
        if not self.fs.isfile(path):
            raise RecordsRefused([f"ref: no such file in feedback.store/{INCOMING}"])
        if self.fs.size(path) > max_bytes:
            raise RecordsRefused(["ref: file larger than webhook.max_body_bytes"])
        return self.fs.cat_file(path)

    def batch_ids(self) -> list[str]:
        """Every stored batch, oldest first (then by id, for a stable order)."""
        entries = self.fs.ls(self._path("batches"), detail=True)
        found = []
        for entry in entries:
            name = posixpath.basename(entry["name"].replace("\\", "/"))
            if name.endswith(".jsonl") and ".tmp-" not in name:
                found.append((_mtime(entry), name.removesuffix(".jsonl")))
        return [batch_id for _, batch_id in sorted(found)]

    def included_ids(self) -> set[str]:
        names = self.fs.ls(self._path("included"), detail=False)
        return {
            posixpath.basename(n.replace("\\", "/")).removesuffix(".json")
            for n in names
            if n.endswith(".json") and ".tmp-" not in n
        }

    def pending_ids(self) -> list[str]:
        included = self.included_ids()
        return [b for b in self.batch_ids() if b not in included]

    def read_batch(self, batch_id: str) -> list[dict]:
        raw = self.fs.cat_file(self._path("batches", f"{batch_id}.jsonl"))
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def rows_of(self, batch_id: str) -> int:
        raw = self.fs.cat_file(self._path("batches", f"{batch_id}.jsonl"))
        return sum(1 for line in raw.splitlines() if line.strip())

    def mark_included(self, batch_ids: list[str], flow_run_id: str, mlflow_run_id: str) -> None:
        for batch_id in batch_ids:
            record = {"batch": batch_id, "flow_run": flow_run_id, "mlflow_run": mlflow_run_id}
            self._write_atomic(
                self._path("included", f"{batch_id}.json"), json.dumps(record).encode()
            )


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _mtime(entry: dict) -> float:
    value = entry.get("mtime") or entry.get("created") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


# --- merging into the next dataset version --------------------------------------------------


class FeedbackMerge(BaseModel):
    """What one retrain took from the feedback store."""

    batches: list[str] = Field(default_factory=list)  # every batch merged, oldest first
    new_batches: list[str] = Field(default_factory=list)  # merged for the first time
    rows: int = 0  # feedback rows read
    added: int = 0  # rows added to the data
    duplicates: int = 0  # same text and label as an existing row (or an earlier batch): dropped
    relabelled: int = 0  # same text, new label: the feedback row replaces the older one
    merged_path: Path | None = None  # the combined data file (raw text: removed after scrubbing)


def merge_feedback(data: DataSettings, store: FeedbackStore, out_path: Path) -> FeedbackMerge:
    """Base data + every stored batch -> one JSONL file at `out_path`, in the input's columns.

    Rows are keyed by normalised text: a feedback row equal to an existing row (text and label)
    is dropped and counted; a feedback row with the same text but a new label replaces the
    older row (re-annotation). Unreadable base lines are kept verbatim, so validation still
    quarantines them.
    """
    batch_ids = store.batch_ids()
    if not batch_ids:
        return FeedbackMerge()
    included = store.included_ids()
    loaded = read_records(data.path)
    columns = [c for c in loaded.frame.columns if c != "_line"]
    rows: list[dict] = [
        {c: _plain(record.get(c)) for c in columns}
        for record in loaded.frame.to_dict(orient="records")
    ]
    index: dict[str, int] = {}
    for position, row in enumerate(rows):
        text = row.get(data.text_column)
        if isinstance(text, str) and text.strip():
            index.setdefault(normalise_text(text), position)
    merge = FeedbackMerge(
        batches=batch_ids, new_batches=[b for b in batch_ids if b not in included]
    )
    dropped: set[int] = set()
    for batch_id in batch_ids:
        for record in store.read_batch(batch_id):
            merge.rows += 1
            row = {c: _plain(record.get(c)) for c in columns}
            key = normalise_text(row[data.text_column])
            if key in index:
                earlier = index[key]
                if earlier not in dropped and rows[earlier][data.y_column] == row[data.y_column]:
                    merge.duplicates += 1
                    continue
                merge.relabelled += 1
                dropped.add(earlier)
            index[key] = len(rows)
            rows.append(row)
            merge.added += 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        for position, row in enumerate(rows):
            if position not in dropped:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for bad in loaded.unreadable:
            fh.write(bad["_raw"] + "\n")
    merge.merged_path = out_path
    return merge


def _plain(value: object) -> object:
    """pandas' missing values back to JSON null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def merge_location(store: FeedbackStore, run_name: str) -> tuple[Path, Path | None]:
    """Where the raw combined file may live: inside a local store, else a private temp folder.

    Returns (file path, temporary folder to remove or None).
    """
    if store.local:
        return Path(store.root, "merged", f"{run_name}.jsonl"), None
    folder = Path(tempfile.mkdtemp(prefix="tunegate-feedback-"))
    return folder / f"{run_name}.jsonl", folder


def remove_merged(merge: FeedbackMerge, temp_folder: Path | None) -> None:
    if merge.merged_path is not None:
        Path(merge.merged_path).unlink(missing_ok=True)
    if temp_folder is not None:
        shutil.rmtree(temp_folder, ignore_errors=True)


@task(name="merge-feedback")
def merge_feedback_task(
    data: DataSettings, settings: FeedbackSettings, run_name: str
) -> tuple[FeedbackMerge, Path | None]:
    if not settings.enabled:
        return FeedbackMerge(), None
    store = FeedbackStore(settings.store)
    out_path, temp_folder = merge_location(store, run_name)
    merge = merge_feedback(data, store, out_path)
    if merge.merged_path is None and temp_folder is not None:
        shutil.rmtree(temp_folder, ignore_errors=True)
        temp_folder = None
    stage_logger(__name__).info(
        "feedback: %d batches (%d new), %d rows, %d duplicates dropped, %d relabelled",
        len(merge.batches),
        len(merge.new_batches),
        merge.rows,
        merge.duplicates,
        merge.relabelled,
    )
    return merge, temp_folder
