"""The server's Prometheus metrics (prometheus_client): requests, errors, latency, batches, capture.

One registry per server, so several servers in one process (tests) keep separate counts. Label
values are only the configured variant names and NO_VARIANT, never a client's header value, so a
client cannot grow the series count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
NO_VARIANT = "none"  # requests refused before a variant was chosen (unknown target, ...)


class _Live:
    """Gauges read when scraped: variant weights, rows waiting for a batch."""

    def __init__(self) -> None:
        self.weights: Callable[[], dict[str, float]] = dict
        self.queued: Callable[[], dict[str, int]] = dict

    def collect(self) -> Iterable[Metric]:
        weight = GaugeMetricFamily("reviewpipe_variant_weight", "Current routing weight.", labels=["variant"])
        for name, value in sorted(self.weights().items()):
            weight.add_metric([name], value)
        queued = GaugeMetricFamily(
            "reviewpipe_batcher_queued_reviews", "Reviews waiting for a model call.", labels=["variant"]
        )
        for name, value in sorted(self.queued().items()):
            queued.add_metric([name], value)
        return [weight, queued]


class ServerMetrics:
    """Counters and histograms of one server; `render(accept)` gives the /metrics body."""

    def __init__(self, variants: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.variants = set(variants)
        r = self.registry
        self.requests = Counter(
            "reviewpipe_requests",
            "Invocation requests by variant and HTTP status.",
            ["variant", "code"],
            registry=r,
        )
        self.errors = Counter(
            "reviewpipe_request_errors",
            "Invocation requests answered with 4xx/5xx.",
            ["variant", "code"],
            registry=r,
        )
        self.reviews = Counter("reviewpipe_reviews", "Reviews classified.", ["variant"], registry=r)
        self.latency = Histogram(
            "reviewpipe_request_latency_seconds",
            "Invocation latency, request in to response out.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "reviewpipe_batch_size",
            "Reviews per model call (micro-batching).",
            ["variant"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.loaded = Gauge(
            "reviewpipe_model_loaded", "1 once the variant's model is loaded.", ["variant"], registry=r
        )
        self.in_flight = Gauge(
            "reviewpipe_in_flight_requests", "Invocations being processed now.", registry=r
        )
        self.captured = Counter(
            "reviewpipe_capture_records", "Invocations written to data capture.", ["variant"], registry=r
        )
        self.capture_dropped = Counter(
            "reviewpipe_capture_dropped",
            "Sampled invocations not captured: buffer full (buffer) or the write failed (write).",
            ["variant", "reason"],
            registry=r,
        )
        self.live = _Live()
        r.register(self.live)
        for name in self.variants:
            self.loaded.labels(name).set(0)

    def label(self, variant: str | None) -> str:
        return variant if variant in self.variants else NO_VARIANT

    def request_started(self) -> None:
        self.in_flight.inc()

    def request_finished(self, variant: str | None, status: int, seconds: float, reviews: int = 0) -> None:
        name = self.label(variant)
        self.in_flight.dec()
        self.requests.labels(name, str(status)).inc()
        if status >= 400:
            self.errors.labels(name, str(status)).inc()
        if reviews:
            self.reviews.labels(name).inc(reviews)
        self.latency.labels(name).observe(seconds)

    def batch(self, variant: str, requests: int, reviews: int) -> None:
        self.batch_size.labels(self.label(variant)).observe(reviews)

    def set_variant(self, variant: str, loaded: bool) -> None:
        self.loaded.labels(self.label(variant)).set(int(loaded))

    def capture_written(self, variant: str, records: int) -> None:
        self.captured.labels(self.label(variant)).inc(records)

    def capture_drop(self, variant: str, reason: str, records: int = 1) -> None:
        self.capture_dropped.labels(self.label(variant), reason).inc(records)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper asked for (Prometheus text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def value(self, name: str, **labels: Any) -> float:
        """One sample's current value (0 when absent); for the server's own decisions and tests."""
        found = self.registry.get_sample_value(name, {k: str(v) for k, v in labels.items()})
        return float(found or 0.0)
