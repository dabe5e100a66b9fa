"""The KServe runtime's settings and the KEDA trigger's metrics on a real server (real R,
real pool, real sockets): the unit tests check the manifests against the code; this checks
that a server started with the ServingRuntime's RBRIDGE_* variables is ready, and that the
figures the ScaledObject's query reads rise when requests queue and fall back after.
"""

from __future__ import annotations

import concurrent.futures as cf
import secrets
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from manifests import container_env, docs, one
from serverproc import Server, free_port

pytestmark = [pytest.mark.r, pytest.mark.slow]


def _runtime_env(tmp_path) -> dict[str, str]:
    """The ServingRuntime's RBRIDGE_* variables, with what must differ on a shared test machine
    (loopback, free ports, one worker, files in tmp_path; models, users and port come as flags)."""
    runtime = one(docs("kserve"), "ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    env = {k: v for k, v in container_env(container).items() if k.startswith("RBRIDGE_")}
    key = tmp_path / "signing.key"
    key.write_text(secrets.token_urlsafe(48))
    env.update(RBRIDGE_HOST="127.0.0.1", RBRIDGE_WORKERS="1",
               RBRIDGE_METRICS_PORT=str(free_port()), RBRIDGE_SIGNING_KEY_FILE=str(key))
    return env


def _load(metrics_url: str) -> tuple[float, float, float]:
    """(queued, busy, slots) from the metrics port without credentials, as Prometheus scrapes it."""
    text = requests.get(metrics_url, timeout=5).text
    queued = busy = slots = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rbridge_queue_depth":
                queued += s.value
            elif s.name == "rbridge_worker_state" and s.labels["state"] == "busy":
                busy += s.value
            elif s.name == "rbridge_pool_size":
                slots += s.value
    return queued, busy, slots


def test_runtime_settings_serve_and_keda_load_follows_the_queue(small_models, tmp_path):
    env = _runtime_env(tmp_path)
    threshold = float(one(docs("local+keda", tmp_path / "k"), "ScaledObject")["spec"]["triggers"][0]
                      ["metadata"]["threshold"])
    metrics_url = f"http://127.0.0.1:{env['RBRIDGE_METRICS_PORT']}/metrics"
    with Server(small_models, tmp_path, "--timeout", "20", env=env) as s:
        assert s.get("/models").status_code == 200
        assert _load(metrics_url) == (0, 0, 1)

        def sleep(seconds):
            return s.predict("chaos", [{"mode": "sleep", "x": seconds}])

        with cf.ThreadPoolExecutor(4) as ex:
            first = ex.submit(sleep, 3.0)
            deadline = time.monotonic() + 10
            while _load(metrics_url)[1] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            waiting = [ex.submit(sleep, 0.1) for _ in range(3)]
            deadline = time.monotonic() + 2
            while _load(metrics_url)[0] < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            queued, busy, slots = _load(metrics_url)
            assert (queued, busy, slots) == (3, 1, 1)
            load = (queued + busy) / slots
            assert load == 4 and load > threshold     # KEDA would ask for 4 / 0.8 -> 5x the pods
            assert first.result(30).status_code == 200
            assert [f.result(30).status_code for f in waiting] == [200] * 3
        assert _load(metrics_url) == (0, 0, 1)
