"""The Open Inference Protocol (/v2) with the real tritonclient against a real server and R.

The example models (./models: mtcars_lm with its score() script, iris_rf, iris_ranger_prob) and
the fixture models of every supported class (tests/fixtures/make_fixtures.R: factor, ordered,
character, integer and logical inputs) are scored through `tritonclient.http`, with JSON and with
binary tensors, and must give exactly what R's own predict() (or score()) gives for the same rows.
The client builds its inputs from the model's V2 metadata, as a caller would. Edge cases the
client cannot send go as plain HTTP.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from serverproc import ROOT, SCORER, Server, copy_models, rscript

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.r
EXAMPLES = ["mtcars_lm", "iris_rf", "iris_ranger_prob"]
FIXTURES = ["lm", "glm_binomial", "rf_class", "rf_reg", "ranger_reg", "ranger_prob", "gbm_bernoulli",
            "rpart_class", "svm_class"]
AUTH = {"Authorization": requests.auth._basic_auth_str(*SCORER)}
NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
         "BYTES": np.object_}

# R's answers for the example models on rows of R's own data, every double written with 17
# significant digits (which read back as the same double): {model: {"rows": [...], "outputs": {...}}}.
EXPECTED_R = r'''
suppressPackageStartupMessages({library(randomForest); library(ranger); library(jsonlite)})
num <- function(x) paste0("[", paste(sprintf("%.17g", x), collapse = ","), "]")
str <- function(x) as.character(toJSON(as.character(x)))
obj <- function(cols) paste0("{", paste(sprintf('"%s":%s', names(cols), unlist(cols)), collapse = ","), "}")
rows <- function(d) {
  cols <- lapply(d, function(x) if (is.numeric(x)) num(x) else str(x))
  obj(cols)
}
cars <- data.frame(wt = mtcars$wt, hp = mtcars$hp, cyl = factor(mtcars$cyl, levels = c("4", "6", "8")))
lm_env <- new.env(); sys.source("{models}/mtcars_lm.R", envir = lm_env)
lm_out <- lm_env$score(readRDS("{models}/mtcars_lm.rds"), cars)
flowers <- iris[, 1:4]
rf <- predict(readRDS("{models}/iris_rf.rds"), flowers)
prob <- predict(readRDS("{models}/iris_ranger_prob.rds"), flowers, num.threads = 1)$predictions
cat(obj(list(
  mtcars_lm = obj(list(rows = rows(cars), outputs = obj(lapply(lm_out, num)))),
  iris_rf = obj(list(rows = rows(flowers), outputs = obj(list(predictions = str(rf))))),
  iris_ranger_prob = obj(list(rows = rows(flowers), outputs = obj(lapply(as.data.frame(prob), num)))))))
'''


@pytest.fixture(scope="module")
def served(fixture_models, tmp_path_factory):
    """One server (1 worker) with the example and the fixture models; R's answers for both."""
    d = copy_models(ROOT / "models", tmp_path_factory.mktemp("v2models"), EXAMPLES)
    copy_models(fixture_models, d, FIXTURES)
    expected = json.loads(rscript(EXPECTED_R.replace("{models}", str(ROOT / "models"))))
    for name in FIXTURES:
        rows = json.loads((fixture_models / f"{name}.rows.json").read_text())
        want = json.loads((fixture_models / f"{name}.expected.json").read_text())
        outputs = ({k: [p[k] for p in want] for k in want[0]} if isinstance(want[0], dict)
                   else {"predictions": want})
        expected[name] = {"rows": {k: [r[k] for r in rows] for k in rows[0]}, "outputs": outputs}
    with Server(d, tmp_path_factory.mktemp("v2server"), "--workers", "1", "--timeout", "60") as s:
        yield s, expected


@pytest.fixture(scope="module")
def client(served):
    c = tritonclient_http.InferenceServerClient(served[0].url.removeprefix("http://"), network_timeout=120)
    yield c
    c.close()


