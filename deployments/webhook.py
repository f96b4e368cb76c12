"""The feedback receiver: `POST /feedback` with batches of re-annotated records, signed the
Standard Webhooks way (`deployments/signature.py`).

    tunegate webhook [--config FILE] [--set k=v ...] [--host H] [--port P]

Checks, in order, each refusal writing nothing and triggering nothing:
body over `webhook.max_body_bytes` -> 413 (decided from Content-Length, or while streaming, never
after reading it all); missing/malformed/wrong signature headers or a timestamp further than
`webhook.max_age_s` from now -> 401; a `webhook-id` seen before (the store remembers them across
restarts) -> 409; malformed records -> 422 with their line (JSONL) or record (JSON) numbers.

Accepted: the batch is stored atomically under its content hash (`tasks/feedback.py`), the
message id remembered, then a `tunegate.feedback.landed` event is posted to the Prefect API
(`POST /api/events`) with the batch's location and row count -> 202. The same content under a
new message id is stored once: 200 with `duplicate: true`, and no event.

Debounce: every landed event carries the resource label `tunegate.feedback.ready`, "true" once
the rows pending in the store and not yet signalled reach `feedback.trigger_min_rows`, or once
the oldest of them has waited `feedback.trigger_max_wait_s` (a timer checks this between
requests). The debounce counts what the store holds, not what this process wrote: a batch
stored by a request that failed after the write, by another process or before a restart is
counted at the next request or tick. The event-triggered deployment matches only ready events.
When Prefect cannot be reached the batch stays stored, the response says `trigger: pending`,
the rows stay counted and the next request (or the timer) signals again; the next retrain
includes the batch whatever starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import Webhook

from deployments.signature import SignatureRefused, check_secret, verify_request
from flows.config import RetrainConfig
from tasks.feedback import (
    EVENT_NAME,
    FeedbackSettings,
    FeedbackStore,
    RecordsRefused,
    StoredBatch,
    parse_records,
)
from tasks.load import DataSettings
from tasks.review.client import TOKEN_HEADER
from tasks.review.corrections import ACTIONS, PayloadRefused, parse_annotation

log = logging.getLogger("tunegate.webhook")


class PrefectEvents:
    """Posts events to a Prefect server's `/api/events`; says whether the server took them."""

    def __init__(self, api_url: str | None, timeout_s: float = 5.0) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.timeout_s = timeout_s

    async def emit(self, event: dict) -> bool:
        if not self.api_url:
            return False
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(f"{self.api_url}/events", json=[event])
            return response.status_code < 300
        except httpx.HTTPError as exc:
            log.warning("Prefect API unreachable (%s); trigger pending", type(exc).__name__)
            return False


def landed_event(batch: StoredBatch, ready: bool, pending_rows: int) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": EVENT_NAME,
        "resource": {
            "prefect.resource.id": f"tunegate.feedback.batch.{batch.batch_id}",
            "tunegate.feedback.ready": "true" if ready else "false",
        },
        "payload": {
            "batch_id": batch.batch_id,
            "location": batch.location,
            "rows": batch.rows,
            "pending_rows": pending_rows,
        },
    }


