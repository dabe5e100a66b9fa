"""The live dashboard's figures, and the browser pages the gateway serves (/dashboard, /docs).

`Board` keeps five minutes of history in the gateway: every 2 s a sampler thread records each
worker's state, pid and memory (from `pool.status()`) and each model's cumulative request
counts and latency histogram (read from the Prometheus metrics the app already keeps, so the
request path does no extra work). `/dashboard/data` turns the ring buffer into series: requests/s,
errors/s and latency percentiles per interval (interpolated within histogram buckets, as
Prometheus' histogram_quantile does), and the same figures over the last 30 s.
The sampler starts on the first poll, so a server nobody watches pays nothing.

The pages are static files in rbridge/gateway/static/ with their own JS and CSS (no inline script, no
external asset), served with a Content-Security-Policy that allows only the gateway itself.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from pathlib import Path

from flask import Response, send_from_directory

log = logging.getLogger("bridge.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
# data: images are the icons inside swagger-ui.css; nothing else leaves 'self'.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
MEMORY_KINDS = ("rss", "uss", "pss", "r_heap")
QUANTILES = (0.5, 0.95, 0.99)


def page(filename: str) -> Response:
    """One of our HTML pages, with the page CSP instead of the app's default-src 'none'."""
    response = send_from_directory(STATIC, filename, max_age=0)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


def static_file(filename: str) -> Response:
    response = send_from_directory(STATIC, filename, max_age=3600)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


