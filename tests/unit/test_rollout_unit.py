"""Rollouts without R: <name>.json checks, plans resolved from the versions store, the fingerprint
that tells replicas, routing, the shadow comparison and the CloudEvents a capture sink receives."""

from __future__ import annotations

import http.server
import json
import threading
import time

import numpy as np
import pytest

from rbridge import settings as settings_mod
from rbridge.gateway import capture, traffic
from rbridge.metrics import Metrics
from rbridge.models import catalog, rollout
from rbridge.models.registry import Registry
from rbridge.models.reload import fingerprint
from rbridge.models.versions import VersionStore
from rbridge.pool import protocol


@pytest.mark.parametrize("config, message", [
    ({"canary": {"version": 2}}, "canary.percent must be a number from 0 to 100"),
    ({"canary": {"version": 0, "percent": 5}}, "canary.version must be a version number"),
    ({"canary": {"version": 2, "percent": 5, "share": 1}}, "canary: unknown key(s) share"),
    ({"canary": {"version": 2, "percent": 5, "sticky": "yes"}}, "canary.sticky must be true or false"),
    ({"shadow": {"version": "3"}}, "shadow.version must be a version number"),
    ({"shadow": [3]}, "shadow must be an object"),
    ({"capture": {"sample": 0}}, "capture.sample must be a fraction"),
    ({"capture": {"sample": 0.1, "redact": {"ssn": "mask"}}}, "capture.redact must be a list of columns"),
    ({"capture": {"sample": 0.1, "url": "file:///etc/passwd"}}, "capture.url must be an http:// or https://"),
])
def test_bad_rollout_keys_fail_the_model_with_the_key_named(tmp_path, config, message):
    (tmp_path / "m.rds").write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps(config))
    entry = catalog.read_entry(tmp_path, "m")
    assert entry.spec is None and message in entry.error, entry.error


def test_good_rollout_keys_are_normalised(tmp_path):
    (tmp_path / "m.rds").write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps({
        "canary": {"version": 2, "percent": 10}, "shadow": {"version": 3},
        "capture": {"sample": 0.5, "redact": {"ssn": "drop", "email": "hash"}}}))
    entry = catalog.read_entry(tmp_path, "m")
    assert entry.canary == {"version": 2, "percent": 10.0, "sticky": False}
    assert entry.shadow == {"version": 3, "tolerance": rollout.DEFAULT_TOLERANCE}
    assert entry.capture == {"sample": 0.5, "drop": ["ssn"], "hash": ["email"], "url": None, "batch": 100}


def publish(store, name, content: bytes, config=None):
    folder = store.incoming()
    (folder / f"{name}.rds").write_bytes(content)
    if config is not None:
        (folder / f"{name}.json").write_text(json.dumps(config))
    meta = store.add(name, folder, "ana", "upload")
    store.make_live(name, meta["version"])
    return meta["version"]


