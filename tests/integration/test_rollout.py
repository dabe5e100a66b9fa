"""Rollouts with real R: canary split, stickiness, pinned versions, promote/abort under load,
shadow disagreement, capture to a file (read back in R) and to a slow sink.

One server (two workers) on a models folder with `cars` (v1 trained on wt+hp+cyl; v2, published
here, on wt+cyl with capture on), `plain` (the same lm as cars v1, no capture) and `sink` (the
same, capturing every request to an HTTP sink that never answers). The tests run in order and
share the server: each step's state is the next one's start.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import statistics
import subprocess
import threading
import time

import pytest
import requests

from serverproc import ADMIN, PUBLISHER, ROOT, SCORER, Server, predict_cars, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]
ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}
INTERVAL = 0.5


@pytest.fixture(scope="module")
def silent_sink():
    """A TCP server that accepts connections and never answers (a sink that is slow or hung)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held, stop = [], threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/events"
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


@pytest.fixture(scope="module")
def setup(small_models, tmp_path_factory, silent_sink):
    models = tmp_path_factory.mktemp("rollout-models")
    up = tmp_path_factory.mktemp("rollout-uploads")
    for name in ("cars", "plain", "sink"):
        (models / f"{name}.rds").write_bytes((small_models / "cars.rds").read_bytes())
    (models / "sink.json").write_text(json.dumps({"capture": {"sample": 1, "url": silent_sink, "batch": 5}}))
    rscript(f'd <- mtcars; d$cyl <- factor(d$cyl); saveRDS(lm(mpg ~ wt + cyl, d), "{up}/cars2.rds")')
    (up / "cars2.json").write_text(json.dumps({"version": "2.0", "capture": {
        "sample": 1, "redact": {"hp": "drop", "cyl": "hash"}}}))
    with Server(models, tmp_path_factory.mktemp("rollout-server"), "--workers", "2",
                "--reload-interval", str(INTERVAL)) as server:
        yield {"server": server, "models": models, "up": up,
               "v1": predict_cars(small_models / "cars.rds"), "v2": predict_cars(up / "cars2.rds")}


def score(server, path="/models/cars/predict", auth=SCORER, headers=None, session=None, rows=None):
    r = (session or server.session).post(server.url + path, json={"data": rows or [ROW]}, auth=auth,
                                         headers=headers or {}, timeout=60)
    return r


def rollout(server, body, action=""):
    r = server.session.post(f"{server.url}/models/cars/rollout{action}", json=body, auth=PUBLISHER, timeout=180)
    assert r.status_code == 200, r.text
    return r.json()