class Board:
    """A ring buffer of samples of the pool and the request metrics."""

    def __init__(self, pool, metrics, interval: float = 2.0, span: float = 300.0, window: float = 30.0):
        self.pool, self.metrics = pool, metrics
        self.interval, self.window = interval, window
        self._samples: collections.deque = collections.deque(maxlen=int(span / interval) + 1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- sampling ----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception:  # a figure we could not read must not end the history
                log.exception("dashboard: sampling failed")

    def sample(self) -> None:
        status = self.pool.status()
        entry = {"t": time.time(), "status": status, "requests": self._request_counts()}
        with self._lock:
            self._samples.append(entry)

    def _request_counts(self) -> dict:
        """{model: {"count", "e4", "e5", "buckets": [cumulative counts]}} summed over statuses."""
        out: dict = {}
        for family in self.metrics.latency.collect():
            for s in family.samples:
                model, status = s.labels.get("model"), s.labels.get("status", "")
                m = out.setdefault(model, {"count": 0.0, "e4": 0.0, "e5": 0.0, "buckets": {}})
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    m["buckets"][le] = m["buckets"].get(le, 0.0) + s.value
                elif s.name.endswith("_count"):
                    m["count"] += s.value
                    if status.startswith("4"):
                        m["e4"] += s.value
                    elif status.startswith("5"):
                        m["e5"] += s.value
        for m in out.values():
            bounds = sorted(m["buckets"])
            m["bounds"], m["buckets"] = bounds, [m["buckets"][b] for b in bounds]
        return out

    # -- the endpoint ------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """What /dashboard/data returns (the app adds the models' descriptions)."""
        self.start()
        with self._lock:
            samples = list(self._samples)
        if not samples:                   # a concurrent first poll is still taking the first sample
            self.sample()
            with self._lock:
                samples = list(self._samples)
        last = samples[-1]
        status = last["status"]
        return {
            "time": last["t"], "interval": self.interval, "window": self.window,
            "pool": {k: status.get(k) for k in ("queue_depth", "queue_size", "effective_size",
                                                 "size_reason", "container_memory")},
            "workers": status["workers"],
            "worker_series": _worker_series(samples),
            "requests": self._request_stats(samples),
            "versions": version_stats(self.metrics),
        }

    def _request_stats(self, samples: list) -> dict:
        last = samples[-1]
        base = next((s for s in samples if s["t"] >= last["t"] - self.window - 0.5 * self.interval),
                    samples[0])
        out = {}
        for model, now in last["requests"].items():
            series = {"t": [], "rps": [], "errors": [], "p50": [], "p95": [], "p99": []}
            for a, b in zip(samples, samples[1:]):
                series["t"].append(round(b["t"], 3))
                for k, v in _rates(a, b, model).items():
                    series[k].append(v)
            window = _rates(base, last, model) if base is not last else _rates(None, last, model)
            out[model] = {"total": int(now["count"]), "errors_4xx": int(now["e4"]),
                          "errors_5xx": int(now["e5"]), "window": window, "series": series}
        return out


def version_stats(metrics) -> dict:
    """{model: {version: figures}} since start, to judge a canary beside the active version:
    requests, errors, latency percentiles (ms), the predictions' mean and percentiles (numbers)
    or counts per label, and the shadow comparisons of that version. Read from the metrics at
    the poll (these are cumulative figures, not series)."""
    out: dict = {}

    def figures(model, version):
        return out.setdefault(model, {}).setdefault(version, {
            "total": 0, "errors_4xx": 0, "errors_5xx": 0, "p50": None, "p95": None, "p99": None,
            "prediction_mean": None, "prediction_p50": None, "prediction_p95": None, "labels": {},
            "shadow": {"agree": 0, "disagree": 0, "error": 0, "rows_disagreeing": 0}})
    for family in metrics.version_requests.collect():
        for smp in family.samples:
            if smp.name.endswith("_total"):
                f = figures(smp.labels["model"], smp.labels["version"])
                f["total"] += int(smp.value)
                status = smp.labels["status"]
                if status[0] in "45":
                    f[f"errors_{status[0]}xx"] += int(smp.value)
    buckets: dict = {}
    for family in metrics.version_latency.collect():
        for smp in family.samples:
            if smp.name.endswith("_bucket"):
                buckets.setdefault((smp.labels["model"], smp.labels["version"]), []).append(
                    (float(smp.labels["le"]), smp.value))
    for (model, version), pairs in buckets.items():
        pairs.sort()
        f = figures(model, version)
        for q in QUANTILES:
            value = quantile(q, [b for b, _ in pairs], [c for _, c in pairs])
            f[f"p{round(q * 100)}"] = None if value is None else round(value * 1000, 3)
    for (model, version), v in metrics.predictions.numbers().items():
        f = figures(model, version)
        f["prediction_mean"] = v["sum"] / v["count"] if v["count"] else None
        f["prediction_p50"] = quantile(0.5, v["bounds"], v["cumulative"])
        f["prediction_p95"] = quantile(0.95, v["bounds"], v["cumulative"])
    for (model, version), counts in metrics.predictions.labels().items():
        figures(model, version)["labels"] = counts
    for counter, key in ((metrics.shadow, None), (metrics.shadow_rows, "rows_disagreeing")):
        for family in counter.collect():
            for smp in family.samples:
                if smp.name.endswith("_total"):
                    shadow = figures(smp.labels["model"], smp.labels["version"])["shadow"]
                    shadow[key or smp.labels["result"]] += int(smp.value)
    return out


def _rates(a: dict | None, b: dict, model: str) -> dict:
    """Requests/s, errors/s and percentiles (ms) between two samples (a None: since start)."""
    new = b["requests"].get(model)
    old = a["requests"].get(model) if a else None
    seconds = (b["t"] - a["t"]) if a else None
    if new is None:                       # no request for the model yet at b
        return {"rps": 0.0 if seconds else None, "errors": 0.0 if seconds else None,
                **{f"p{round(q * 100)}": None for q in QUANTILES}}
    count = new["count"] - (old["count"] if old else 0)
    errors = (new["e4"] + new["e5"]) - ((old["e4"] + old["e5"]) if old else 0)
    deltas = [n - (old["buckets"][i] if old else 0) for i, n in enumerate(new["buckets"])]
    out = {"rps": round(count / seconds, 3) if seconds else None,
           "errors": round(errors / seconds, 3) if seconds else None}
    for q in QUANTILES:
        value = quantile(q, new["bounds"], deltas)
        out[f"p{round(q * 100)}"] = None if value is None else round(value * 1000, 3)
    return out


def quantile(q: float, bounds: list, cumulative: list) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not cumulative or cumulative[-1] <= 0:
        return None
    rank = q * cumulative[-1]
    for i, (upper, count) in enumerate(zip(bounds, cumulative)):
        if count >= rank:
            if math.isinf(upper):
                return bounds[i - 1] if i > 0 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
    return None


def _worker_series(samples: list) -> dict:
    """{slot: {"t": [...], "pid": [...], "state": [...], "rss": [...], ...}} (bytes; None when unknown)."""
    out: dict = {}
    for s in samples:
        for w in s["status"]["workers"]:
            series = out.setdefault(str(w["slot"]), {"t": [], "pid": [], "state": [],
                                                     **{k: [] for k in MEMORY_KINDS}})
            series["t"].append(round(s["t"], 3))
            series["pid"].append(w.get("pid"))
            series["state"].append(w.get("state"))
            memory = w.get("memory") or {}
            for k in MEMORY_KINDS:
                series[k].append(memory.get(k))
    return out