class Debounce:
    """Rows pending in the store and not yet signalled, and when the oldest of them was seen."""

    def __init__(self, min_rows: int, max_wait_s: float) -> None:
        self.min_rows = min_rows
        self.max_wait_s = max_wait_s
        self.waiting: dict[str, tuple[int, float]] = {}  # batch id -> (rows, landed at)
        self.signalled: set[str] = set()  # in a ready signal already; pending until a run takes it

    def add(self, batch_id: str, rows: int, now: float) -> None:
        if batch_id not in self.signalled:
            self.waiting.setdefault(batch_id, (rows, now))

    def forget(self, batch_ids: set[str]) -> None:
        for batch_id in batch_ids & set(self.waiting):
            del self.waiting[batch_id]
        self.signalled -= batch_ids

    def sync(self, pending: list[str], rows_of: Callable[[str], int], now: float) -> None:
        """Count every batch the store holds as pending (not yet included by a run).

        A batch is counted once: those already waiting or signalled keep their state; batches
        no longer pending (a run included them) are dropped from both.
        """
        held = set(pending)
        self.forget((set(self.waiting) | self.signalled) - held)
        for batch_id in pending:
            if batch_id not in self.waiting and batch_id not in self.signalled:
                self.waiting[batch_id] = (rows_of(batch_id), now)

    def mark_signalled(self) -> None:
        self.signalled |= set(self.waiting)
        self.waiting.clear()

    @property
    def rows(self) -> int:
        return sum(rows for rows, _ in self.waiting.values())

    def ready(self, now: float) -> bool:
        if not self.waiting:
            return False
        oldest = min(at for _, at in self.waiting.values())
        return self.rows >= self.min_rows or now - oldest >= self.max_wait_s


