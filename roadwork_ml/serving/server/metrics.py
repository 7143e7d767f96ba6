"""Prometheus metrics of the model server (one registry per app, served at ``/metrics``).

Units: every duration is in seconds, probabilities in [0, 1], batch sizes in images.
The alert rules in ``deploy/prometheus/`` and the Grafana dashboard in ``deploy/grafana/``
query exactly these names.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
PROB_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DECISIONS = ("roadwork", "no_roadwork", "defer")


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "roadwork_request_duration_seconds",
            "Request latency from arrival to response, seconds",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "roadwork_queue_duration_seconds",
            "Time a request waited in the dynamic batcher's queue, seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "roadwork_inference_duration_seconds",
            "Model execution time of one batch (forward pass + decision policy), seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decode_seconds = Histogram(
            "roadwork_decode_duration_seconds",
            "Decoding time of one encoded image, seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "roadwork_batch_size",
            "Images per executed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "roadwork_requests_total",
            "Requests by endpoint and HTTP status code",
            ["endpoint", "code"],
            registry=r,
        )
        self.images = Counter("roadwork_images_total", "Images scored", registry=r)
        self.decisions = Counter(
            "roadwork_decisions_total",
            "Scored images by decision (defer = sent to review)",
            ["decision"],
            registry=r,
        )
        self.probability = Histogram(
            "roadwork_calibrated_probability",
            "Calibrated P(roadwork) of scored images (mean = rate(_sum) / rate(_count))",
            buckets=PROB_BUCKETS,
            registry=r,
        )
        self.decode_failures = Counter(
            "roadwork_decode_failures_total",
            "Images refused by the decoder, by reason code",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("roadwork_requests_in_flight", "Requests being handled", registry=r)
        self.queue_depth = Gauge("roadwork_queue_images", "Images waiting in the batcher's queue", registry=r)
        self.model = Info("roadwork_model", "The model being served", registry=r)
        self.model_loaded = Gauge(
            "roadwork_model_loaded_timestamp_seconds",
            "Unix time the serving model was loaded",
            registry=r,
        )
        self.swaps = Counter("roadwork_model_swaps_total", "Hot swaps to a new champion", registry=r)
        self.swap_failures = Counter(
            "roadwork_model_swap_failures_total",
            "Champions refused at load (hash mismatch, load error)",
            registry=r,
        )
        self.log_rows = Counter(
            "roadwork_inference_log_rows_total",
            "Rows written to the monitoring inference log",
            registry=r,
        )
        for d in DECISIONS:
            self.decisions.labels(d)  # export zeros so rate() and the defer-rate ratio exist from the start

    def set_model(self, info: dict[str, str], swapped: bool) -> None:
        self.model.info(info)
        self.model_loaded.set(time.time())
        if swapped:
            self.swaps.inc()

    def observe_outputs(self, outputs) -> None:
        """Count one request's decisions and probabilities (``outputs``: model.BatchOutputs)."""
        self.images.inc(len(outputs.probability))
        for d in outputs.decision:
            self.decisions.labels(str(d)).inc()
        for p in outputs.probability:
            self.probability.observe(float(p))


def endpoint_of(path: str) -> str:
    """The ``endpoint`` label of a request path."""
    if path.endswith("/infer"):
        return "infer"
    if path == "/predict":
        return "predict"
    if path.startswith("/v2/health"):
        return "health"
    if path == "/metrics":
        return "metrics"
    return "metadata" if path.startswith("/v2") else "other"


class ObserveRequests:
    """Outermost ASGI layer: latency and status of every request (401 and 413 included)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        endpoint = endpoint_of(scope["path"])

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - t0)
