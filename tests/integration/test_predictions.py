"""Correctness: the service's predictions equal R's own predict() for the same rows.

tests/fixtures/make_fixtures.R trains one small model per supported class (factor columns
included) and computes R's predictions for 120 rows in R at test time; the service must give
the same values (doubles compared exactly: both sides print the shortest exact representation)
for record and columnar bodies, with one and with several workers, and when merged into batches.
"""

from __future__ import annotations

import concurrent.futures as cf
import json

import pytest

from serverproc import Server

pytestmark = pytest.mark.r
CLASSES = ["lm", "glm_binomial", "rf_class", "rf_reg", "ranger_reg", "ranger_prob", "gbm_bernoulli",
           "rpart_class", "svm_class"]


def load(fixture_models, name):
    rows = json.loads((fixture_models / f"{name}.rows.json").read_text())
    expected = json.loads((fixture_models / f"{name}.expected.json").read_text())
    return rows, expected


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def fx_server(request, fixture_models, tmp_path_factory):
    with Server(fixture_models, tmp_path_factory.mktemp("fx"), "--workers", str(request.param)) as s:
        yield s


@pytest.mark.parametrize("name", CLASSES)
def test_records_match_r(fx_server, fixture_models, name):
    rows, expected = load(fixture_models, name)
    assert len(rows) >= 100
    r = fx_server.predict(name, rows)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected
    assert r.json()["model"] == name and r.json()["version"]


@pytest.mark.parametrize("name", CLASSES)
def test_columns_match_r(fx_server, fixture_models, name):
    rows, expected = load(fixture_models, name)
    columns = {k: [row[k] for row in rows] for k in rows[0]}
    r = fx_server.post(f"/models/{name}/predict", {"columns": columns})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == expected


@pytest.mark.parametrize("name", ["lm", "rf_class", "ranger_prob", "gbm_bernoulli"])
def test_single_rows_sent_concurrently_match_r(fx_server, fixture_models, name):
    """Concurrent one-row requests are merged into batches by the pool; each gets its own answer."""
    rows, expected = load(fixture_models, name)
    with cf.ThreadPoolExecutor(16) as ex:
        got = list(ex.map(lambda row: fx_server.predict(name, [row]).json()["predictions"][0], rows))
    assert got == expected


def test_models_listing_has_every_class(fx_server):
    listed = {m["name"]: m for m in fx_server.get("/models").json()["models"]}
    for name in CLASSES:
        assert listed[name]["state"] == "loaded", listed[name]
    detail = fx_server.get("/models/lm").json()
    kinds = {c["name"]: c["type"] for c in detail["schema"]["columns"]}
    assert "factor" in kinds.values() and detail["r_class"] == ["lm"]
    levels = {c["name"]: c["levels"] for c in detail["schema"]["columns"]}
    assert all(levels[n] for n, t in kinds.items() if t == "factor")