class FeedbackSignal:
    """The debounce and the landed event for one feedback store, shared by the webhook and the
    model server's `/v1/feedback`: both count what the store holds and signal the same way.

    Call `landed` (under `lock`) after each stored batch, and run `timer` in the background so the
    oldest waiting batch is signalled after `feedback.trigger_max_wait_s` without a new request.
    """

    def __init__(
        self,
        store: FeedbackStore,
        feedback: FeedbackSettings,
        events: PrefectEvents,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.events = events
        self.clock = clock
        self.max_wait_s = feedback.trigger_max_wait_s
        self.debounce = Debounce(feedback.trigger_min_rows, feedback.trigger_max_wait_s)
        self.lock = asyncio.Lock()
        self._sync()  # after a restart: batches stored but maybe never signalled

    def _sync(self) -> None:
        self.debounce.sync(self.store.pending_ids(), self.store.rows_of, self.clock())

    async def landed(self, batch: StoredBatch) -> str:
        """Count a newly stored batch and emit its event; the trigger state for the response."""
        self.debounce.add(batch.batch_id, batch.rows, self.clock())
        return await self._signal(batch)

    async def _signal(self, batch: StoredBatch) -> str:
        await asyncio.to_thread(self._sync)
        ready = self.debounce.ready(self.clock())
        delivered = await self.events.emit(landed_event(batch, ready, self.debounce.rows))
        if not delivered:
            return "pending"
        if ready:
            self.debounce.mark_signalled()
            return "signalled"
        return "waiting"

    async def timer(self) -> None:
        interval = max(0.5, min(5.0, self.max_wait_s / 4))
        while True:
            await asyncio.sleep(interval)
            async with self.lock:
                await asyncio.to_thread(self._sync)
                if not self.debounce.ready(self.clock()):
                    continue
                waiting = self.debounce.waiting
                oldest = min(waiting, key=lambda b: waiting[b][1])
                await self._signal(
                    StoredBatch(
                        batch_id=oldest,
                        rows=waiting[oldest][0],
                        location=self.store.location(oldest),
                        duplicate=False,
                    )
                )


def create_app(
    config: RetrainConfig,
    secret: str,
    events: PrefectEvents,
    clock=time.time,  # noqa: ANN001 - a zero-argument callable returning unix seconds
    review_token: str | None = None,
) -> FastAPI:
    """The receiver for one config; `secret`, `events` and `review_token` come from the edge
    (the CLI).

    `secret` is a Standard Webhooks secret (`whsec_<base64>`); `SecretInvalid` otherwise.
    `review_token`: the token Label Studio sends in `X-Tunegate-Review-Token` to
    `POST /label-studio` (None: that route answers 404).
    """
    webhook = Webhook(check_secret(secret))
    settings = config.webhook
    store = FeedbackStore(config.feedback.store)
    signaller = FeedbackSignal(store, config.feedback, events, clock)
    data = config.data
    lock = signaller.lock

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        task = asyncio.create_task(signaller.timer())
        yield
        task.cancel()

    app = FastAPI(title="tunegate feedback webhook", lifespan=lifespan)

    def refuse(status: int, detail: str | list[str]) -> JSONResponse:
        log.info("refused %d: %s", status, detail if isinstance(detail, str) else detail[:3])
        return JSONResponse({"status": "refused", "detail": detail}, status_code=status)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/feedback", status_code=202, openapi_extra=feedback_openapi(data))
    async def feedback(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            return refuse(413, f"body over webhook.max_body_bytes ({settings.max_body_bytes})")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return refuse(413, f"body over webhook.max_body_bytes ({settings.max_body_bytes})")
        body = bytes(body)
        try:
            delivery = verify_request(
                webhook, dict(request.headers), body, clock(), settings.max_age_s
            )
        except SignatureRefused as exc:
            return refuse(401, str(exc))
        async with lock:
            if store.delivery_seen(delivery):
                return refuse(409, "this webhook-id was already received")
            try:
                records = parse_records(_dereference(body, store, settings.max_body_bytes), data)
            except RecordsRefused as exc:
                return refuse(422, exc.problems[:100])
            batch = store.write_batch(records)
            store.remember_delivery(delivery, batch.batch_id)
            if batch.duplicate:
                return JSONResponse(
                    {**_answer(batch), "duplicate": True, "trigger": "none"}, status_code=200
                )
            trigger = await signaller.landed(batch)
        log.info("accepted batch %s (%d rows); trigger %s", batch.batch_id, batch.rows, trigger)
        return JSONResponse(
            {**_answer(batch), "duplicate": False, "trigger": trigger}, status_code=202
        )

    @app.post("/label-studio", status_code=202, openapi_extra=label_studio_openapi())
    async def label_studio(request: Request) -> JSONResponse:
        """Label Studio's webhook (annotation created or updated) -> one feedback row.

        Deduplicated by (task id, annotation id): the same answer again writes nothing (200
        `unchanged`), a changed answer writes one new batch (202) that replaces the earlier row.
        """
        if review_token is None:
            return refuse(
                404,
                f"the review queue is off: set the variable named by review.webhook_token_env "
                f"({config.review.webhook_token_env}) where the webhook starts",
            )
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), review_token.encode()):
            return refuse(401, f"{TOKEN_HEADER}: missing or wrong")
        body = await _read_capped(request, settings.max_body_bytes)
        if body is None:
            return refuse(413, f"body over webhook.max_body_bytes ({settings.max_body_bytes})")
        try:
            answer = parse_annotation(json.loads(body), data)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return refuse(422, "body: not valid JSON")
        except PayloadRefused as exc:
            return refuse(422, str(exc))
        if answer is None:
            return JSONResponse({"status": "ignored", "trigger": "none"}, status_code=200)
        async with lock:
            last = await asyncio.to_thread(store.review_answer, answer.key)
            if last is not None and last.get("digest") == answer.digest:
                log.info("review answer to task %s unchanged: nothing written", answer.task_id)
                return JSONResponse(
                    {"status": "unchanged", "batch_id": last.get("batch"), "trigger": "none"},
                    status_code=200,
                )
            revision = int(last.get("revision", 0)) + 1 if last else 1
            batch = await asyncio.to_thread(store.write_batch, [answer.row(data, revision)])
            await asyncio.to_thread(
                store.remember_review_answer,
                answer.key,
                {"digest": answer.digest, "revision": revision, "batch": batch.batch_id},
            )
            trigger = "none" if batch.duplicate else await signaller.landed(batch)
        log.info(
            "review answer to task %s: batch %s; trigger %s",
            answer.task_id,
            batch.batch_id,
            trigger,
        )
        return JSONResponse(
            {**_answer(batch), "duplicate": batch.duplicate, "trigger": trigger},
            status_code=200 if batch.duplicate else 202,
        )

    return app


