"""Correctness: the service's predictions equal R's own predict() for the same rows.

tests/fixtures/make_fixtures.R trains the model zoo (models of 30+ R classes, from R's own datasets
and synthetic data: factor level order, ordered factors, character, logical, integer, Date,
date-time and difftime columns, NA rows, offsets and weights) and tests/fixtures/expected.R
computes R's predictions in a fresh R session from the saved files. The service must give the same
answers: labels exactly, numbers to 1e-9 relative, one answer per row, in order.

The original nine classes are also checked exactly (both sides print the shortest exact
representation), for record and columnar bodies, with one and with several workers, and merged
into batches; the whole zoo is served by one server with one worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import re

import pytest

from serverproc import ROOT, Server, copy_models

pytestmark = pytest.mark.r
CLASSES = ["lm", "glm_binomial", "rf_class", "rf_reg", "ranger_reg", "ranger_prob", "gbm_bernoulli",
           "rpart_class", "svm_class"]


def load(fixture_models, name):
    rows = json.loads((fixture_models / f"{name}.rows.json").read_text())
    expected = json.loads((fixture_models / f"{name}.expected.json").read_text())
    return rows, expected


def manifest(fixture_models) -> dict:
    return {m["name"]: m for m in json.loads((fixture_models / "manifest.json").read_text())}


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def fx_server(request, fixture_models, tmp_path_factory):
    models = copy_models(fixture_models, tmp_path_factory.mktemp("fx-models"), CLASSES)
    with Server(models, tmp_path_factory.mktemp("fx"), "--workers", str(request.param)) as s:
        yield s


@pytest.fixture(scope="module")
def zoo_server(fixture_models, tmp_path_factory):
    """Every zoo model that loads, in one server with one worker (cv_glmnet's failure: test_check.py)."""
    models = copy_models(fixture_models, tmp_path_factory.mktemp("zoo-models"), ZOO)
    with Server(models, tmp_path_factory.mktemp("zoo"), "--workers", "1", timeout=240) as s:
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


# -- the zoo ------------------------------------------------------------------------------------------------
def same(got, want) -> bool:
    """Labels, logicals and nulls exactly, numbers to 1e-9 relative; row objects key by key."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if want is None or isinstance(want, (str, bool)) or isinstance(got, bool):
        return got == want and type(got) is type(want)
    return isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-300)


def zoo_names() -> list:
    """The zoo's model names, read from the script that trains them (tests are made before it runs)."""
    return re.findall(r'^fixture\("([^"]+)"', (ROOT / "tests/fixtures/make_fixtures.R").read_text(), re.M)


ZOO = [n for n in zoo_names() if n != "cv_glmnet"]


def test_zoo_has_thirty_classes_and_scripts_only_where_predict_needs_arguments(fixture_models):
    zoo = manifest(fixture_models)
    assert sorted(zoo) == sorted(ZOO + ["cv_glmnet"])
    assert len({m["class"] for m in zoo.values()}) >= 30, sorted({m["class"] for m in zoo.values()})
    assert [n for n, m in zoo.items() if m["script"]] == ["glmnet"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_matches_r(zoo_server, fixture_models, name):
    rows, expected = load(fixture_models, name)
    r = zoo_server.predict(name, rows)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert len(got) == len(rows) == len(expected)
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, expected)) if not same(g, w)]
    assert not bad, bad[:5]


def test_zoo_classes_as_r_reports_them(zoo_server, fixture_models):
    listed = {m["name"]: m for m in zoo_server.get("/models").json()["models"]}
    for name, entry in manifest(fixture_models).items():
        if name in ZOO:
            assert listed[name]["state"] == "loaded", listed[name]
            assert listed[name]["r_class"] == entry["classes"], name


def test_a_parents_method_is_never_used_for_a_subclass(zoo_server):
    """mgcv's gam is c("gam", "glm", "lm"): mgcv is loaded (not only stats), predict.gam answers."""
    detail = zoo_server.get("/models/gam").json()
    assert detail["packages"] == ["mgcv"] and detail["r_class"][:2] == ["gam", "glm"]
    lmer = zoo_server.get("/models/lmer").json()
    assert lmer["packages"] == ["lme4"] and lmer["state"] == "loaded"
    splines = zoo_server.get("/models/lm_splines").json()
    assert "splines" in splines["packages"]


def test_time_columns_typed_from_the_model(zoo_server):
    columns = {c["name"]: c for c in zoo_server.get("/models/lm_datetime").json()["schema"]["columns"]}
    assert columns["time"]["type"] == "datetime" and columns["time"]["tz"] == "America/New_York"
    assert columns["since"]["type"] == "difftime" and columns["since"]["units"] == "weeks"
    dates = {c["name"]: c for c in zoo_server.get("/models/lm_date").json()["schema"]["columns"]}
    assert dates["date"]["type"] == "date"
    spec = zoo_server.get("/openapi.json").json()
    row = spec["components"]["schemas"]["lm_datetime.Row"]["properties"]
    assert row["time"]["format"] == "date-time" and row["time"]["type"] == ["string", "null"]
    assert spec["components"]["schemas"]["lm_date.Row"]["properties"]["date"]["format"] == "date"
    # The same instant written in UTC or in the column's zone gives the same answer.
    local = zoo_server.predict("lm_datetime", [{"Wind": 8, "time": "1973-05-02T16:30:00", "since": 1}])
    utc = zoo_server.predict("lm_datetime", [{"Wind": 8, "time": "1973-05-02T20:30:00Z", "since": 1}])
    assert local.status_code == 200, local.text
    assert local.json()["predictions"] == utc.json()["predictions"]
    bad = zoo_server.predict("lm_date", [{"Solar.R": 100, "Wind": 8, "Temp": 70, "date": "May 3rd"}])
    assert bad.status_code == 422 and "column 'date', row 0" in bad.json()["error"]["message"]


def test_na_follows_r_and_classes_that_fail_on_na_say_so(zoo_server, fixture_models):
    rows, expected = load(fixture_models, "lm_date")
    assert any(r["Solar.R"] is None for r in rows) and None in expected
    r = zoo_server.predict("ranger_prob", [{"x1": None, "x2": 1.0, "f": "a", "ch": "north"}])
    assert r.status_code == 422
    assert r.json()["error"]["message"] == ("column 'x1', row 0: null is not allowed "
                                            "(ranger cannot predict rows with missing values)")
    # kernlab drops incomplete rows; the bridge answers null in their place, the others as R does.
    rows, expected = load(fixture_models, "ksvm")
    holed = [dict(rows[0]), {**rows[1], "Sepal.Width": None}, dict(rows[2])]
    r = zoo_server.predict("ksvm", holed)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [expected[0], None, expected[2]]


def test_the_readme_table_is_the_zoos(fixture_models):
    """README's table of supported classes is tests/zoo_table.py's output for this zoo."""
    from zoo_table import readme_table, table
    zoo = json.loads((fixture_models / "manifest.json").read_text())
    assert readme_table((ROOT / "README.md").read_text()) == table(zoo), \
        "regenerate with: python tests/zoo_table.py, and paste it into README.md"
