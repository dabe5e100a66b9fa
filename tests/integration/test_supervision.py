"""Pool supervision with real R: crashes, timeouts, memory, broken models, backpressure, drain."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time

import psutil
import pytest
import requests

from serverproc import ADMIN, Server, copy_models

pytestmark = [pytest.mark.r, pytest.mark.slow]
CARS_ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}


def chaos(server, mode, x=1.0, **kw):
    return server.predict("chaos", [{"mode": mode, "x": x}], **kw)


def busy_pid(server, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in server.get("/status").json()["workers"]:
            if w["state"] == "busy":
                return w["pid"]
        time.sleep(0.05)
    raise AssertionError("no worker became busy")


def wait_full(server, n, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = server.get("/status").json()["workers"]
        if sum(w["state"] == "idle" for w in workers) == n:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"pool not back to {n} idle workers: {workers}")


def test_sigkill_of_busy_worker_is_retried_and_pool_heals(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2") as s:
        with cf.ThreadPoolExecutor(4) as ex:
            slow = ex.submit(chaos, s, "sleep", 2.0)
            pid = busy_pid(s)
            others = [ex.submit(s.predict, "cars", [CARS_ROW]) for _ in range(20)]
            os.kill(pid, signal.SIGKILL)
            r = slow.result(30)
            assert r.status_code == 200 and r.json()["predictions"] == [4.0]   # retried elsewhere
            assert all(f.result(30).status_code == 200 for f in others)
        workers = wait_full(s, 2)
        assert sum(w["restarts"] for w in workers) == 1
        assert pid not in [w["pid"] for w in workers]
        assert "SIGKILL" in s.log_text() and "memory may have run out" in s.log_text()


def test_crash_without_retry_fails_only_that_request_with_503(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2", env={"RBRIDGE_RETRY_ON_CRASH": "false"}) as s:
        t0 = time.monotonic()
        r = chaos(s, "segv")
        assert r.status_code == 503 and "died" in r.json()["error"]["message"]
        assert time.monotonic() - t0 < 5
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        wait_full(s, 2)


def test_request_that_crashes_again_on_retry_fails(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2") as s:
        r = chaos(s, "die")
        assert r.status_code == 503
        assert s.predict("cars", [CARS_ROW]).status_code == 200


def test_endless_loop_times_out_and_worker_is_replaced(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2", "--timeout", "2") as s:
        t0 = time.monotonic()
        r = chaos(s, "spin")
        elapsed = time.monotonic() - t0
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert elapsed < 2 + 1
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        workers = wait_full(s, 2)
        assert sum(w["restarts"] for w in workers) == 1


def test_per_model_timeout_from_json(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "m", ["chaos"])
    (models / "chaos.json").write_text((small_models / "chaos.json").read_text().replace(
        '"version": "chaos-1",', '"version": "chaos-1", "timeout": 1,'))
    with Server(models, tmp_path, "--workers", "1", "--timeout", "30") as s:
        t0 = time.monotonic()
        assert chaos(s, "spin").status_code == 504
        assert time.monotonic() - t0 < 2.5


def test_runaway_memory_hits_the_hard_limit_and_others_keep_serving(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2", "--worker-memory-limit", "1G") as s:
        with cf.ThreadPoolExecutor(2) as ex:
            hog = ex.submit(chaos, s, "hog")
            for _ in range(10):
                assert s.predict("cars", [CARS_ROW]).status_code == 200
            r = hog.result(60)
        assert r.status_code in (422, 503), r.text
        if r.status_code == 422:
            assert "cannot allocate" in r.json()["error"]["message"]
        assert s.predict("cars", [CARS_ROW]).status_code == 200


def test_worker_over_soft_memory_limit_is_recycled(small_models, tmp_path):
    # (a limit below a fresh worker's size is refused at boot, so the worker grows past it)
    with Server(small_models, tmp_path, "--workers", "1", "--max-worker-memory", "600M") as s:
        assert s.predict("chaos", [{"mode": "grow", "x": 800}]).status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            w = s.get("/status").json()["workers"][0]
            if w["restarts"] >= 1:
                break
            time.sleep(0.1)
        assert w["restarts"] >= 1 and "recycling" in s.log_text()
        assert s.predict("cars", [CARS_ROW]).status_code == 200


def test_max_requests_recycles_without_failing_requests(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "2", "--max-requests", "5") as s:
        results, restarts, deadline = [], 0, time.monotonic() + 30
        while restarts < 3 and time.monotonic() < deadline:   # the replacement starts first,
            results.append(s.predict("cars", [CARS_ROW]).status_code)   # the old one serves on
            restarts = sum(w["restarts"] for w in s.get("/status").json()["workers"])
            time.sleep(0.02)
        assert restarts >= 3
        assert results == [200] * len(results)


def test_broken_model_leaves_others_serving_and_status_explains(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "m", ["cars"])
    (models / "broken.rds").write_bytes(b"this is not an rds file")
    (models / "badscript.rds").write_bytes((small_models / "cars.rds").read_bytes())
    (models / "badscript.R").write_text("score <- function(model, newdata) {\n  oops(\n")
    with Server(models, tmp_path, "--workers", "1", wait_ready=False) as s:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {m["name"]: m for m in s.get("/models").json()["models"]}
            if states["cars"]["state"] == "loaded":
                break
            time.sleep(0.1)
        ready = requests.get(s.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json() == {"ready": False, "reason": "model(s) failed to load"}
        assert states["broken"]["state"] == "failed" and states["broken"]["error"]
        assert states["badscript"]["state"] == "failed"
        reason = s.get("/status").json()["ready"]["reason"]              # the details need an admin
        assert "badscript" in reason and "broken" in reason
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        r = s.predict("broken", [CARS_ROW])
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
        listed = {m["name"]: m for m in s.get("/models").json()["models"]}
        assert listed["broken"]["state"] == "failed" and listed["cars"]["state"] == "loaded"


def test_full_queue_answers_429_with_retry_after(small_models, tmp_path):
    with Server(small_models, tmp_path, "--workers", "1", "--queue-size", "1") as s:
        with cf.ThreadPoolExecutor(3) as ex:
            first = ex.submit(chaos, s, "sleep", 2.0)
            busy_pid(s)
            second = ex.submit(chaos, s, "sleep", 0.1)
            time.sleep(0.3)
            third = chaos(s, "sleep", 0.1)
            assert third.status_code == 429 and third.headers["Retry-After"]
            assert requests.get(s.url + "/healthz", timeout=2).status_code == 200
            assert first.result(30).status_code == 200 and second.result(30).status_code == 200


def test_sigterm_during_a_burst_loses_no_accepted_request(small_models, tmp_path):
    s = Server(small_models, tmp_path, "--workers", "2", "--graceful-timeout", "20")
    session = requests.Session()

    def call(i):
        try:
            return session.post(s.url + "/models/chaos/predict", auth=ADMIN, timeout=30,
                                json={"data": [{"mode": "sleep", "x": 0.2}]}).status_code
        except requests.ConnectionError:
            return "refused"
    with cf.ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(call, i) for i in range(8)]
        busy_pid(s)
        s.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        while requests.get(s.url + "/readyz", timeout=5).status_code != 503:
            time.sleep(0.02)
        assert time.monotonic() - sent < 2, "/readyz took more than 2 s to turn 503 after SIGTERM"
        results = [f.result(60) for f in futures]
    assert s.proc.wait(30) == 0
    s.stop()
    assert results.count(200) == 8, results


def test_status_memory_matches_the_operating_system(server):
    server.predict("cars", [CARS_ROW])
    workers = wait_full(server, 2)
    assert len(workers) == 2
    for w in workers:
        mem, proc = w["memory"], psutil.Process(w["pid"])
        os_rss = proc.memory_info().rss
        os_uss = proc.memory_full_info().uss
        assert abs(mem["rss"] - os_rss) <= 0.1 * os_rss
        assert abs(mem["uss"] - os_uss) <= 0.1 * os_uss
        assert mem["peak_rss"] >= mem["rss"] * 0.9
    metrics = server.get("/metrics").text
    assert 'rbridge_worker_memory_bytes{kind="rss",slot="0"}' in metrics
    assert 'rbridge_requests_total{model="cars",status="200"}' in metrics


def test_metrics_port_serves_metrics_without_auth(small_models, tmp_path):
    from serverproc import free_port
    port = free_port()
    with Server(small_models, tmp_path, "--workers", "1", "--metrics-port", str(port)) as s:
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        open_metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert open_metrics.status_code == 200
        assert 'rbridge_requests_total{model="cars",status="200"} 1.0' in open_metrics.text
        assert requests.get(s.url + "/metrics", timeout=5).status_code == 401


def test_batch_mates_of_a_crashing_request_are_retried_alone(small_models, tmp_path):
    """Requests merged into one R call with a request that kills the worker are retried one by
    one on a fresh worker: they succeed, and only the request that crashes again fails."""
    with Server(small_models, tmp_path, "--workers", "1") as s:
        with cf.ThreadPoolExecutor(8) as ex:
            blocker = ex.submit(chaos, s, "sleep", 1.0)
            busy_pid(s)
            killer = ex.submit(chaos, s, "die")
            time.sleep(0.1)
            mates = [ex.submit(chaos, s, "ok", float(i)) for i in range(5)]
            assert blocker.result(30).status_code == 200
            assert killer.result(60).status_code == 503
            results = [f.result(60) for f in mates]
        assert [r.status_code for r in results] == [200] * 5
        assert [r.json()["predictions"] for r in results] == [[2.0 * i] for i in range(5)]
        batches = s.get("/metrics").text
        assert 'rbridge_worker_restarts_total{reason="crash",slot="0"} 2.0' in batches
