"""Where a 1-row request's time goes: each stage of the hot path timed alone, then end to end.

    .venv/bin/python bench/hotpath.py [--n 2000]

Stages (medians over --n calls, microseconds): JSON parse (orjson), validation and encoding
(schema.Schema), the thread hop of a job through the pool's queue (an HTTP thread puts it, a
slot thread takes and finishes it), the gateway<->worker round trip of the messages over a Unix
socket (protocol, with an echo thread standing in for the worker), the R call itself in an
embedded R (rsession: data.frame from buffers + predict + output), rendering and JSON
serialisation; the whole gateway app in-process on its fast path and on Flask's (bearer auth,
a fake pool); then the same request over HTTP against a real `rbridge serve` (keep-alive,
concurrency 1) on each front, and the difference: what the HTTP server, auth and the hand-offs
add. Models: an lm with a factor, trained here.
"""

from __future__ import annotations

import argparse
import http.client
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path

import orjson
import werkzeug.test

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from rbridge.pool import protocol  # noqa: E402
from rbridge.pool.jobs import Job, JobQueue  # noqa: E402
from rbridge.gateway.views_predict import render  # noqa: E402
from rbridge.schema import Schema  # noqa: E402

BODY = orjson.dumps({"data": [{"wt": 2.5, "hp": 110, "cyl": "6"}]})


def median_us(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def train(models: Path) -> None:
    subprocess.run(["Rscript", "-e", f'd <- mtcars; d$cyl <- factor(d$cyl); '
                    f'saveRDS(lm(mpg ~ wt + hp + cyl, d), "{models}/cars.rds")'], check=True)


def stages(models: Path, n: int) -> dict:
    from rbridge.worker.rsession import RSession, set_thread_env
    set_thread_env()
    session = RSession()
    spec = protocol.ModelSpec("cars", str(models / "cars.rds"), None, "v", "0" * 64, {}, None)
    info = session.load(spec)
    schema = Schema(info.schema)
    body = orjson.loads(BODY)
    columns, nrows = schema.encode(body, 1000)
    part = protocol.Part("id", nrows, columns)
    out, _ = session.score("cars", [part])

    a, b = socket.socketpair()

    def echo():
        while True:
            try:
                msg = protocol.recv(b)
            except EOFError:
                return
            protocol.send(b, protocol.Scored(msg.batch_id, out))
    threading.Thread(target=echo, daemon=True).start()

    def round_trip():
        protocol.send(a, protocol.Score(1, "cars", [part]))
        protocol.recv(a)

    queue = JobQueue(16)

    def slot():
        while True:
            job = queue.take(60)
            if job is None:
                return
            job.finish(out[0], slot=0, version="v")
    threading.Thread(target=slot, daemon=True).start()

    def queue_hop():
        job = Job("cars", part, 5)
        queue.put(job)
        job.done.wait(5)

    result = {
        "parse JSON (orjson)": median_us(lambda: orjson.loads(BODY), n),
        "validate + encode columns": median_us(lambda: schema.encode(body, 1000), n),
        "queue hop: HTTP thread -> slot thread -> back": median_us(queue_hop, n),
        "socket round trip of Score/Scored": median_us(round_trip, n),
        "R: data.frame + predict + output": median_us(lambda: session.score("cars", [part]), n),
        "render + serialise response": median_us(
            lambda: orjson.dumps({"model": "cars", "version": "v", "predictions": render(out[0])},
                                 option=orjson.OPT_SERIALIZE_NUMPY), n),
    }
    a.close()
    queue.close()
    return result


def app_in_process(n: int) -> dict:
    """The gateway app alone (fake pool, bearer token), on the fast path and on Flask's."""
    from gateway_fakes import gateway_app
    out = {}
    for fast in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            app, _ = gateway_app(Path(tmp), fast_path=fast)
            client = app.test_client()
            token = client.post("/login", json={"username": "scorer", "password": "scorer-password-for-tests"}
                                ).json["access_token"]
            body = orjson.dumps({"data": [{"wt": 2.5, "cyl": "6", "note": None, "n": 3, "flag": True}]})
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            environ = werkzeug.test.EnvironBuilder("/models/cars/predict", method="POST", data=body,
                                                   headers=headers).get_environ()

            def call():
                env = dict(environ, **{"wsgi.input": io.BytesIO(body)})
                b"".join(app(env, lambda status, headers, exc_info=None: None))
            for _ in range(50):
                call()
            out[f"app in-process, {'fast path' if fast else 'Flask'} (fake pool)"] = median_us(call, n)
    return out


def http_median(models: Path, n: int, front: str) -> float:
    from serverproc import ADMIN, Server
    with tempfile.TemporaryDirectory() as work:
        with Server(models, Path(work), "--workers", "1", "--http-server", front) as s:
            conn = http.client.HTTPConnection("127.0.0.1", s.port)
            auth = "Basic " + b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
            headers = {"Content-Type": "application/json", "Authorization": auth}

            def call():
                conn.request("POST", "/models/cars/predict", BODY, headers)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
            for _ in range(50):
                call()
            return median_us(call, n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        train(models)
        totals = {front: http_median(models, args.n, front) for front in ("granian", "waitress")}
        apps = app_in_process(args.n)          # before R: embedding R changes this process's
        parts = stages(models, args.n)         # environment (LD_LIBRARY_PATH), which children inherit
    inside = sum(parts.values())
    w = 52
    print(f"{'stage':<{w}}{'median us':>12}")
    for name, us in parts.items():
        print(f"{name:<{w}}{us:>12.1f}")
    print(f"{'sum of the stages':<{w}}{inside:>12.1f}")
    for name, us in apps.items():
        print(f"{name:<{w}}{us:>12.1f}")
    for front, total in totals.items():
        print(f"{'HTTP end to end, ' + front + ' (keep-alive, Basic)':<{w}}{total:>12.1f}")
        print(f"{'  of which HTTP server, app, auth, hand-offs':<{w}}{total - inside:>12.1f}")


if __name__ == "__main__":
    main()
