#!/usr/bin/env python3
"""R Bridge's Python models against MLServer: the same joblib pipeline, each server with its own protocol.

    .venv/bin/python bench/mlserver.py             # 3 interleaved rounds of 10 s per server, c=32
    .venv/bin/python bench/mlserver.py --smoke     # one round of 1 s (the harness end to end)

The pipeline is the FAQ matcher (models/faq.joblib: TF-IDF + logistic regression, made by
scripts/train_python_models.py), one question per request, its class scores computed with
predict_proba by both:
  rbridge   `rbridge serve --workers 2`, POST /models/faq/predict {"data": [{"question": ...}]}
            with a bearer token from /login (auth on), answering the best 3 classes (top_k)
  mlserver  MLServer with mlserver-sklearn, parallel_workers 2, the Open Inference Protocol (V2)
            POST /v2/models/faq/infer with a BYTES input and the predict_proba output, no auth
MLServer runs from its own venv, bench/.venv-mlserver (made here when missing, gitignored), with
the scikit-learn version of this one, so that both unpickle and run the very same pipeline. Both
get one BLAS/OpenMP thread per process, as rbridge's workers set for themselves. Before the load,
each one's answer to the same question is checked against the pipeline's own predict_proba here.
Load: wrk (bench/wrk_post.lua), the servers taking turns (A, B, A, B, ...); medians of
requests/s, p50 and p99, the ratio rbridge / mlserver, and the load average of the machine
before and after (other work on it moves both numbers). Goal: rbridge >= 1.5x MLServer's
requests/s at c=32. Results: a table on stdout and JSON in --out (default bench/results/).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import run as harness  # noqa: E402   (bench/run.py: processes, wrk, rbridge's start and auth)

VENV = BENCH / ".venv-mlserver"
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22")   # uvloop 0.22 breaks 1.7.1's workers
QUESTION = "how do I install rbridge on my machine"
GOAL = 1.5
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sklearn_version() -> str:
    import sklearn
    return sklearn.__version__


def ensure_venv() -> Path:
    """bench/.venv-mlserver with MLServer and this venv's scikit-learn version; its python."""
    python = VENV / "bin" / "python"
    want = sklearn_version()
    if not python.exists():
        harness.log(f"creating {VENV} (MLServer, mlserver-sklearn, scikit-learn {want})")
        base = shutil.which("python3") or sys.executable
        harness.run_checked([base, "-m", "venv", str(VENV)], "python3 -m venv", timeout=300)
    have = subprocess.run([str(python), "-c", "import sklearn, mlserver_sklearn; print(sklearn.__version__)"],
                          capture_output=True, text=True).stdout.strip()
    if have != want:
        harness.log(f"installing MLServer and scikit-learn {want} into {VENV}")
        harness.run_checked([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                             *MLSERVER, f"scikit-learn=={want}"], "pip install mlserver", timeout=1200)
    return python


def start_mlserver(python: Path, model: Path, tmp: Path, workers: int) -> harness.Server:
    root = tmp / "mlserver"
    (root / "faq").mkdir(parents=True)
    shutil.copy(model, root / "faq" / "model.joblib")
    (root / "faq" / "model-settings.json").write_text(json.dumps({
        "name": "faq", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    port = harness.free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": harness.free_port(),
        "metrics_port": harness.free_port(), "parallel_workers": workers, "debug": False}))
    lg = tmp / "mlserver.log"
    s = harness.Server("mlserver", f"http://127.0.0.1:{port}/v2/models/faq/infer",
                       f"http://127.0.0.1:{port}/v2/models/faq/ready", logs=[lg])
    s.started = time.monotonic()
    s.procs.append(harness.CHILDREN.start("mlserver", [str(python.parent / "mlserver"), "start", str(root)], lg,
                                          env=harness.clean_env(**ONE_THREAD, PYTHONUNBUFFERED="1"), cwd=root))
    return s


def start_rbridge(model: Path, tmp: Path, workers: int) -> harness.Server:
    models = tmp / "rbridge-models"
    models.mkdir()
    shutil.copy(model, models / "faq.joblib")
    shutil.copy(model.with_suffix(".json"), models / "faq.json")
    harness.MODEL_NAMES.setdefault("faq", "faq")     # run.py names its models by scenario; this one is "faq"
    return harness.start_rbridge(models, "faq", tmp, workers)


def bodies(tmp: Path) -> dict[str, Path]:
    rb, v2 = tmp / "rbridge.json", tmp / "mlserver.json"
    rb.write_text(json.dumps({"data": [{"question": QUESTION}]}))
    v2.write_text(json.dumps({"inputs": [{"name": "question", "shape": [1], "datatype": "BYTES",
                                          "data": [QUESTION], "parameters": {"content_type": "str"}}],
                              "outputs": [{"name": "predict_proba"}]}))
    return {"rbridge": rb, "mlserver": v2}


