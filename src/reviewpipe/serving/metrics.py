"""Prometheus text-format metrics for the server: requests, errors, latency, batches, per variant."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last: +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(float(bound))
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {cumulative}')
        out.append(f"{name}_sum{{{labels}}} {self.total}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServerMetrics:
    """Thread-safe counters and histograms; `render()` gives the /metrics body."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.reviews: dict[str, int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.batches: dict[str, _Histogram] = {}
        self.loaded: dict[str, bool] = {}
        self.in_flight = 0

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_finished(self, variant: str, status: int, seconds: float, reviews: int = 0) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(variant, status)] += 1
            self.reviews[variant] += reviews
            self.latency.setdefault(variant, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, variant: str, requests: int, reviews: int) -> None:
        with self._lock:
            self.batches.setdefault(variant, _Histogram(BATCH_BUCKETS)).observe(reviews)

    def set_variant(self, variant: str, loaded: bool) -> None:
        with self._lock:
            self.loaded[variant] = loaded

    def render(self, weights: dict[str, float] | None = None) -> str:
        """The /metrics body; `weights` are the router's current variant weights."""
        with self._lock:
            lines = [
                "# HELP reviewpipe_requests_total Invocation requests by variant and HTTP status.",
                "# TYPE reviewpipe_requests_total counter",
            ]
            for (variant, status), n in sorted(self.requests.items()):
                lines.append(f'reviewpipe_requests_total{{variant="{_label(variant)}",code="{status}"}} {n}')
            lines += [
                "# HELP reviewpipe_request_errors_total Invocation requests answered with 4xx/5xx.",
                "# TYPE reviewpipe_request_errors_total counter",
            ]
            for (variant, status), n in sorted(self.requests.items()):
                if status >= 400:
                    lines.append(
                        f'reviewpipe_request_errors_total{{variant="{_label(variant)}",code="{status}"}} {n}'
                    )
            lines += [
                "# HELP reviewpipe_reviews_total Reviews classified.",
                "# TYPE reviewpipe_reviews_total counter",
            ]
            lines += [
                f'reviewpipe_reviews_total{{variant="{_label(v)}"}} {n}'
                for v, n in sorted(self.reviews.items())
            ]
            lines += [
                "# HELP reviewpipe_request_latency_seconds Invocation latency, request in to response out.",
                "# TYPE reviewpipe_request_latency_seconds histogram",
            ]
            for variant, hist in sorted(self.latency.items()):
                lines += hist.lines("reviewpipe_request_latency_seconds", f'variant="{_label(variant)}"')
            lines += [
                "# HELP reviewpipe_batch_size Reviews per model call (micro-batching).",
                "# TYPE reviewpipe_batch_size histogram",
            ]
            for variant, hist in sorted(self.batches.items()):
                lines += hist.lines("reviewpipe_batch_size", f'variant="{_label(variant)}"')
            lines += [
                "# HELP reviewpipe_variant_weight Current routing weight.",
                "# TYPE reviewpipe_variant_weight gauge",
            ]
            lines += [
                f'reviewpipe_variant_weight{{variant="{_label(v)}"}} {w}'
                for v, w in sorted((weights or {}).items())
            ]
            lines += [
                "# HELP reviewpipe_model_loaded 1 once the variant's model is loaded.",
                "# TYPE reviewpipe_model_loaded gauge",
            ]
            lines += [
                f'reviewpipe_model_loaded{{variant="{_label(v)}"}} {int(x)}'
                for v, x in sorted(self.loaded.items())
            ]
            lines += [
                "# HELP reviewpipe_in_flight_requests Invocations being processed now.",
                "# TYPE reviewpipe_in_flight_requests gauge",
                f"reviewpipe_in_flight_requests {self.in_flight}",
            ]
            return "\n".join(lines) + "\n"
