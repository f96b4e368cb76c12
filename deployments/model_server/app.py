"""The FastAPI app: MLflow's scoring protocol, `/v1/predict`, `/v1/feedback`, `/metrics`.

Every request is answered with a status below 500 except 503 (no model yet, or the model failed
on the batch; the message says which), and the server keeps serving: bodies are checked by
pydantic models or the scoring-protocol parser, refusals are 4xx with a message that never
repeats the input (it may hold PII), and anything unexpected is a 503 naming the error type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from deployments.model_server.batching import Batcher
from deployments.model_server.config import ServeConfig
from deployments.model_server.metrics import ServerMetrics
from deployments.model_server.predlog import PredictionLog
from deployments.model_server.protocol import (
    REDACTED,
    FeedbackRequest,
    PredictRequest,
    Prepared,
    Refused,
    parse_invocation,
    prepare,
    refusal,
)
from deployments.model_server.source import ModelHolder, ModelSource, NoModel, Served
from deployments.webhook import FeedbackSignal, PrefectEvents
from tasks.feedback import FeedbackStore
from tasks.pii import get_scrubber
from tasks.predictions import PredictionRecord
from tasks.serving import flags_store_url

log = logging.getLogger("tunegate.model_server")

CHAMPION_EVENT = "tunegate.champion.moved"


class ObserveRequests:
    """Latency and status per route template, and no 500s: an unexpected error is a 503 that
    names its type. Plain ASGI (not `BaseHTTPMiddleware`, which spawns a task group and memory
    streams per request)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI triple
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 503, "started": False}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001 - no 500s: name the error, keep serving
            log.error("unexpected %s on %s", type(exc).__name__, scope.get("path", "?"))
            if state["started"]:
                raise
            response = refusal(503, f"internal error ({type(exc).__name__}); please retry")
            await response(scope, receive, send)
            state["status"] = 503
        route = scope.get("route")
        self.metrics.request(
            getattr(route, "path", "other"), state["status"], time.perf_counter() - start
        )