async def _read_capped(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None once it is over `max_bytes` (decided before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def feedback_openapi(data: DataSettings) -> dict:
    """`POST /feedback` in the OpenAPI schema: the body is read raw (streamed, size-capped, then
    signature-checked), so FastAPI cannot infer it; described here for clients and the fuzzer."""
    text = {"type": "string", "minLength": 1}
    label = {**text, "enum": list(data.labels)} if data.labels else text
    record = {
        "type": "object",
        "properties": {data.text_column: text, data.y_column: label},
        "required": [data.text_column, data.y_column],
    }
    records = {"type": "array", "items": record, "minItems": 1}
    ref = {"type": "object", "properties": {"ref": {"type": "string"}}, "required": ["ref"]}
    header = {"in": "header", "required": True, "schema": {"type": "string"}}
    answers = {
        "200": "the same records arrived before under another webhook-id: stored once",
        "202": "stored; the answer says whether a retrain was signalled",
        "401": "a webhook-* header missing or malformed, a wrong signature or a stale timestamp",
        "409": "this webhook-id was accepted before",
        "413": "body over webhook.max_body_bytes",
        "422": "malformed records, named by line or record number",
    }
    return {
        "parameters": [
            {**header, "name": "webhook-id", "description": "unique message id (signed)"},
            {**header, "name": "webhook-timestamp", "description": "unix seconds"},
            {**header, "name": "webhook-signature", "description": "v1,<base64> [v1,...]"},
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": records},
                "application/json": {
                    "schema": {
                        "oneOf": [
                            records,
                            {"type": "object", "properties": {"records": records}},
                            ref,
                        ]
                    }
                },
            },
        },
        "responses": {code: {"description": text} for code, text in answers.items()},
    }


def label_studio_openapi() -> dict:
    """`POST /label-studio` in the OpenAPI schema (the body is read raw, size-capped)."""
    body = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(ACTIONS)},
            "annotation": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "task": {"type": "object", "properties": {"id": {"type": "integer"}}},
        },
        "required": ["action", "annotation", "task"],
    }
    answers = {
        "200": "no answer to store (another action, a skipped task) or the same answer again",
        "202": "stored as a feedback batch; the answer says whether a retrain was signalled",
        "401": f"{TOKEN_HEADER} missing or wrong",
        "404": "the webhook started without the review token: the route is off",
        "413": "body over webhook.max_body_bytes",
        "422": "a payload that cannot become a feedback row, its key named",
    }
    return {
        "parameters": [
            {
                "in": "header",
                "name": TOKEN_HEADER,
                "required": True,
                "schema": {"type": "string"},
                "description": "the shared token the project's webhook sends",
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {code: {"description": text} for code, text in answers.items()},
    }


def _answer(batch: StoredBatch) -> dict:
    return {
        "status": "accepted",
        "batch_id": batch.batch_id,
        "rows": batch.rows,
        "location": batch.location,
    }


def _dereference(body: bytes, store: FeedbackStore, max_bytes: int) -> bytes:
    """`{"ref": "<path in the store>"}` -> that file's bytes; any other body as it is."""
    if body.lstrip()[:1] != b"{" or len(body) > 4096:
        return body
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if isinstance(value, dict) and set(value) == {"ref"} and isinstance(value["ref"], str):
        return store.read_ref(value["ref"], max_bytes)
    return body


def serve_webhook(
    config: RetrainConfig,
    secret: str,
    prefect_api_url: str | None,
    review_token: str | None = None,
) -> None:
    """Run the receiver with uvicorn on `webhook.host`:`webhook.port` until interrupted."""
    import uvicorn

    app = create_app(config, secret, PrefectEvents(prefect_api_url), review_token=review_token)
    print(
        f"tunegate webhook on http://{config.webhook.host}:{config.webhook.port}/feedback; "
        f"store {config.feedback.store}; Prefect API {prefect_api_url or '(none: triggers pending)'}; "
        f"Label Studio answers {'on /label-studio' if review_token else 'off'}",
        flush=True,
    )
    uvicorn.run(app, host=config.webhook.host, port=config.webhook.port, log_level="warning")
