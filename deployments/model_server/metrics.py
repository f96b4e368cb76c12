"""`/metrics`: the server's Prometheus series, in a registry of its own per app.

Metric names are fixed here; user strings (labels of the model) appear only as label values,
which `prometheus_client` escapes. The `endpoint` label is the route template, never the raw
path, so unknown URLs cannot grow the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram(
            "tunegate_request_latency_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "tunegate_requests",
            "Requests by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.errors = Counter(
            "tunegate_request_errors",
            "Requests answered with a 4xx or 5xx status, by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.predictions = Counter(
            "tunegate_predictions", "Predictions by predicted label.", ["label"], registry=r
        )
        self.generations = Counter("tunegate_generations", "Generated answers.", registry=r)
        self.low_confidence = Counter(
            "tunegate_low_confidence_predictions",
            "Predictions scored below serving.low_confidence, by label.",
            ["label"],
            registry=r,
        )
        self.model_info = Gauge(
            "tunegate_model_info",
            "1 for the model version being served.",
            ["model", "alias", "version"],
            registry=r,
        )
        self.model_loaded_at = Gauge(
            "tunegate_model_loaded_timestamp_seconds", "When the served version loaded.", registry=r
        )
        self.reloads = Counter(
            "tunegate_model_reloads",
            "Alias checks that loaded a version, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "tunegate_batch_size", "Inputs per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.input_pii = Counter(
            "tunegate_input_pii_entities",
            "PII entities scrubbed from inputs, by entity type.",
            ["entity"],
            registry=r,
        )
        self.feedback = Counter(
            "tunegate_feedback",
            "Feedback accepted, by kind (correction, flag).",
            ["kind"],
            registry=r,
        )
        self.log_failures = Gauge(
            "tunegate_prediction_log_write_failures", "Failed prediction log writes.", registry=r
        )
        self._served: tuple[str, str, str] | None = None
        self._per_status: dict[tuple[str, int], tuple] = {}  # (endpoint, status) -> children

    def served(self, model: str, alias: str, version: str, loaded_at: float) -> None:
        if self._served is not None:
            self.model_info.remove(*self._served)
        self._served = (model, alias, version)
        self.model_info.labels(model, alias, version).set(1)
        self.model_loaded_at.set(loaded_at)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request; the labelled children are looked up once per (endpoint,
        status), which is bounded: endpoints are route templates."""
        children = self._per_status.get((endpoint, status))
        if children is None:
            code = str(status)
            children = (
                self.latency.labels(endpoint),
                self.requests.labels(endpoint, code),
                self.errors.labels(endpoint, code) if status >= 400 else None,
            )
            self._per_status[(endpoint, status)] = children
        latency, requests, errors = children
        latency.observe(seconds)
        requests.inc()
        if errors is not None:
            errors.inc()

    def answers(self, answers: list[dict], low_confidence: float) -> None:
        for answer in answers:
            if "label" in answer:
                self.predictions.labels(answer["label"]).inc()
                if answer["score"] < low_confidence:
                    self.low_confidence.labels(answer["label"]).inc()
            else:
                self.generations.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