def check_answers(servers: dict, auth: dict, body: dict, model: Path) -> dict:
    """Each server's answer to QUESTION equals the pipeline's own predict_proba, here."""
    import joblib
    pipeline = joblib.load(model)
    want = pipeline.predict_proba([QUESTION])[0]
    classes = [str(c) for c in pipeline.classes_]
    out = {}
    for name, s in servers.items():
        headers = {"Content-Type": "application/json", **({"Authorization": auth[name]} if auth[name] else {})}
        code, raw = harness.http("POST", s.url, body[name].read_bytes(), headers, timeout=30)
        if code != 200:
            raise harness.BenchError(f"{name} answered {code}: {raw[:300]!r}")
        doc = json.loads(raw)
        if name == "rbridge":
            got = {r["label"]: r["score"] for r in doc["predictions"][0]}
        else:
            (output,) = doc["outputs"]
            got = dict(zip(classes, output["data"]))
        worst = max(abs(score - want[classes.index(label)]) for label, score in got.items())
        if worst > 1e-12:
            raise harness.BenchError(f"{name}'s scores differ from predict_proba by {worst:g}")
        out[name] = {"classes_checked": len(got), "max_abs_diff": worst}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="one round of 1 s per server")
    ap.add_argument("--duration", type=float, help="seconds per wrk run (default 10; smoke 1)")
    ap.add_argument("--reps", type=int, help="interleaved rounds (default 3; smoke 1)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="rbridge --workers = MLServer parallel_workers")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "faq.joblib")
    ap.add_argument("--out", type=Path, help="results JSON (default bench/results/mlserver-<time>.json)")
    args = ap.parse_args(argv)
    duration = args.duration or (1.0 if args.smoke else 10.0)
    reps = args.reps or (1 if args.smoke else 3)
    if not shutil.which("wrk"):
        print("error: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, harness._on_signal)
    atexit.register(harness.CHILDREN.stop_all)

    python = ensure_venv()
    tmp = Path(tempfile.mkdtemp(prefix="rbridge-mlserver-"))
    load_before = os.getloadavg()
    res = {"started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "smoke": args.smoke,
           "config": {"duration_s": duration, "reps": reps, "concurrency": args.concurrency,
                      "workers": args.workers, "model": str(args.model.relative_to(REPO))
                      if args.model.is_relative_to(REPO) else str(args.model),
                      "scikit_learn": sklearn_version(), "question": QUESTION},
           "machine": harness.machine_info(), "ok": False}
    try:
        servers = {"rbridge": start_rbridge(args.model, tmp, args.workers),
                   "mlserver": start_mlserver(python, args.model, tmp, args.workers)}
        harness.wait_ready(list(servers.values()), timeout=240)
        auth = {"rbridge": harness.rbridge_auth(servers["rbridge"], "bearer"), "mlserver": ""}
        body = bodies(tmp)
        res["correctness"] = check_answers(servers, auth, body, args.model)
        sc = harness.Scenario(f"faq 1 question c{args.concurrency} keepalive", "faq", 1, args.concurrency, True,
                              duration)
        for name, s in servers.items():       # warm both up (connections, first calls), unmeasured
            harness.run_wrk(s.url, body[name], auth[name], harness.Scenario("warm-up", "faq", 1, 4, True, 1.0))
        runs = {name: [] for name in servers}
        for rep in range(reps):
            for name, s in servers.items():
                r = harness.run_wrk(s.url, body[name], auth[name], sc)
                if r["error_count"]:
                    raise harness.BenchError(f"{name}: {r['errors']} errors under load")
                runs[name].append(r)
                harness.log(f"round {rep + 1}/{reps} {name}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                            f"p99 {r['p99_ms']:.2f} ms")
        med = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
               for name, rs in runs.items()}
        ratio = med["rbridge"]["rps"] / med["mlserver"]["rps"]
        res.update(runs=runs, median=med, ratio_rps=ratio, goal=GOAL, goal_met=ratio >= GOAL,
                   load_average={"before": load_before, "after": os.getloadavg()}, ok=True)
    except harness.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        res["error"] = str(exc)
    finally:
        harness.CHILDREN.stop_all()
    out = args.out or BENCH / "results" / f"mlserver-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    if res["ok"]:
        print_table(res)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}", file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)
    return 0 if res["ok"] else 1


def print_table(res: dict) -> None:
    c = res["config"]
    print(f"\nfaq pipeline, 1 question per request, c={c['concurrency']}, {c['reps']} x {c['duration_s']:g} s, "
          f"{c['workers']} workers each, scikit-learn {c['scikit_learn']}")
    print(f"{'server':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, m in res["median"].items():
        print(f"{name:<10} {m['rps']:>9.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}")
    la = res["load_average"]
    print(f"rbridge / mlserver requests/s: {res['ratio_rps']:.2f}x (goal {res['goal']}x: "
          f"{'met' if res['goal_met'] else 'missed'}); load average before {la['before'][0]:.2f}, "
          f"after {la['after'][0]:.2f} (1 min)")


if __name__ == "__main__":
    sys.exit(main())