def metric(server, name: str, **labels) -> float:
    text = server.get("/metrics", auth=ADMIN).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_pinned_versions_and_canary_split(setup):
    s, v1, v2 = setup["server"], setup["v1"], setup["v2"]
    label1 = score(s).headers["X-Model-Version"]
    with open(setup["up"] / "cars2.rds", "rb") as rds, open(setup["up"] / "cars2.json", "rb") as cfg:
        r = s.session.put(f"{s.url}/models/cars", files={"model": rds, "config": cfg}, auth=PUBLISHER, timeout=180)
    assert r.status_code == 201 and r.json()["version"] == 2, r.text
    assert s.post("/models/cars/versions/1/activate", auth=PUBLISHER).status_code == 200   # v1 serves, v2 kept

    r = score(s, "/models/cars/versions/2/predict")
    assert r.status_code == 409 and r.json()["error"]["code"] == "version_not_loaded", r.text
    r = score(s, "/models/cars/versions/7/predict")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_version", r.text
    assert score(s, "/models/cars@2/predict").status_code == 404          # internal names are not public

    plan = rollout(s, {"canary": {"version": 2, "percent": 10}})
    assert (plan["active"], plan["canary"]["version"], plan["loaded"]) == (1, 2, [1, 2]), plan
    r = score(s, "/models/cars/versions/2/predict")
    assert (r.status_code, r.headers["X-Model-Version"], r.json()["predictions"][0]) == (200, "2.0", v2), r.text
    for pin, expected in (("1", v1), (label1, v1), ("2", v2), ("2.0", v2)):
        r = score(s, headers={"X-Model-Version": pin})
        assert r.status_code == 200 and r.json()["predictions"][0] == expected, (pin, r.text)

    answers, lock = [], threading.Lock()

    def caller(n):
        session = requests.Session()
        for _ in range(n):
            r = score(s, session=session)
            with lock:
                answers.append((r.status_code, r.headers.get("X-Model-Version"), r.json()["predictions"][0]))
    threads = [threading.Thread(target=caller, args=(500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a[0] == 200 for a in answers)
    assert all(p == (v2 if v == "2.0" else v1) for _, v, p in answers)      # the header says who answered
    canary = sum(1 for a in answers if a[1] == "2.0")
    sd = math.sqrt(2000 * 0.1 * 0.9)
    print(f"canary 10%: {canary} of 2000 answered by version 2 (expected 200 +- {4 * sd:.0f})")
    assert abs(canary - 200) <= 4 * sd
    assert metric(s, "rbridge_version_requests_total", model="cars", version="2.0", status="200") == canary + 3
    assert metric(s, "rbridge_prediction_values_total", model="cars", version="2.0") == canary + 3
    assert metric(s, "rbridge_prediction_value_bucket", model="cars", version="2.0", le="+Inf") == canary + 3
    assert metric(s, "rbridge_prediction_value_bucket", model="cars", version="2.0", le="25.0") == canary + 3
    assert 'rbridge_version_request_seconds_bucket{le="0.05",model="cars",version="2.0"}' in s.get("/metrics").text
    board = s.get("/dashboard/data").json()["versions"]["cars"]
    assert board["2.0"]["total"] == canary + 3 and board["2.0"]["prediction_mean"] == pytest.approx(v2)


def test_sticky_canary_keeps_each_caller_on_one_version(setup):
    s = setup["server"]
    rollout(s, {"canary": {"version": 2, "percent": 50, "sticky": True}})
    seen = {}
    for user in (SCORER, PUBLISHER, ADMIN):
        seen[user[0]] = {score(s, auth=user).headers["X-Model-Version"] for _ in range(30)}
    assert all(len(v) == 1 for v in seen.values()), seen


def test_abort_and_promote_under_load_fail_no_request(setup):
    s, v1, v2 = setup["server"], setup["v1"], setup["v2"]
    rollout(s, {"canary": {"version": 2, "percent": 20}})
    statuses, stop = [], threading.Event()

    def hammer():
        session = requests.Session()
        while not stop.is_set():
            r = score(s, session=session)
            statuses.append((r.status_code, r.headers.get("X-Model-Version")))
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        plan = rollout(s, {}, "/abort")
        assert plan["canary"] is None
        time.sleep(4 * INTERVAL + 8)           # the watcher sees rollout.json and unloads version 2
        assert s.get("/status").json()["rollout_versions"] == []
        mark = len(statuses)
        time.sleep(0.5)
        assert {v for _, v in statuses[mark:]} == {statuses[mark][1]} != {"2.0"}
        rollout(s, {"canary": {"version": 2, "percent": 20}})
        time.sleep(1)
        plan = rollout(s, {}, "/promote")
        assert (plan["active"], plan["canary"]) == (2, None), plan
        mark = len(statuses)
        time.sleep(0.5)
        assert {v for _, v in statuses[mark:]} == {"2.0"}
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [x for x in statuses if x[0] != 200]
    print(f"{len(statuses)} requests across abort, canary and promote; {len(failed)} failed")
    assert statuses and not failed, failed[:5]
    assert score(s).json()["predictions"][0] == v2
    assert s.get("/models/cars/versions", auth=PUBLISHER).json()["versions"][1]["active"] is True


def test_capture_file_holds_what_was_answered_and_reads_into_r(setup, tmp_path):
    s, models = setup["server"], setup["models"]
    sent = {}
    for i in (1, 2):     # what clients/r/tests/testthat/captures/cars-sample.jsonl was copied from
        r = score(s, headers={"X-Request-ID": f"sample-{i}"}, rows=[{**ROW, "wt": 2.4 + i / 10},
                                                                      {**ROW, "wt": 3.4 + i / 10}])
        assert r.status_code == 200
    for i in range(12):
        row = {"wt": 2.0 + i / 10, "hp": 100 + i, "cyl": ["4", "6", "8"][i % 3]}
        r = score(s, headers={"X-Request-ID": f"cap-{i}"}, rows=[row, {**row, "wt": row["wt"] + 1}])
        assert r.status_code == 200, r.text
        sent[f"cap-{i}"] = ([row, {**row, "wt": row["wt"] + 1}], r.json()["predictions"], r.headers["X-Model-Version"])
    folder = models / ".captures" / "cars"
    records = {}
    deadline = time.monotonic() + 10
    while len(records) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = {r["request_id"]: r for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()
                   if (r := json.loads(line))["request_id"] in sent}
    assert set(records) == set(sent)
    for rid, (rows, predictions, version) in sent.items():
        rec = records[rid]
        assert (rec["model"], rec["version"], rec["predictions"]) == ("cars", version, predictions)
        assert [{k: v for k, v in r.items() if k != "cyl"} for r in rec["inputs"]] == \
            [{"wt": r["wt"]} for r in rows]                                   # hp dropped
        assert all(re.fullmatch(r"[0-9a-f]{16}", r["cyl"]) for r in rec["inputs"])   # cyl hashed
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"])
    logged = [json.loads(line) for line in s.log_text().splitlines() if '"request_id":"cap-0"' in line]
    assert [(x["model"], x["version"]) for x in logged] == [("cars", sent["cap-0"][2])]   # the access log line
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps([{"request_id": rid, "row": i + 1, "wt": rows[i]["wt"], "prediction": p[i],
                                     "version": v} for rid, (rows, p, v) in sent.items() for i in range(2)]))
    lib = tmp_path / "lib"
    lib.mkdir()
    install = subprocess.run(["R", "CMD", "INSTALL", "--no-test-load", "-l", str(lib), str(ROOT / "clients/r")],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {**os.environ, "R_LIBS": str(lib), "RB_CAPTURES": str(folder), "RB_CAPTURES_EXPECTED": str(expected)}
    run = subprocess.run(["Rscript", "-e", 'library(rbridge); testthat::test_file("clients/r/tests/testthat/'
                          'test-captures.R", package = "rbridge", load_package = "installed", '
                          'stop_on_failure = TRUE)'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "FAIL 0" in run.stdout and "SKIP 0" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]


def test_shadow_disagreement_is_counted(setup):
    s, v2 = setup["server"], setup["v2"]
    plan = rollout(s, {"shadow": {"version": 1}})
    assert plan["shadow"]["version"] == 1 and plan["loaded"] == [1, 2], plan
    label1 = plan and s.get("/models/cars/rollout", auth=PUBLISHER).json()["versions"]["1"]["version"]
    for _ in range(20):
        r = score(s)
        assert (r.status_code, r.json()["predictions"][0]) == (200, v2)    # the caller gets the active answer
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while metric(s, "rbridge_shadow_comparisons_total", model="cars", version=label1) < 20 - \
            metric(s, "rbridge_shadow_dropped_total", model="cars") and time.monotonic() < deadline:
        time.sleep(0.2)
    disagree = metric(s, "rbridge_shadow_comparisons_total", model="cars", version=label1, result="disagree")
    dropped = metric(s, "rbridge_shadow_dropped_total", model="cars")
    print(f"shadow: {disagree} disagreements, {dropped} dropped of 20")
    assert disagree >= 10 and disagree + dropped == 20
    assert metric(s, "rbridge_shadow_comparisons_total", model="cars", result="agree") == 0
    board = s.get("/dashboard/data").json()["versions"]["cars"]
    assert board[label1]["shadow"]["disagree"] == disagree


def test_a_hung_capture_sink_costs_the_caller_nothing(setup):
    s = setup["server"]
    session = requests.Session()

    def latency(model):
        t = time.perf_counter()
        r = score(s, f"/models/{model}/predict", session=session)
        assert r.status_code == 200
        return time.perf_counter() - t
    for _ in range(20):                                  # warm both up
        latency("plain"), latency("sink")
    pairs = [(latency("plain"), latency("sink")) for _ in range(150)]   # alternated: the same load for both
    plain, sink = statistics.median(p for p, _ in pairs), statistics.median(q for _, q in pairs)
    print(f"median latency: no capture {plain * 1000:.2f} ms, capture to a hung sink {sink * 1000:.2f} ms "
          f"(ratio {sink / plain:.2f})")
    assert sink < plain * 1.5 + 0.002
    deadline = time.monotonic() + 10
    while metric(s, "rbridge_capture_records_total", model="sink", result="failed") == 0 \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(s, "rbridge_capture_records_total", model="sink", result="failed") >= 5   # SINK_TIMEOUT each
    assert metric(s, "rbridge_capture_records_total", model="sink", result="sent") == 0


def test_another_replica_on_the_folder_serves_the_same_rollout(setup, tmp_path):
    """The rollout set through the API is kept in the shared folder: a replica started on it
    (or restarted) serves the same active version and loads the shadow version beside it."""
    s, v1, v2 = setup["server"], setup["v1"], setup["v2"]
    with Server(setup["models"], tmp_path / "b", "--workers", "1", "--reload-interval", str(INTERVAL)) as b:
        plan = b.get("/models/cars/rollout", auth=PUBLISHER).json()
        assert (plan["active"], plan["canary"], plan["shadow"]["version"], plan["source"]) == \
            (2, None, 1, "rollout API"), plan
        assert score(b).json()["predictions"][0] == v2
        assert score(b, headers={"X-Model-Version": "1"}).json()["predictions"][0] == v1
        assert b.get("/status").json()["rollout_versions"] == ["cars@1"]
        assert "holds the rollout version(s) cars@1" in b.log_text()
        rollout(s, {"shadow": None})                    # cleared on one replica, the other follows
        deadline = time.monotonic() + 4 * INTERVAL + 30
        while b.get("/models/cars/rollout", auth=PUBLISHER).json()["shadow"] is not None:
            assert time.monotonic() < deadline, "the other replica did not take up the change"
            time.sleep(0.2)
