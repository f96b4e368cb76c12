"""Feedback batches: Standard Webhooks delivery, durable private storage, their life in the store.

The webhook (`deployments/webhook.py`) checks a request's Standard Webhooks signature
(`deployments/signature.py`), parses it with
`parse_records` and stores it with `FeedbackStore.write_batch`: canonical JSONL under a name
derived from its content hash, written to a temporary name and renamed, so a retried delivery
never duplicates data and a crash never leaves half a file. On a local store every file is
private to the user (0600, folders 0700).

The retrain flow reads the base data file and every active batch as records, each keeping its
origin (`tasks/dataset.py`): nothing merged is ever written to disk. A batch is pending until
a run that included it finishes (`mark_included`); a batch whose rows are mostly quarantined is
itself quarantined (`quarantine_batch`, with its reason) and an operator can exclude one
(`exclude_batch`, `tunegate feedback exclude`): neither is read by later runs. Raw batches are
deleted `feedback.retention_days` after that decision (`prune`); their ledger entry stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import time
import uuid
from pathlib import Path

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from tasks.load import DataSettings

EVENT_NAME = "tunegate.feedback.landed"
INCOMING = "incoming"  # the only folder of the store a webhook `ref` may name
REVIEW = "review"  # the last answer per Label Studio (task, annotation)


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
    max_batch_quarantine_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A batch with more than this share of its rows quarantined is quarantined "
        "as a whole: its rows leave the run (validate.max_quarantine_fraction then applies to "
        "the rest) and no later run reads it.",
    )
    retention_days: float | None = Field(
        default=30.0,
        gt=0,
        description="Delete a raw batch this many days after it was included in a finished run "
        "(or quarantined, or excluded); later runs no longer train on its rows. null: keep "
        "batches for ever.",
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


class FeedbackInput(BaseModel):
    """The feedback a run reads with `data.path`: the store and its batches, oldest first.

    Batch ids are content hashes, so the list names the content (the validation cache key)."""

    store: str
    batches: list[str] = Field(default_factory=list)


class BatchState(BaseModel):
    """One batch as `tunegate feedback list` shows it."""

    batch_id: str
    state: str  # pending | included | quarantined | excluded
    rows: int | None = None  # None once the raw batch is deleted
    received: float | None = None  # unix time the batch was stored
    flow_run: str | None = None  # included: the run that first included it; quarantined: its run
    mlflow_run: str | None = None
    reason: str | None = None  # quarantined / excluded: why
    at: float | None = None  # when it was included, quarantined or excluded
    raw_deleted: bool = False  # removed after feedback.retention_days


BATCH_ID = re.compile(r"[0-9a-f]{8,64}")
_LEDGERS = ("included", "quarantined", "excluded")


class FeedbackStore:
    """Batches under `<store>/batches/<content hash>.jsonl`; delivery ids and the ledgers beside.

    `deliveries/<sha256 of the id>` remembers delivery ids already accepted;
    `included/<batch id>.json` records which run first included a batch, `quarantined/` and
    `excluded/` the batches no run reads any more, with their reason.
    """

    def __init__(self, url: str) -> None:
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in _protocols(self.fs)
        if self.local:
            self.root = str(Path(self.root).resolve())
        for sub in ("batches", "deliveries", *_LEDGERS):
            self.fs.makedirs(self._path(sub), exist_ok=True)
        if self.local:
            _make_private(Path(self.root))
            # Older versions wrote the raw merged data set here; a killed run could leave it.
            shutil.rmtree(Path(self.root, "merged"), ignore_errors=True)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.local else str(Path(self.root, *parts))

    def location(self, batch_id: str) -> str:
        path = self._path("batches", f"{batch_id}.jsonl")
        return path if self.local else self.fs.unstrip_protocol(path)

    def _write_atomic(self, path: str, content: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        if self.local:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o600)  # whatever the umask
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

    def _review_path(self, key: str) -> str:
        return self._path(REVIEW, hashlib.sha256(key.encode()).hexdigest() + ".json")

    def review_answer(self, key: str) -> dict | None:
        """The answer last written for one Label Studio (task, annotation) key, if any: its
        digest, revision and batch (`tasks.review.corrections`)."""
        path = self._review_path(key)
        if not self.fs.exists(path):
            return None
        try:
            entry = json.loads(self.fs.cat_file(path))
        except (ValueError, OSError):
            return None
        return entry if isinstance(entry, dict) else None

    def remember_review_answer(self, key: str, entry: dict) -> None:
        self.fs.makedirs(self._path(REVIEW), exist_ok=True)
        self._write_atomic(self._review_path(key), json.dumps(entry).encode())

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
        return [batch_id for _, batch_id in self._stored()]

    def _stored(self) -> list[tuple[float, str]]:
        entries = self.fs.ls(self._path("batches"), detail=True)
        found = []
        for entry in entries:
            name = posixpath.basename(entry["name"].replace("\\", "/"))
            if name.endswith(".jsonl") and ".tmp-" not in name:
                found.append((_mtime(entry), name.removesuffix(".jsonl")))
        return sorted(found)

    def _ledger_ids(self, kind: str) -> dict[str, str]:
        """batch id -> its entry's path in one ledger (included, quarantined, excluded)."""
        out = {}
        for name in self.fs.ls(self._path(kind), detail=False):
            base = posixpath.basename(name.replace("\\", "/"))
            if base.endswith(".json") and ".tmp-" not in base:
                out[base.removesuffix(".json")] = name
        return out

    def _ledger(self, kind: str) -> dict[str, dict]:
        """batch id -> its entry in one ledger."""
        out = {}
        for batch_id, name in self._ledger_ids(kind).items():
            try:
                entry = json.loads(self.fs.cat_file(name))
            except (ValueError, OSError):
                entry = {}
            out[batch_id] = entry if isinstance(entry, dict) else {}
        return out

    def included_ids(self) -> set[str]:
        return set(self._ledger_ids("included"))

    def active_ids(self) -> list[str]:
        """The batches a run reads: stored, neither quarantined nor excluded; oldest first."""
        out = set(self._ledger_ids("quarantined")) | set(self._ledger_ids("excluded"))
        return [b for b in self.batch_ids() if b not in out]

    def pending_ids(self) -> list[str]:
        """Active batches no finished run has included yet."""
        included = self.included_ids()
        return [b for b in self.active_ids() if b not in included]

    def read_batch_bytes(self, batch_id: str) -> bytes:
        return self.fs.cat_file(self._path("batches", f"{batch_id}.jsonl"))

    def read_batch(self, batch_id: str) -> list[dict]:
        raw = self.read_batch_bytes(batch_id)
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def rows_of(self, batch_id: str) -> int:
        raw = self.fs.cat_file(self._path("batches", f"{batch_id}.jsonl"))
        return sum(1 for line in raw.splitlines() if line.strip())

    def _record(self, kind: str, batch_id: str, entry: dict) -> None:
        entry = {"batch": batch_id, **entry, "at": time.time()}
        self._write_atomic(self._path(kind, f"{batch_id}.json"), json.dumps(entry).encode())

    def mark_included(self, batch_ids: list[str], flow_run_id: str, mlflow_run_id: str) -> None:
        for batch_id in batch_ids:
            self._record(
                "included", batch_id, {"flow_run": flow_run_id, "mlflow_run": mlflow_run_id}
            )

    def quarantine_batch(self, batch_id: str, reason: str, flow_run_id: str) -> None:
        """Take a batch out of every later run; `reason` holds counts and check names only."""
        self._record("quarantined", batch_id, {"reason": reason, "flow_run": flow_run_id})

    def resolve(self, batch_id: str) -> str:
        """A full batch id from an id or a unique prefix of at least 8 characters."""
        wanted = batch_id.strip().lower()
        if not BATCH_ID.fullmatch(wanted):
            raise KeyError(f"'{batch_id}' is not a batch id (8 to 64 hex digits)")
        known = set(self.batch_ids()).union(*(self._ledger_ids(k) for k in _LEDGERS))
        matches = sorted(b for b in known if b.startswith(wanted))
        if len(matches) != 1:
            many = f"{len(matches)} batches start with" if matches else "no batch is"
            raise KeyError(f"{many} '{wanted}'; see tunegate feedback list")
        return matches[0]

    def exclude_batch(self, batch_id: str, reason: str = "excluded by an operator") -> str:
        """Take a batch out of every later run (an operator's decision); returns its full id."""
        full = self.resolve(batch_id)
        self._record("excluded", full, {"reason": reason})
        return full

    def states(self) -> list[BatchState]:
        """Every batch the store knows, oldest first, with its state."""
        ledgers = {kind: self._ledger(kind) for kind in _LEDGERS}
        stored = dict((b, t) for t, b in self._stored())
        known = list(stored) + sorted(set().union(*ledgers.values()) - set(stored))
        out = []
        for batch_id in known:
            state, entry = "pending", {}
            for kind in ("excluded", "quarantined", "included"):  # the decision that rules
                if batch_id in ledgers[kind]:
                    state, entry = kind, ledgers[kind][batch_id]
                    break
            out.append(
                BatchState(
                    batch_id=batch_id,
                    state=state,
                    rows=self.rows_of(batch_id) if batch_id in stored else None,
                    received=stored.get(batch_id),
                    flow_run=entry.get("flow_run"),
                    mlflow_run=entry.get("mlflow_run"),
                    reason=entry.get("reason"),
                    at=entry.get("at"),
                    raw_deleted=batch_id not in stored,
                )
            )
        return out

    def prune(self, retention_days: float | None, now: float | None = None) -> list[str]:
        """Delete raw batches decided (included, quarantined, excluded) longer ago than
        `retention_days`; the ledger entries stay. Returns the ids deleted."""
        if retention_days is None:
            return []
        now = time.time() if now is None else now
        decided: dict[str, float] = {}
        for kind in _LEDGERS:
            for batch_id, entry in self._ledger(kind).items():
                at = entry.get("at")
                if isinstance(at, int | float):
                    decided[batch_id] = min(decided.get(batch_id, at), at)
                else:  # an entry from before `at` was recorded: its file's time
                    path = self._path(kind, f"{batch_id}.json")
                    decided.setdefault(batch_id, _mtime(self.fs.info(path)))
        removed = []
        for batch_id in self.batch_ids():
            at = decided.get(batch_id)
            if at is not None and now - at > retention_days * 86400:
                self.fs.rm_file(self._path("batches", f"{batch_id}.jsonl"))
                removed.append(batch_id)
        return removed


def _make_private(root: Path) -> None:
    """Folders 0700 and files 0600 under a local store, whoever created them with what umask."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, stat.S_IRWXU)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _mtime(entry: dict) -> float:
    value = entry.get("mtime") or entry.get("created") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


class FeedbackMerge(BaseModel):
    """What one retrain took from the feedback store (`tasks.dataset.merge_feedback`)."""

    batches: list[str] = Field(default_factory=list)  # every batch read, oldest first
    new_batches: list[str] = Field(default_factory=list)  # read for the first time
    rows: int = 0  # feedback rows read
    added: int = 0  # rows added to the data
    duplicates: int = 0  # same text and label as an existing row (or an earlier batch): dropped
    relabelled: int = 0  # same text, new label: the feedback row replaces the older one
    quarantined_batches: dict[str, str] = Field(default_factory=dict)  # batch -> reason, this run
    pruned: list[str] = Field(default_factory=list)  # raw batches deleted (feedback.retention_days)
    source: FeedbackInput | None = None  # what validation and scrubbing read with data.path
