"""A 2-minute soak of mixed load with worker SIGKILLs, SIGSTOPs and hot reloads (issue 12).

Four clients score three models (cars: lm with a factor; iris: randomForest; nb: naiveBayes
without a schema, with two column sets) for 120 s, bounded at 20000 requests. Every 8 s a fault:
SIGKILL of a worker, SIGSTOP of a worker (left stopped: the pool's timeout or stats poll must
find it), or a hot reload (cars.json's version changes). Every request is counted. A request
may fail only if it was in flight on a killed or hung worker: while a worker is stopped, the
fault thread reads /status and collects the request ids it holds (batching is off, so a worker
holds one request and /status names it). Every answer that succeeds must equal R's.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import threading
import time

import pytest
import requests

from serverproc import ADMIN, Server, copy_models, rscript

# History: on this shared 2-core machine (load average 10-12) it failed 4 runs of 6 (December 2026):
# cars requests answered 503 model_changed after a hot reload, while the one worker of the new version
# was SIGSTOPped and workers of the old version passed its jobs over. Jobs now carry their schema's
# encoding key (protocol.encoding_key), which a reload that keeps the columns does not change, so any
# of the model's workers takes them. Quiet, 4 clients make ~470 requests/s: the request bound is set
# so that the 120 s, not the bound, ends the soak, and every fault comes at least 3 times.
pytestmark = [pytest.mark.r, pytest.mark.slow]
SOAK_SECONDS, MAX_REQUESTS, CLIENTS, FAULT_EVERY = 120, 150000, 4, 8.0


@pytest.fixture(scope="module")
def soak_models(small_models, tmp_path_factory):
    d = copy_models(small_models, tmp_path_factory.mktemp("soak"), ["cars", "iris"])
    out = rscript(f'''
      suppressMessages(library(e1071)); suppressMessages(library(randomForest))
      saveRDS(naiveBayes(Species ~ ., iris), "{d}/nb.rds")
      d <- mtcars; d$cyl <- factor(d$cyl)
      cars <- predict(readRDS("{d}/cars.rds"), data.frame(wt = 2.5, hp = 110, cyl = factor("6", c("4", "6", "8"))))
      iris_rf <- as.character(predict(readRDS("{d}/iris.rds"), iris[c(1, 51, 101), ]))
      nb <- as.character(predict(readRDS("{d}/nb.rds"), iris[c(1, 51, 101), 1:4]))
      cat(jsonlite::toJSON(list(cars = cars, iris = iris_rf, nb = nb, rows = iris[c(1, 51, 101), 1:4]),
                           digits = NA, auto_unbox = TRUE))
    ''')
    return d, json.loads(out)


def requests_to_make(expected):
    rows = expected["rows"]
    cars = {"wt": 2.5, "hp": 110, "cyl": "6"}
    return [("cars", [cars], [expected["cars"]]),
            ("iris", rows, expected["iris"]),
            ("nb", rows, expected["nb"]),
            ("nb", [dict(r, note="x") for r in rows], expected["nb"])]   # another column set


def same(got: list, want: list) -> bool:
    if all(isinstance(w, str) for w in want):
        return got == want
    return got == pytest.approx(want, rel=1e-12)


class Faults:
    """Injects faults and remembers which requests were in flight on a killed or hung worker."""

    def __init__(self, server: Server, models, stop: threading.Event):
        self.server, self.models, self.stop = server, models, stop
        self.allowed: set[str] = set()
        self.done = collections.Counter()
        self.errors: list[str] = []
        self.log: list[tuple] = []            # (seconds, fault, pid, request id held)
        self.t0 = time.monotonic()

    def status(self) -> list:
        return requests.get(self.server.url + "/status", auth=ADMIN, timeout=10).json()["workers"]

    def run(self) -> None:
        kinds = ["kill", "stop", "reload"]
        n = 0
        while not self.stop.wait(FAULT_EVERY):
            kind = kinds[n % 3]
            n += 1
            try:
                if kind == "reload":
                    self.reload(n)
                else:
                    self.signal_worker(kind)
                self.done[kind] += 1
            except Exception as exc:   # counted: the test fails on it
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    def reload(self, n: int) -> None:
        tmp = self.models / ".cars.json.tmp"
        tmp.write_text(json.dumps({"version": f"soak-{n}"}))
        os.rename(tmp, self.models / "cars.json")
        self.log.append((round(time.monotonic() - self.t0, 2), "reload", None, f"soak-{n}"))

    def signal_worker(self, kind: str) -> None:
        workers = [w for w in self.status() if w["pid"]]
        if not workers:                           # every worker is being replaced: nothing to hit
            self.done["skipped"] += 1
            return
        busy = [w for w in workers if w["state"] == "busy"]
        pid = random.choice(busy or workers)["pid"]
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + (0.3 if kind == "kill" else 30)
        while time.monotonic() < deadline:       # what the stopped worker holds (or is given)
            held = [w for w in self.status() if w["pid"] == pid]
            if not held:
                break                             # the pool replaced it
            rid = held[0]["current_request"]
            if rid and rid not in self.allowed:
                self.allowed.add(rid)
                self.log.append((round(time.monotonic() - self.t0, 2), kind, pid, rid))
            time.sleep(0.05)
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)


def test_soak_fails_only_requests_on_killed_or_hung_workers(soak_models, tmp_path):
    models_src, expected = soak_models
    models = copy_models(models_src, tmp_path / "models", ["cars", "iris", "nb"])
    # 3 workers: with 2 and several models each model may hold one (issue 12 item 3), so a hung
    # worker makes its model's other requests wait for its timeout, as a slow model's do.
    with Server(models, tmp_path / "run", "--workers", "3", "--workers-per-core", "2",
                "--timeout", "4", "--reload-interval", "0.5",
                "--max-batch-rows", "1", "--queue-size", "64") as s:
        stop = threading.Event()
        faults = Faults(s, models, stop)
        results, lock = [], threading.Lock()
        plan = requests_to_make(expected)
        t_start = time.monotonic()
        t_end = t_start + SOAK_SECONDS

        def client(k: int) -> None:
            session = requests.Session()
            session.auth = ADMIN
            i = 0
            while time.monotonic() < t_end and len(results) < MAX_REQUESTS:
                model, rows, want = plan[(i + k) % len(plan)]
                rid = f"soak-{k}-{i}"
                i += 1
                t0 = time.monotonic()
                try:
                    r = session.post(f"{s.url}/models/{model}/predict", json={"data": rows},
                                     headers={"X-Request-ID": rid}, timeout=30)
                    status, body = r.status_code, r.json()
                except (requests.RequestException, ValueError) as exc:
                    status, body = 0, {"error": {"message": str(exc)}}
                with lock:
                    results.append((rid, model, status, body, want, t0, time.monotonic()))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        injector = threading.Thread(target=faults.run)
        for t in threads + [injector]:
            t.start()
        for t in threads:
            t.join(SOAK_SECONDS + 60)
        stop.set()
        injector.join(60)

        failed = [(rid, m, st, b) for rid, m, st, b, _, _, _ in results if st != 200]
        wrong = [(rid, m, b["predictions"], want) for rid, m, st, b, want, _, _ in results
                 if st == 200 and not same(b["predictions"], want)]
        unexplained = [(rid, m, st, b, round(t0 - t_start, 2), round(t1 - t_start, 2))
                       for rid, m, st, b, _, t0, t1 in results if st != 200 and rid not in faults.allowed]
        by_status = collections.Counter(st for _, _, st, _ in failed)
        print(f"\nsoak: {len(results)} requests in {SOAK_SECONDS} s; faults {dict(faults.done)}; "
              f"failed {len(failed)} {dict(by_status)}, of which on a killed/hung worker "
              f"{len(failed) - len(unexplained)}; wrong answers {len(wrong)}; "
              f"in flight on faulted workers {len(faults.allowed)}")
        for rid, m, st, b, t0, t1 in unexplained:   # what CI shows when it fails: each with the faults
            print(f"  unexplained {rid} {m} {st} {b['error'].get('code')} sent {t0} s, answered {t1} s")
        print(f"  faults (s, kind, pid, request held or version): {faults.log}")
        assert not faults.errors, faults.errors
        assert len(results) >= 300, "the soak did not get load through"
        assert min(faults.done[k] for k in ("kill", "stop", "reload")) >= 3, faults.done
        assert not wrong, wrong[:5]
        assert not unexplained, f"{len(unexplained)} failed requests not on a faulted worker (printed above)"
        last = f"soak-{3 * faults.done['reload']}"
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:       # the last reload serves, and the pool has healed
            cars = s.get("/models/cars").json()["version"]
            if cars == last and [w["state"] for w in faults.status()] == ["idle"] * 3:
                break
            time.sleep(0.2)
        assert cars == last and [w["state"] for w in faults.status()] == ["idle"] * 3
        assert "Traceback" not in s.log_text()