def create_app(
    config: ServeConfig,
    source: ModelSource,
    events: PrefectEvents,
    clock=time.time,  # noqa: ANN001 - a zero-argument callable returning unix seconds
) -> FastAPI:
    """The server for one config; `source` (the registry or a test's) and `events` (the Prefect
    API, possibly none) come from the edge."""
    settings = config.serving
    metrics = ServerMetrics()
    holder = ModelHolder()
    batcher = Batcher(
        holder, settings.max_batch_size, settings.max_wait_ms, metrics.batch_size.observe
    )
    predlog = PredictionLog(
        config.log_url,
        settings.log_sample_rate,
        settings.log_unsampled,
        settings.log_flush_s,
        settings.log_flush_records,
        settings.feedback_window_s,
        settings.feedback_max_ids,
    )
    store = FeedbackStore(config.feedback.store)
    flags = FeedbackStore(flags_store_url(config.feedback.store))
    signaller = FeedbackSignal(store, config.feedback, events, clock)
    feedback_lock = signaller.lock
    wake = asyncio.Event()
    status: dict[str, str | None] = {"last_reload_error": None}

    def reload_once() -> None:
        """Load the alias's version beside the current one and swap; the old keeps serving
        until then, and on any failure."""
        try:
            version = source.current_version()
        except Exception as exc:  # noqa: BLE001 - the registry may be away; keep serving
            metrics.reloads.labels("registry_error").inc()
            status["last_reload_error"] = f"registry: {type(exc).__name__}"
            log.warning("alias check failed (%s); still serving", type(exc).__name__)
            return
        current = holder.current
        if version is None or (current is not None and current.version == version):
            return
        try:
            served = source.load(version)
        except Exception as exc:  # noqa: BLE001 - a bad version must not stop the good one
            metrics.reloads.labels("load_error").inc()
            status["last_reload_error"] = f"version {version}: {type(exc).__name__}: {exc}"[:300]
            log.warning("could not load %s v%s (%s)", config.model_uri, version, exc)
            return
        holder.swap(served)
        metrics.served(served.name, settings.alias, served.version, served.loaded_at or clock())
        metrics.reloads.labels("loaded").inc()
        status["last_reload_error"] = None
        was = f"v{current.version}" if current else "nothing"
        log.info(
            "serving %s v%s (was %s)%s",
            config.model_uri,
            served.version,
            was,
            " through the int8 path" if served.extra.get("quantize") == "int8" else "",
        )

    async def reloader() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), settings.reload_interval_s)
            wake.clear()
            await asyncio.to_thread(reload_once)

    async def follow_champion_events(api_url: str) -> None:
        """Poll at once when a promotion or rollback announces itself; polling stays the rule."""
        from prefect.events.clients import PrefectEventSubscriber
        from prefect.events.filters import EventFilter, EventNameFilter

        only = EventFilter(event=EventNameFilter(name=[CHAMPION_EVENT]))
        while True:
            try:
                async with PrefectEventSubscriber(api_url=api_url, filter=only) as subscriber:
                    async for _event in subscriber:
                        wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - events are a shortcut; polling continues
                log.info("champion events unavailable (%s); polling only", type(exc).__name__)
            await asyncio.sleep(30.0)  # a refused first connection must not wait a whole poll

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):  # noqa: ANN202
        await asyncio.to_thread(get_scrubber, config.pii)  # the PII engine, built once
        await asyncio.to_thread(reload_once)
        if holder.current is None:
            log.warning(
                "no model at %s yet; polling every %ss",
                config.model_uri,
                settings.reload_interval_s,
            )
        batcher.start()
        predlog.start()
        tasks = [asyncio.create_task(reloader()), asyncio.create_task(signaller.timer())]
        if settings.follow_events and events.api_url:
            tasks.append(asyncio.create_task(follow_champion_events(events.api_url)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(batcher.stop)
            await asyncio.to_thread(predlog.close)

    app = FastAPI(title="tunegate model server", lifespan=lifespan)
    app.add_middleware(ObserveRequests, metrics=metrics)
    app.state.holder, app.state.predlog, app.state.metrics = holder, predlog, metrics
    app.state.reload_once = reload_once

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return refusal(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:20]:  # never err["input"]: it may hold PII
            if err.get("type") == "json_invalid":
                return refusal(400, "body: not valid JSON")
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(
                f"{loc}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"
            )
        return refusal(422, "; ".join(problems))

    def check_inputs(texts: list[str]) -> None:
        if not texts:
            raise Refused(422, "inputs: at least one text is required")
        if len(texts) > settings.max_inputs:
            raise Refused(
                413,
                f"inputs: {len(texts)} texts, over serving.max_inputs "
                f"({settings.max_inputs}); split the request",
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise Refused(422, f"inputs[{i}]: empty text")
            if len(text) > settings.max_input_chars:
                raise Refused(
                    422,
                    f"inputs[{i}]: {len(text)} characters, over "
                    f"serving.max_input_chars ({settings.max_input_chars})",
                )

    def records(
        prepared: list[Prepared],
        version: str,
        answers: list[dict] | None,
        latency_ms: float,
        code: int,
    ) -> list[PredictionRecord]:
        now = datetime.now(UTC)
        name = config.mlflow.registered_model
        # model_construct: every value is the server's own and already typed; validating each
        # record again is per-request cost for nothing
        return [
            PredictionRecord.model_construct(
                prediction_id=uuid.uuid4().hex,
                time=now,
                model_name=name,
                model_version=version,
                latency_ms=latency_ms,
                status=code,
                text=p.log_text,
                sampled=True,
                **({} if answers is None else answers[i]),
            )
            for i, p in enumerate(prepared)
        ]

    async def predict(texts: list[str]) -> tuple[Served, list[dict], list[str]]:
        check_inputs(texts)
        start = time.perf_counter()
        prepared, counts = await asyncio.to_thread(
            prepare, texts, config.pii, settings.scrub_inputs
        )
        for entity, n in counts.items():
            metrics.input_pii.labels(entity).inc(n)
        try:
            served, answers = await batcher.submit([p.model_text for p in prepared])
        except NoModel:
            raise Refused(
                503,
                f"no model served yet: nothing loaded from {config.model_uri}; "
                "promote a version or check GET /health",
            ) from None
        except Exception as exc:  # noqa: BLE001 - the model failed on this batch
            current = holder.current
            ms = (time.perf_counter() - start) * 1000
            predlog.add(records(prepared, current.version if current else "none", None, ms, 503))
            raise Refused(
                503, f"the model failed on this batch ({type(exc).__name__}); please retry"
            ) from None
        latency_ms = (time.perf_counter() - start) * 1000
        logged = records(prepared, served.version, answers, latency_ms, 200)
        predlog.add(logged)
        metrics.answers(answers, settings.low_confidence)
        return served, answers, [r.prediction_id for r in logged]

    def model_state() -> dict:
        served = holder.current
        return {
            "name": config.mlflow.registered_model,
            "alias": settings.alias,
            "version": served.version if served else None,
            "task": served.task if served else None,
            "quantize": settings.quantize,
            "serving_int8": bool(served and served.extra.get("quantize") == "int8"),
            "quantized_layers": served.extra.get("quantized_layers", 0) if served else 0,
        }

    @app.get("/ping")
    async def ping() -> Response:
        if holder.current is None:
            return PlainTextResponse("no model loaded\n", status_code=503)
        return PlainTextResponse("\n")

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"model": model_state(), "last_reload_error": status["last_reload_error"]}
        if holder.current is None:
            return JSONResponse({"status": "no model", **body}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.log_failures.set(predlog.write_failures)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind not in ("application/json", ""):
            raise Refused(415, f"content type {kind!r}: send application/json")
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "body: not valid JSON") from None
        _served, answers, _ids = await predict(parse_invocation(body))
        return JSONResponse({"predictions": answers})

    @app.post("/v1/predict")
    async def predict_v1(body: PredictRequest) -> JSONResponse:
        served, answers, ids = await predict(body.inputs)
        return JSONResponse(
            {
                "model": {"name": served.name, "version": served.version},
                "predictions": [{"id": i, **a} for i, a in zip(ids, answers, strict=True)],
            }
        )

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> JSONResponse:
        record = await asyncio.to_thread(predlog.find, body.prediction_id)
        if record is None:
            raise Refused(
                404,
                "prediction_id: unknown, or older than serving.feedback_window_s "
                f"({settings.feedback_window_s:g} s)",
            )
        generation = record.output is not None
        about = {
            "prediction_id": record.prediction_id,
            "model_version": record.model_version,
            "predicted": record.output if generation else record.label,
        }
        data = config.data
        if body.label is None and body.output is None:  # a flag: kept for review, not training
            row = {data.text_column: record.text, "flag": body.flag, **about}
            batch = await asyncio.to_thread(flags.write_batch, [row])
            metrics.feedback.labels("flag").inc()
            return JSONResponse(
                {
                    "status": "accepted",
                    "kind": "flag",
                    "batch_id": batch.batch_id,
                    "trigger": "none",
                },
                status_code=202,
            )
        if generation != (body.output is not None):
            wanted = "output" if generation else "label"
            raise Refused(
                422,
                f"this prediction is a {'generation' if generation else 'label'}: "
                f"send the correction as '{wanted}'",
            )
        if record.text == REDACTED:
            raise Refused(
                422,
                "this input still held PII after scrubbing, so it cannot become "
                "a training row; send 'flag': 'wrong' instead",
            )
        served = holder.current
        if body.label is not None and served is not None and body.label not in served.labels:
            shown = ", ".join(served.labels[:20])
            raise Refused(422, f"label: not one of the model's labels ({shown})")
        if generation and not data.target_column:
            raise Refused(
                422,
                "data.target_column: not set in the server's config, so a "
                "generation correction has no column to go to",
            )
        row = {data.text_column: record.text, data.y_column: body.output or body.label, **about}
        if body.flag:
            row["flag"] = body.flag
        async with feedback_lock:
            batch = await asyncio.to_thread(store.write_batch, [row])
            if batch.duplicate:
                return JSONResponse(
                    {
                        "status": "duplicate",
                        "kind": "correction",
                        "batch_id": batch.batch_id,
                        "trigger": "none",
                    }
                )
            trigger = await signaller.landed(batch)
        metrics.feedback.labels("correction").inc()
        return JSONResponse(
            {
                "status": "accepted",
                "kind": "correction",
                "batch_id": batch.batch_id,
                "trigger": trigger,
            },
            status_code=202,
        )

    return app


def serve_model(config: ServeConfig, prefect_api_url: str | None) -> None:
    """Run the server with uvicorn on `serving.host`:`serving.port` until interrupted; the
    prediction log is flushed on the way out."""
    import uvicorn

    from deployments.model_server.source import RegistrySource

    source = RegistrySource(
        config.mlflow.tracking_uri,
        config.mlflow.registered_model,
        config.serving.alias,
        config.model.device,
        config.serving.quantize,
    )
    app = create_app(config, source, PrefectEvents(prefect_api_url))
    print(
        f"tunegate model server on http://{config.serving.host}:{config.serving.port} for "
        f"{config.model_uri}; log {config.log_url}; feedback {config.feedback.store}",
        flush=True,
    )
    uvicorn.run(app, host=config.serving.host, port=config.serving.port, log_level="warning")
