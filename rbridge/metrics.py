"""Prometheus metrics (prometheus-client), in a registry of the app's own.

Request counts and latency by model and status; batch sizes; worker restarts. Worker figures
(state, memory, requests served) are read from the pool at scrape time by a collector, labelled
by worker slot, never by pid, so label sets do not grow as workers are replaced.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STATES = ("starting", "idle", "busy", "draining", "dead", "failed")


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
        self.pool = None

    def attach(self, pool) -> None:
        self.pool = pool
        self.registry.register(_PoolCollector(pool))

    def request(self, model: str, status: int, seconds: float, rows: int = 0) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model, str(status)).observe(seconds)
        if rows:
            self.rows.labels(model).inc(rows)

    def batch(self, model: str, requests: int, rows: int, r_seconds: float) -> None:
        self.batch_requests.labels(model).observe(requests)
        self.batch_rows.labels(model).observe(rows)
        self.r_seconds.labels(model).observe(r_seconds)

    def restart(self, slot: int, reason: str) -> None:
        self.restarts.labels(str(slot), reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
