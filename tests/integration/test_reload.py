"""Hot reload with real R: swaps under load with zero failed requests, rejects broken files."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import requests

from serverproc import ADMIN, Server, copy_models, rscript

pytestmark = [pytest.mark.r, pytest.mark.slow]
ROW = {"wt": 2.5, "hp": 110, "cyl": "6"}


def atomic_copy(src, dst):
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.copy(src, tmp)
    os.replace(tmp, dst)


def wait_version(server, name, version, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = {m["name"]: m for m in server.get("/models").json()["models"]}
        if name in models and models[name]["version"] == version and models[name]["state"] == "loaded":
            return models[name]
        time.sleep(0.2)
    raise AssertionError(f"{name} not at version {version}: {models.get(name)}")


@pytest.fixture(scope="module")
def cars_v2(tmp_path_factory):
    d = tmp_path_factory.mktemp("v2")
    rscript(f'd <- mtcars; d$cyl <- factor(d$cyl); saveRDS(lm(mpg ~ wt + cyl, d), "{d}/cars.rds")')
    expected = float(rscript(f'm <- readRDS("{d}/cars.rds"); cat(sprintf("%.17g", predict(m, '
                             'data.frame(wt = 2.5, hp = 110, cyl = factor("6", levels = c("4", "6", "8"))))))'))
    return d / "cars.rds", expected


def test_swap_under_load_fails_no_request(small_models, tmp_path, cars_v2):
    models = copy_models(small_models, tmp_path / "m", ["cars", "iris"])
    with Server(models, tmp_path, "--workers", "2", "--reload-interval", "0.3") as s:
        old_version = s.get("/models/cars").json()["version"]
        statuses, versions, stop = [], set(), threading.Event()

        def hammer():
            session = requests.Session()
            while not stop.is_set():
                r = session.post(s.url + "/models/cars/predict", json={"data": [ROW]}, auth=ADMIN, timeout=30)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.add(r.headers["X-Model-Version"])
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        atomic_copy(cars_v2[0], models / "cars.rds")
        new = wait_version(s, "cars", None or _sha12(models / "cars.rds"))
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert statuses and set(statuses) == {200}, {x: statuses.count(x) for x in set(statuses)}
        assert old_version in versions and new["version"] in versions
        r = s.predict("cars", [ROW])
        assert r.headers["X-Model-Version"] == new["version"]
        assert r.json()["predictions"] == [cars_v2[1]]
        assert requests.get(s.url + "/readyz").status_code == 200


def test_new_removed_and_broken_models(small_models, tmp_path):
    models = copy_models(small_models, tmp_path / "m", ["cars"])
    with Server(models, tmp_path, "--workers", "1", "--reload-interval", "0") as s:
        version = s.get("/models/cars").json()["version"]
        shutil.copy(small_models / "iris.rds", models / "iris.rds")
        (models / "cars.rds").write_bytes(b"broken on purpose")
        summary = s.post("/admin/reload").json()
        assert summary["changed"] == ["iris"] and "cars" in summary["rejected"]
        listed = {m["name"]: m for m in s.get("/models").json()["models"]}
        assert listed["iris"]["state"] == "loaded"
        assert listed["cars"]["state"] == "loaded" and listed["cars"]["version"] == version
        assert listed["cars"]["reload_error"]
        assert s.predict("cars", [ROW]).status_code == 200          # the old version serves
        assert requests.get(s.url + "/readyz").status_code == 200   # a failed reload is not unready
        assert "rejected" in s.log_text()
        (models / "iris.rds").unlink()
        summary = s.post("/admin/reload").json()
        assert summary["removed"] == ["iris"]
        r = s.predict("iris", [{"Sepal.Length": 5.1, "Sepal.Width": 3.5, "Petal.Length": 1.4, "Petal.Width": 0.2}])
        assert r.status_code == 404


def test_reload_needs_an_admin(server):
    from serverproc import SCORER
    assert server.post("/admin/reload", auth=SCORER).status_code == 403


def _sha12(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_requests_queued_for_the_old_version_are_answered_across_a_swap(small_models, tmp_path):
    """One worker, a slow model and more callers than workers: at the swap, requests encoded for
    the old version are still queued. They are answered by the old worker before it retires
    (seen failing before: after the swap they waited STALE_AFTER for a worker of their version
    that never came, then got 503 model_changed)."""
    models = copy_models(small_models, tmp_path / "m", ["chaos"])
    with Server(models, tmp_path, "--workers", "1", "--reload-interval", "0") as s:
        statuses, versions, stop = [], [], threading.Event()

        def hammer():
            session = requests.Session()
            while not stop.is_set():
                r = session.post(s.url + "/models/chaos/predict", json={"data": [{"mode": "sleep", "x": 0.3}]},
                                 auth=ADMIN, timeout=60)
                statuses.append(r.status_code)
                versions.append(r.headers.get("X-Model-Version"))
        threads = [threading.Thread(target=hammer) for _ in range(5)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            (models / "chaos.json").write_text((models / "chaos.json").read_text().replace("chaos-1", "chaos-2"))
            assert s.post("/admin/reload").json()["changed"] == ["chaos"]
            time.sleep(3 + 1.5)      # past STALE_AFTER: a stranded request would have failed by now
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert statuses and set(statuses) == {200}, {x: statuses.count(x) for x in set(statuses)}
        assert {"chaos-1", "chaos-2"} <= set(versions)
