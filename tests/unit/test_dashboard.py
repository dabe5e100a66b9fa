"""The dashboard's figures (no R): quantiles as Prometheus computes them, rates and percentiles
over samples. The pages themselves are tested in a browser in tests/integration."""

from __future__ import annotations


import pytest

from rbridge.gateway import dashboard
from rbridge.metrics import Metrics



# -- unit: figures ----------------------------------------------------------------------------------
def test_quantile_interpolates_like_prometheus():
    bounds = [0.01, 0.1, 1.0, float("inf")]
    assert dashboard.quantile(0.5, bounds, [0, 10, 10, 10]) == pytest.approx(0.055)
    assert dashboard.quantile(0.99, bounds, [5, 5, 5, 10]) == 1.0        # in +Inf: the last finite bound
    assert dashboard.quantile(0.5, bounds, [0, 0, 0, 0]) is None


class FakePool:
    def __init__(self):
        self.pid, self.restarts = 100, 0

    def status(self):
        return {"workers": [{"slot": 0, "state": "idle", "pid": self.pid, "restarts": self.restarts,
                             "requests_served": 1, "last_exit": None, "busy_seconds": None,
                             "memory": {"rss": 200 << 20, "uss": 150 << 20, "pss": 160 << 20}}],
                "queue_depth": 0, "queue_size": 8, "effective_size": 1, "size_reason": "",
                "container_memory": {"limit": 1 << 30, "used": 1 << 29, "source": "machine"}}


def test_board_series_rates_and_percentiles():
    metrics, pool = Metrics(), FakePool()
    board = dashboard.Board(pool, metrics, interval=60)     # samples taken by hand below
    board.start()
    for _ in range(8):
        metrics.request("cars", 200, 0.004)
    metrics.request("cars", 422, 0.002)
    metrics.request("cars", 503, 0.2)
    pool.pid, pool.restarts = 101, 1
    board.sample()
    data = board.snapshot()
    board.stop()
    cars = data["requests"]["cars"]
    assert (cars["total"], cars["errors_4xx"], cars["errors_5xx"]) == (10, 1, 1)
    assert cars["window"]["rps"] > 0 and cars["window"]["errors"] > 0
    assert 2.5 <= cars["window"]["p50"] <= 5 and cars["window"]["p99"] > 100
    assert len(cars["series"]["t"]) == 1 and cars["series"]["p95"][0] is not None
    series = data["worker_series"]["0"]
    assert series["pid"] == [100, 101] and series["rss"] == [200 << 20, 200 << 20]
    assert data["workers"][0]["restarts"] == 1 and data["pool"]["queue_size"] == 8
