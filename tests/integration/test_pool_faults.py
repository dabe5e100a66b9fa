"""Faults of issue 12 on the pool and models side, each against a real server with real R:
batching of schemaless models, one model hogging the pool, slow warm-ups, the models folder
gone or empty, an unreadable model file, and --max-worker-memory below a fresh worker."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import requests

from serverproc import Server, copy_models, free_port, make_users, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]
IRIS_COLUMNS = ["Sepal.Length", "Sepal.Width", "Petal.Length", "Petal.Width"]
CARS_ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}


@pytest.fixture(scope="module")
def loose_models(tmp_path_factory):
    """nb: e1071 naiveBayes on iris, a model without a schema (columns: null), with R's own
    predictions for some rows."""
    d = tmp_path_factory.mktemp("loose")
    rscript(f'''
      suppressMessages(library(e1071))
      m <- naiveBayes(Species ~ ., iris); saveRDS(m, "{d}/nb.rds")
      rows <- seq(1, 150, by = 3)
      full <- as.character(predict(m, iris[rows, 1:4]))
      writeLines(jsonlite::toJSON(list(rows = rows, full = full)), "{d}/expected.json")
    ''')
    return d


def restarts(server) -> int:
    return sum(w["restarts"] for w in server.get("/status").json()["workers"])


def test_schemaless_batches_merge_only_identical_columns(loose_models, tmp_path):
    expected = json.loads((loose_models / "expected.json").read_text())
    iris = json.loads(rscript('cat(jsonlite::toJSON(iris[, 1:4], digits = NA))'))
    with Server(loose_models, tmp_path, "--workers", "1", "--max-batch-wait-ms", "30") as s:
        assert s.get("/models/nb").json()["schema"]["columns"] is None
        jobs = []
        for i, row in enumerate(expected["rows"]):
            full = iris[row - 1]
            jobs.append(("full", [full], expected["full"][i]))
            jobs.append(("extra", [dict(full, note="a")], expected["full"][i]))   # one more column
            jobs.append(("bool", [{k: bool(i % 2) for k in IRIS_COLUMNS}], None))
        with cf.ThreadPoolExecutor(12) as ex:
            replies = list(ex.map(lambda j: s.predict("nb", j[1]), jobs))
        wrong = [(kind, rows, want, r.status_code, r.text[:200]) for (kind, rows, want), r in zip(jobs, replies)
                 if want is not None and (r.status_code != 200 or r.json()["predictions"] != [want])]
        assert not wrong, f"{len(wrong)} of {2 * len(expected['rows'])} answers wrong: {wrong[:5]}"
        assert all(r.status_code in (200, 422) for (kind, _, _), r in zip(jobs, replies) if kind == "bool")
        assert restarts(s) == 0
        assert "Traceback" not in s.log_text()


# -- the models folder and its files ---------------------------------------------------------
# Tests run as root here, which reads any file whatever its mode: the server runs without the
# capabilities that bypass file permissions, so that a file of mode 000 is unreadable to it.
NO_FILE_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                    "--inh-caps", "-dac_override,-dac_read_search")


def models_json(server) -> dict:
    return {m["name"]: m for m in server.get("/models").json()["models"]}


def wait_for(check, timeout=60, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true after {timeout} s: {check.__doc__ or check}")


def readyz(server):
    """/readyz's status, and the reason behind it: /status (admin) has it, as the open /readyz
    names only its kind."""
    r = requests.get(server.url + "/readyz", timeout=5)
    return r.status_code, server.get("/status").json()["ready"]["reason"]


def test_an_unreadable_model_file_is_that_models_error(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "models", ["cars"])
    shutil.copy(models / "cars.rds", models / "locked.rds")
    os.chmod(models / "locked.rds", 0)
    with Server(models, tmp_path / "run", "--workers", "1", "--reload-interval", "0.3",
                wrap=NO_FILE_OVERRIDE, wait_ready=False) as s:
        wait_for(lambda: models_json(s)["cars"]["state"] == "loaded")
        locked = models_json(s)["locked"]
        assert locked["state"] == "failed" and "Permission denied" in locked["error"], locked
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        # at run time: another unreadable file and a good new model arrive together
        shutil.copy(models / "cars.rds", models / "later.rds")
        os.chmod(models / "later.rds", 0)
        shutil.copy(models / "cars.rds", models / "fresh.rds")
        wait_for(lambda: models_json(s).get("fresh", {}).get("state") == "loaded")
        assert models_json(s)["later"]["state"] == "failed"
        assert s.predict("fresh", [CARS_ROW]).status_code == 200
        # made readable (chmod changes neither size nor mtime): the next scan loads it
        os.chmod(models / "locked.rds", 0o644)
        wait_for(lambda: models_json(s)["locked"]["state"] == "loaded", timeout=30)
        assert s.predict("locked", [CARS_ROW]).status_code == 200
        assert "Traceback" not in s.log_text()


def serve_briefly(tmp_path, *args, timeout=30) -> subprocess.CompletedProcess:
    users = make_users(tmp_path / "users.json")
    cmd = [sys.executable, "-m", "rbridge", "serve", "--users", str(users), "--port", str(free_port()),
           "--log-format", "json", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"rbridge serve {' '.join(args)} still running after {timeout} s") from None


def test_a_models_folder_that_does_not_exist_is_an_error_at_boot(tmp_path):
    out = serve_briefly(tmp_path, "--models", str(tmp_path / "modles"))
    assert out.returncode != 0
    assert "modles" in out.stderr and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_a_models_folder_that_disappears_turns_readiness_off(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "models", ["cars"])
    with Server(models, tmp_path / "run", "--workers", "1", "--reload-interval", "0.3") as s:
        models.rename(tmp_path / "away")
        status, text = wait_for(lambda: (lambda r: r[0] == 503 and r)(readyz(s)), timeout=20)
        assert "models folder" in text and str(models) in text
        for _ in range(5):     # it keeps answering, so that the replica can drain
            assert s.predict("cars", [CARS_ROW]).status_code == 200
            time.sleep(0.3)
        (tmp_path / "away").rename(models)
        wait_for(lambda: readyz(s)[0] == 200, timeout=20)
        assert s.predict("cars", [CARS_ROW]).status_code == 200


def test_an_empty_models_folder_is_ready_only_with_allow_empty(small_models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with Server(empty, tmp_path / "a", "--workers", "1", wait_ready=False) as s:
        wait_for(lambda: s.get("/status").json()["effective_size"] == 1)
        status, text = readyz(s)
        assert status == 503 and "no models" in text and "--allow-empty" in text
    with Server(empty, tmp_path / "b", "--workers", "1", "--allow-empty", "--reload-interval", "0.3") as s:
        assert readyz(s)[0] == 200
        copy_models(small_models, empty, ["cars"])        # filled by publishing
        wait_for(lambda: s.predict("cars", [CARS_ROW]).status_code == 200)


def test_max_worker_memory_below_a_fresh_worker_is_refused(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "models", ["cars"])
    with Server(models, tmp_path / "run", "--workers", "1", "--max-worker-memory", "20M",
                wait_ready=False) as s:
        status, text = wait_for(lambda: (lambda r: "max-worker-memory" in r[1] and r)(readyz(s)), timeout=60)
        assert status == 503 and "20 MiB" in text and "MiB" in text.split("20 MiB", 1)[1], text
        r = s.predict("cars", [CARS_ROW])
        assert r.status_code == 503 and "max-worker-memory" in r.json()["error"]["message"]
        assert "max-worker-memory" in s.log_text()


# -- one slow model must not take the pool ---------------------------------------------------
# Busy for 10 s in R code (R checks its time limit there; Sys.sleep in an embedded R does not).
SLOW_WARM_R = ('score <- function(model, newdata) {\n'
               '  t0 <- Sys.time(); while (Sys.time() - t0 < 10) NULL\n  newdata$x\n}\n')
SLOW_WARM_JSON = '{"schema": {"columns": [{"name": "x", "type": "numeric"}]}}'


def test_a_slow_model_holds_at_most_all_workers_but_one(small_models, tmp_path):
    """3 concurrent 10 s calls with --timeout 3 on 2 workers: cars keeps its worker throughout."""
    models = copy_models(small_models, tmp_path / "models", ["cars", "chaos"])
    with Server(models, tmp_path / "run", "--workers", "2", "--timeout", "3") as s:
        wait_for(lambda: [w["state"] for w in s.get("/status").json()["workers"]] == ["idle", "idle"])
        with cf.ThreadPoolExecutor(3) as ex:
            slow = [ex.submit(s.predict, "chaos", [{"mode": "sleep", "x": 10}]) for _ in range(3)]
            time.sleep(0.3)
            cars, t0 = [], time.monotonic()
            while time.monotonic() - t0 < 12:
                cars.append(s.predict("cars", [CARS_ROW]).status_code)
                time.sleep(0.1)
            assert all(f.result(60).status_code in (503, 504) for f in slow)
        assert cars.count(200) == len(cars), f"cars answered {cars.count(200)} of {len(cars)}: {set(cars)}"


def test_max_concurrency_lets_a_model_take_every_worker(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "models", ["cars", "chaos"])
    chaos = json.loads((models / "chaos.json").read_text())
    (models / "chaos.json").write_text(json.dumps(dict(chaos, max_concurrency=2)))
    with Server(models, tmp_path / "run", "--workers", "2", "--timeout", "20") as s:
        wait_for(lambda: [w["state"] for w in s.get("/status").json()["workers"]] == ["idle", "idle"])
        with cf.ThreadPoolExecutor(2) as ex:
            t0 = time.monotonic()
            both = [ex.submit(s.predict, "chaos", [{"mode": "sleep", "x": 2}]) for _ in range(2)]
            assert all(f.result(30).status_code == 200 for f in both)
            assert time.monotonic() - t0 < 3.8     # side by side, not one after the other


def test_a_warm_up_slower_than_its_limit_fails_that_model(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "models", ["cars"])
    (models / "slow.rds").write_bytes((models / "cars.rds").read_bytes())
    (models / "slow.R").write_text(SLOW_WARM_R)
    (models / "slow.json").write_text(SLOW_WARM_JSON)
    with Server(models, tmp_path / "run", "--workers", "2", "--warmup-timeout", "2",
                wait_ready=False) as s:
        wait_for(lambda: models_json(s)["cars"]["state"] == "loaded" and len(
            [w for w in s.get("/status").json()["workers"] if w["state"] == "idle"]) == 2)
        slow = models_json(s)["slow"]
        assert slow["state"] == "failed" and "longer than 2 s" in slow["error"], slow
        assert s.predict("cars", [CARS_ROW]).status_code == 200
        # a worker replaced later (SIGKILL) does not spend the warm-up again
        pid = s.get("/status").json()["workers"][0]["pid"]
        os.kill(pid, 9)
        wait_for(lambda: all(w["state"] == "idle" and w["pid"] != pid for w in s.get("/status").json()["workers"]))
        assert s.log_text().count("model slow failed to load") == 1   # the first worker only