def test_plans_come_from_rollout_json_over_name_json_and_name_retained_versions_only(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    store = VersionStore(models)
    publish(store, "m", b"two")
    publish(store, "m", b"one", config={"canary": {"version": 1, "percent": 25}, "shadow": {"version": 9}})
    s = settings_mod.load({"models": str(models), "users": str(tmp_path / "u.json")}, env={})
    registry = Registry(s, tmp_path / "snap", versions=store)
    plan = registry.plan("m")
    assert (plan.active, plan.canary.number, plan.canary.target, plan.canary.percent) == (2, 1, "m@1", 25.0)
    assert plan.shadow is None and "no version 9" in plan.errors[0] and plan.source == "<name>.json"
    assert list(registry.extras) == ["m@1"] and registry.names() == ["m"]
    assert {sp.name for sp in registry.specs()} == {"m", "m@1"}
    assert registry.timeout_for("m@1") == registry.timeout_for("m")       # the extra shares the model's settings

    before = fingerprint(models)
    rollout.write_override(store.root, "m", None, {"version": 1, "tolerance": 0.01}, "ana")
    assert fingerprint(models)["m"] != before["m"]                         # how the other replicas learn it
    extras, plans = registry.resolve(registry.entries)
    assert plans["m"].canary is None and plans["m"].shadow.target == "m@1" and plans["m"].source == "rollout API"
    assert extras["m@1"] is registry.extras["m@1"]                         # reused, not read again


class _Registry:
    """Just what Traffic.choose reads."""

    def __init__(self, plan, infos):
        self.plans, self.infos, self.versions = {"m": plan}, infos, None

    def plan(self, name):
        return self.plans.get(name)

    def info(self, name):
        return self.infos.get(name)


def test_canary_share_and_stickiness():
    infos = {n: protocol.ModelInfo(n, v, ok=True) for n, v in (("m", "1.0"), ("m@2", "2.0"))}
    plan = rollout.Plan(1, canary=rollout.Route(2, "m@2", percent=30.0, sticky=True), loaded={1: "m", 2: "m@2"})
    t = traffic.Traffic(_Registry(plan, infos), None, None)
    users = [f"user{i}" for i in range(2000)]
    first = [t.choose("m", u, None) for u in users]
    assert first == [t.choose("m", u, None) for u in users]               # each user keeps its version
    assert 0.27 < first.count("m@2") / len(users) < 0.33
    assert t.choose("m", "x", "2.0") == "m@2" and t.choose("m", "x", "1") == "m"
    infos["m@2"] = protocol.ModelInfo("m@2", "2.0", ok=False, error="boom")
    assert {t.choose("m", u, None) for u in users[:200]} == {"m"}         # a failed canary takes no traffic


def test_disagreeing_rows_compares_numbers_within_tolerance_and_labels_exactly():
    a = protocol.Output("vector", None, [np.array([1.0, 2.0, np.nan, 4.0])])
    b = protocol.Output("vector", None, [np.array([1.0 + 1e-9, 2.1, np.nan, 4.0])])
    assert traffic.disagreeing_rows(a, b, 1e-6) == 1
    assert traffic.disagreeing_rows(a, b, 0.1) == 0
    labels = protocol.Output("vector", None, [["setosa", "virginica"]])
    assert traffic.disagreeing_rows(labels, protocol.Output("vector", None, [["setosa", "versicolor"]]), 1) == 1
    table = protocol.Output("table", ["p"], [np.array([0.5, 0.5])])
    assert traffic.disagreeing_rows(table, protocol.Output("table", ["q"], [np.array([0.5, 0.5])]), 1) == 2


def test_http_sink_posts_batches_of_kserve_cloudevents(monkeypatch):
    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers["Content-Type"], json.loads(body)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(capture, "FLUSH_SECONDS", 0.2)
    metrics = Metrics()
    config = rollout.check_capture({"sample": 1, "url": f"http://127.0.0.1:{server.server_port}/",
                                    "redact": {"ssn": "drop", "email": "hash"}, "batch": 10}, "capture")
    captures = capture.Captures("/nonexistent", metrics)
    for i in range(3):
        captures.offer("m", config, "2.0", f"req-{i}", {"data": [{"x": i, "ssn": "123", "email": "a@b"}]}, [i * 2])
    deadline = time.monotonic() + 5
    while sum(len(events) for _, events in got) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.shutdown()
    events = [e for _, events in got for e in events]
    assert {ct for ct, _ in got} == {"application/cloudevents-batch+json"}
    assert [(e["type"].rsplit(".", 1)[1], e["id"]) for e in events] == \
        [(kind, f"req-{i}") for i in range(3) for kind in ("request", "response")]
    first = events[0]
    assert (first["specversion"], first["inferenceservicename"], first["modelversion"]) == ("1.0", "m", "2.0")
    assert first["data"]["inputs"] == [{"x": 0, "email": capture.hashlib.sha256(b"a@b").hexdigest()[:16]}]
    assert events[1]["data"]["predictions"] == [0]
    assert metrics.captured.labels("m", "sent")._value.get() == 3


def test_pinning_a_version_that_failed_to_load_is_a_422_naming_r_s_error():
    infos = {"m": protocol.ModelInfo("m", "1.0", ok=True),
             "m@2": protocol.ModelInfo("m@2", "2.0", ok=False, error="there is no package called 'ranger'")}
    plan = rollout.Plan(1, canary=rollout.Route(2, "m@2", percent=0.0), loaded={1: "m", 2: "m@2"})
    t = traffic.Traffic(_Registry(plan, infos), None, None)
    with pytest.raises(traffic.InvalidInput) as err:
        t.choose("m", "x", "2")
    assert err.value.status == 422 and "no package called 'ranger'" in err.value.message
    with pytest.raises(traffic.NotFound):
        t.choose("m", "x", "9.9")


class _BusyPool:
    def __init__(self, idle):
        self.metrics, self.idle = Metrics(), idle

    def has_idle_worker(self):
        return self.idle


def test_shadow_copies_are_dropped_and_counted_when_no_worker_is_idle_or_the_queue_is_full(monkeypatch):
    route = rollout.Route(2, "m@2")
    job = type("Job", (), {"output": None})()
    busy = _BusyPool(idle=False)
    shadows = traffic.Shadows(None, busy)
    shadows.offer("m", route, None, job, "r1")
    assert busy.metrics.shadow_dropped.labels("m", "busy")._value.get() == 1
    idle = _BusyPool(idle=True)
    shadows = traffic.Shadows(None, idle)
    monkeypatch.setattr(shadows, "_thread", "not started: nothing takes from the queue")
    for i in range(traffic.SHADOW_QUEUE + 3):
        shadows.offer("m", route, None, job, f"r{i}")
    assert idle.metrics.shadow_dropped.labels("m", "queue_full")._value.get() == 3