def infer(client, name, columns, binary: bool):
    """Score `columns` with `name` through tritonclient, typing each input from the V2 metadata."""
    meta = client.get_model_metadata(name, headers=AUTH)
    inputs = []
    for spec in meta["inputs"]:
        values = np.array(columns[spec["name"]], dtype=NUMPY[spec["datatype"]])
        tensor = tritonclient_http.InferInput(spec["name"], list(values.shape), spec["datatype"])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    outputs = None if binary else [tritonclient_http.InferRequestedOutput(o["name"], binary_data=False)
                                   for o in meta["outputs"]]
    # a copy: tritonclient writes Inference-Header-Content-Length into the dict it is given
    result = client.infer(name, inputs, outputs=outputs, headers=dict(AUTH), request_id=f"{name}-{binary}")
    assert result.get_response()["id"] == f"{name}-{binary}"
    got = {}
    for o in meta["outputs"]:
        arr = result.as_numpy(o["name"])
        assert arr is not None, o["name"]
        got[o["name"]] = [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    return meta, got


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("name", EXAMPLES + FIXTURES)
def test_tritonclient_gets_rs_answers(served, client, name, binary):
    _, expected = served
    meta, got = infer(client, name, expected[name]["rows"], binary)
    assert got == expected[name]["outputs"]
    assert [o["name"] for o in meta["outputs"]] == list(expected[name]["outputs"])


def test_health_metadata_and_readiness_through_tritonclient(served, client):
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata(headers=AUTH)
    assert server["name"] == "rbridge" and "binary_tensor_data" in server["extensions"]
    for name in EXAMPLES + FIXTURES:
        assert client.is_model_ready(name, headers=AUTH), name
    meta = client.get_model_metadata("mtcars_lm", headers=AUTH)
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("wt", "FP64"), ("hp", "FP64"), ("cyl", "BYTES")]
    assert meta["inputs"][2]["parameters"]["levels"] == ["4", "6", "8"]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("mpg", "FP64"), ("lower", "FP64"),
                                                                     ("upper", "FP64")]
    version = meta["versions"][0]
    assert client.get_model_metadata("mtcars_lm", version, headers=AUTH) == meta
    assert client.is_model_ready("mtcars_lm", version, headers=AUTH)
    assert not client.is_model_ready("mtcars_lm", "no-such-version", headers=AUTH)
    kinds = {i["name"]: i["datatype"] for i in client.get_model_metadata("lm", headers=AUTH)["inputs"]}
    assert kinds == {"x1": "FP64", "x2": "FP64", "f": "BYTES", "o": "BYTES", "ch": "BYTES", "i": "INT32", "l": "BOOL"}


def test_errors_reach_tritonclient_with_status_and_message(served, client):
    _, expected = served
    rows = {k: list(v[:2]) for k, v in expected["mtcars_lm"]["rows"].items()}
    rows["cyl"] = ["6", "5"]
    with pytest.raises(InferenceServerException) as err:
        infer(client, "mtcars_lm", rows, binary=True)
    assert err.value.status() == "422"
    assert "'cyl'" in err.value.message() and "row 1" in err.value.message() and '"5"' in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("mtcars_lm")                     # no credentials
    assert err.value.status() == "401" and "sign in" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope", headers=AUTH)
    assert err.value.status() == "404" and "no model named 'nope'" in err.value.message()


def test_plain_http_edge_cases(served):
    server, expected = served
    url = server.url + "/v2/models/mtcars_lm"
    version = requests.get(url, headers=AUTH, timeout=30).json()["versions"][0]
    body = {"id": "edge", "parameters": {"note": "echoed, never passed to R"},
            "inputs": [{"name": "wt", "datatype": "FP64", "shape": [1, 1], "data": [[2.62]]},
                       {"name": "hp", "datatype": "INT64", "shape": [1], "data": [110]},
                       {"name": "cyl", "datatype": "BYTES", "shape": [1], "data": ["6"]}]}
    r = requests.post(f"{url}/versions/{version}/infer", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "edge" and doc["parameters"] == body["parameters"] and doc["model_version"] == version
    assert {o["name"]: o["data"] for o in doc["outputs"]}["mpg"] == [expected["mtcars_lm"]["outputs"]["mpg"][0]]
    native = server.post("/models/mtcars_lm/predict", {"data": [{"wt": 2.62, "hp": 110, "cyl": "6"}]}).json()
    assert native["predictions"][0] == {o["name"]: o["data"][0] for o in doc["outputs"]}
    r = requests.post(f"{url}/versions/other/infer", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 404 and r.json() == {"error": f"model 'mtcars_lm' serves version '{version}', not "
                                                          "'other' (a versioned path answers only for the version "
                                                          "being served)"}
    body["inputs"][2]["data"] = [None]
    r = requests.post(f"{url}/infer", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 422 and "POST /models/<name>/predict" in r.json()["error"]
    assert requests.get(server.url + "/v2/health/ready", timeout=30).status_code == 200
    r = requests.get(server.url + "/v2/models", headers=AUTH, timeout=30)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    lines = [json.loads(x) for x in server.log_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("message") == f"POST /v2/models/mtcars_lm/versions/{version}/infer 200"]
    assert len(access) == 1 and access[0]["model"] == "mtcars_lm" and access[0]["rows"] == 1, access
    assert access[0]["version"] == version and access[0]["user"] == SCORER[0]
