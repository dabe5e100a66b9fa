"""Prometheus metrics (prometheus-client), in a registry of the app's own.

Request counts and latency by model and status; the same and the distribution of predictions
by model and version (a canary judged beside the active version); shadow comparisons and
capture drops; batch sizes; worker restarts. Worker figures
(state, memory, requests served) are read from the pool at scrape time by a collector, labelled
by worker slot, never by pid, so label sets do not grow as workers are replaced.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STATES = ("starting", "idle", "busy", "draining", "dead", "failed")
# Numeric predictions: 1-2.5-5 steps per decade from 0.001 to 100 000, both signs, and 0.
_STEPS = [m * 10.0 ** e for e in range(-3, 6) for m in (1, 2.5, 5)]
PREDICTION_BUCKETS = tuple([-v for v in reversed(_STEPS)] + [0.0] + _STEPS)
MAX_LABELS = 50          # distinct labels counted per model version; the rest count as "_other"
OTHER = "_other"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rbridge_requests", "Prediction requests", ["model", "status"], registry=r)
        self.latency = Histogram("rbridge_request_seconds", "Prediction request latency",
                                 ["model", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter("rbridge_rows", "Rows scored", ["model"], registry=r)
        self.batch_requests = Histogram("rbridge_batch_requests", "Requests merged into one R call",
                                        ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.batch_rows = Histogram("rbridge_batch_rows", "Rows in one R call", ["model"],
                                    buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384), registry=r)
        self.r_seconds = Histogram("rbridge_r_seconds", "Time inside R per call", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("rbridge_queue_wait_seconds", "Time a request waited for a worker",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.restarts = Counter("rbridge_worker_restarts", "Worker replacements", ["slot", "reason"],
                                registry=r)
        self.version_requests = Counter("rbridge_version_requests", "Prediction requests by model version",
                                        ["model", "version", "status"], registry=r)
        self.version_latency = Histogram("rbridge_version_request_seconds", "Request latency by model version",
                                         ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.shadow = Counter("rbridge_shadow_comparisons", "Shadow scorings compared with the answer "
                              "(result: agree, disagree, error)", ["model", "version", "result"], registry=r)
        self.shadow_rows = Counter("rbridge_shadow_rows_disagreeing", "Rows whose shadow prediction differed",
                                   ["model", "version"], registry=r)
        self.shadow_dropped = Counter("rbridge_shadow_dropped", "Shadow scorings not done "
                                      "(reason: busy, queue_full)", ["model", "reason"], registry=r)
        self.captured = Counter("rbridge_capture_records", "Captured requests by outcome (written, sent, "
                                "dropped: buffer full, failed: the sink refused or timed out)",
                                ["model", "result"], registry=r)
        self.connections_closed = Counter("rbridge_client_connections_closed", "Idle connections closed "
                                          "because their address held more than --max-connections-per-client",
                                          registry=r)
        self.predictions = Predictions()
        r.register(self.predictions)
        self.pool = None

    def attach(self, pool) -> None:
        self.pool = pool
        self.registry.register(_PoolCollector(pool))

    def request(self, model: str, status: int, seconds: float, rows: int = 0, version: str | None = None) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model, str(status)).observe(seconds)
        if rows:
            self.rows.labels(model).inc(rows)
        if version is not None:
            self.version_requests.labels(model, version, str(status)).inc()
            self.version_latency.labels(model, version).observe(seconds)

    def batch(self, model: str, requests: int, rows: int, r_seconds: float) -> None:
        self.batch_requests.labels(model).observe(requests)
        self.batch_rows.labels(model).observe(rows)
        self.r_seconds.labels(model).observe(r_seconds)

    def restart(self, slot: int, reason: str) -> None:
        self.restarts.labels(str(slot), reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Predictions:
    """What each model version predicted: a histogram of numeric answers and a count per label
    (at most MAX_LABELS per version, so a model answering free text cannot grow /metrics).
    Kept as numpy counts and exposed at scrape time: one searchsorted per request, not one
    Histogram.observe per row. Only single-column answers (a vector) are counted."""

    def __init__(self):
        self._bounds = np.array(PREDICTION_BUCKETS)
        self._numbers: dict[tuple, list] = {}     # (model, version) -> [bucket counts, sum, count]
        self._labels: dict[tuple, dict] = {}      # (model, version) -> {label: count}
        self._lock = threading.Lock()

    def observe(self, model: str, version: str, output) -> None:
        if output is None or output.kind != "vector" or not output.values:
            return
        values = output.values[0]
        key = (model, version or "")
        if isinstance(values, list) and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            values = np.asarray(values, dtype=np.float64)
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            counts = np.bincount(np.searchsorted(self._bounds, finite, side="left"),
                                 minlength=len(self._bounds) + 1)
            with self._lock:
                entry = self._numbers.setdefault(key, [np.zeros(len(self._bounds) + 1, np.int64), 0.0, 0])
                entry[0] += counts
                entry[1] += float(finite.sum())
                entry[2] += int(finite.size)
            return
        with self._lock:
            seen = self._labels.setdefault(key, {})
            for value in values:
                label = str(value) if value is not None else "NA"
                if label not in seen and len(seen) >= MAX_LABELS:
                    label = OTHER
                seen[label] = seen.get(label, 0) + 1

    def numbers(self) -> dict:
        """(model, version) -> {"bounds", "cumulative", "sum", "count"} (for the dashboard)."""
        with self._lock:
            return {k: {"bounds": list(PREDICTION_BUCKETS) + [float("inf")],
                        "cumulative": np.cumsum(v[0]).tolist(), "sum": v[1], "count": v[2]}
                    for k, v in self._numbers.items()}

    def labels(self) -> dict:
        with self._lock:
            return {k: dict(v) for k, v in self._labels.items()}

    def collect(self):
        hist = HistogramMetricFamily("rbridge_prediction_value", "Numeric predictions by model version",
                                     labels=["model", "version"])
        count = CounterMetricFamily("rbridge_prediction_values", "Numeric predictions counted by model version",
                                    labels=["model", "version"])
        total = GaugeMetricFamily("rbridge_prediction_value_total_sum", "Sum of the numeric predictions "
                                  "(divided by rbridge_prediction_values_total: their mean)", labels=["model", "version"])
        for (model, version), v in self.numbers().items():
            buckets = [(repr(b) if b != float("inf") else "+Inf", c)
                       for b, c in zip(v["bounds"], v["cumulative"])]
            hist.add_metric([model, version], buckets, v["sum"])   # negative buckets: no _sum/_count
            count.add_metric([model, version], v["count"])
            total.add_metric([model, version], v["sum"])
        labels = CounterMetricFamily("rbridge_prediction_labels", "Predicted labels by model version "
                                     f"(at most {MAX_LABELS} per version; more count as {OTHER})",
                                     labels=["model", "version", "label"])
        for (model, version), counts in self.labels().items():
            for label, n in counts.items():
                labels.add_metric([model, version, label], n)
        return [hist, count, total, labels]


class _PoolCollector:
    """Worker and pool figures, read at scrape time."""

    def __init__(self, pool):
        self.pool = pool

    def collect(self):
        status = self.pool.status()
        state = GaugeMetricFamily("rbridge_worker_state", "1 for the state each worker slot is in",
                                  labels=["slot", "state"])
        served = GaugeMetricFamily("rbridge_worker_requests_served",
                                   "Requests served by the slot's current process", labels=["slot"])
        memory = GaugeMetricFamily("rbridge_worker_memory_bytes",
                                   "Worker memory: rss, uss, pss, peak_rss (OS) and r_heap (R's gc())",
                                   labels=["slot", "kind"])
        for w in status["workers"]:
            slot = str(w["slot"])
            for s in STATES:
                state.add_metric([slot, s], 1.0 if w["state"] == s else 0.0)
            served.add_metric([slot], w["requests_served"])
            for kind, value in (w["memory"] or {}).items():
                memory.add_metric([slot, kind], value)
        queue = GaugeMetricFamily("rbridge_queue_depth", "Requests waiting for a worker")
        queue.add_metric([], status["queue_depth"])
        size = GaugeMetricFamily("rbridge_pool_size", "Worker slots in the pool")
        size.add_metric([], status["effective_size"])
        container = GaugeMetricFamily("rbridge_container_memory_bytes",
                                      "Memory the container may use (limit) and uses (used)", labels=["kind"])
        container.add_metric(["limit"], status["container_memory"]["limit"])
        container.add_metric(["used"], status["container_memory"]["used"])
        return [state, served, memory, queue, size, container]
