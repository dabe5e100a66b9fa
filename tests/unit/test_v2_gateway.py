"""The Open Inference Protocol routes (/v2) against a fake pool: wire format, auth, errors.

The binary tensor form is built here by hand (struct), not with rbridge's own code, so that a
mistake in oip.py cannot cancel itself out. tests/integration/test_v2_tritonclient.py drives the real
tritonclient against a real server and R.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from gateway_fakes import CARS, FakePool, fake_registry
from rbridge import settings as settings_mod
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator
from rbridge.gateway.users import UserStore
from rbridge.pool import protocol
from serverproc import SCORER, make_users
from test_gateway import ROW as NATIVE_ROW, basic

AUTH = basic(SCORER)
ROW = dict(NATIVE_ROW, note="a")          # a JSON tensor has no null
NA_SCHEMA = [{"name": "wt", "type": "numeric", "levels": None, "na": True},
             {"name": "n", "type": "integer", "levels": None, "na": True}]


def v2_app(tmp_path, schema=CARS, sample=None, fast_path=True):
    s = settings_mod.load({"users": str(tmp_path / "users.json"), "max_rows": "100"}, env={})
    make_users(s.users)
    registry = fake_registry(s, ("cars",), schema)
    registry.infos["cars"].sample_output = sample
    pool = FakePool()
    app = create_app(s, registry, pool, Authenticator(UserStore(s.users), [b"k" * 32], 3600), fast_path=fast_path)
    return app.test_client(), pool


@pytest.fixture(params=[True, False], ids=["fast-path", "flask"])
def v2(tmp_path, request):
    """Infer requests take the fast path in front of Flask, or Flask's own route: the same contract."""
    return v2_app(tmp_path, fast_path=request.param)


def tensor(name, values, datatype, shape=None):
    return {"name": name, "datatype": datatype, "shape": shape or [len(values)], "data": values}


def cars_inputs(rows):
    kinds = {"wt": "FP64", "cyl": "BYTES", "note": "BYTES", "n": "INT32", "flag": "BOOL"}
    return [tensor(k, [r[k] for r in rows], dt) for k, dt in kinds.items()]


def binary_tensor(name, datatype, values):
    """(JSON part of an input, its raw bytes) in the binary tensor data extension's layout."""
    if datatype == "BYTES":
        raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    else:
        raw = struct.pack("<" + {"FP64": "d", "FP32": "f", "INT32": "i", "INT64": "q", "BOOL": "?"}[datatype]
                          * len(values), *values)
    return {"name": name, "datatype": datatype, "shape": [len(values)],
            "parameters": {"binary_data_size": len(raw)}}, raw


def binary_request(client, specs, extra=None, path="/v2/models/cars/infer"):
    parts = [binary_tensor(*s) for s in specs]
    head = json.dumps({"inputs": [p[0] for p in parts], **(extra or {})}).encode()
    return client.post(path, data=head + b"".join(p[1] for p in parts),
                       headers={**AUTH, "Inference-Header-Content-Length": str(len(head))})


def test_json_infer_scores_like_the_native_route(v2):
    client, pool = v2
    rows = [ROW, dict(ROW, wt=1.0, cyl="8")]
    r = client.post("/v2/models/cars/infer", json={"id": "req-7", "parameters": {"trace": "x"},
                                                   "inputs": cars_inputs(rows)}, headers=AUTH)
    assert r.status_code == 200, r.json
    assert r.json == {"model_name": "cars", "model_version": "v1", "id": "req-7", "parameters": {"trace": "x"},
                      "outputs": [{"name": "predictions", "datatype": "FP64", "shape": [2], "data": [5.0, 2.0]}]}
    assert r.headers["X-Model-Version"] == "v1" and "Inference-Header-Content-Length" not in r.headers
    native = client.post("/models/cars/predict", json={"data": rows}, headers=AUTH)
    assert native.json["predictions"] == [5.0, 2.0]
    (_, v2_part), (_, native_part) = pool.sent
    assert v2_part.nrows == native_part.nrows == 2
    for name, (kind, buf) in native_part.columns.items():     # the same typed columns reach the pool
        assert v2_part.columns[name][0] == kind
        assert list(v2_part.columns[name][1]) == list(buf)
    assert "trace" not in str(v2_part.columns)                  # parameters never reach R


def test_nested_n_by_1_data_and_unused_inputs(v2):
    client, pool = v2
    inputs = cars_inputs([ROW])
    inputs[0] = tensor("wt", [[2.5]], "FP64", [1, 1])
    inputs.append(tensor("unused", ["x"], "BYTES"))
    r = client.post("/v2/models/cars/infer", json={"inputs": inputs}, headers=AUTH)
    assert r.status_code == 200, r.json
    assert r.json["outputs"][0]["data"] == [5.0] and "unused" not in pool.sent[0][1].columns


def test_binary_inputs_and_outputs(v2):
    client, pool = v2
    r = binary_request(client, [("wt", "FP64", [2.5, 1.25]), ("cyl", "BYTES", ["6", "8"]),
                                ("note", "BYTES", ["a", "é"]), ("n", "INT64", [3, 4]), ("flag", "BOOL", [True, False])],
                       {"parameters": {"binary_data_output": True}})
    assert r.status_code == 200, r.data
    size = int(r.headers["Inference-Header-Content-Length"])
    head = json.loads(r.data[:size])
    (out,) = head["outputs"]
    assert out["name"] == "predictions" and out["datatype"] == "FP64" and out["shape"] == [2]
    assert out["parameters"]["binary_data_size"] == 16 and "data" not in out
    assert struct.unpack("<2d", r.data[size:]) == (5.0, 2.5)
    part = pool.sent[0][1]
    assert part.columns["cyl"][1].tolist() == [2, 3] and part.columns["note"][1] == ["a", "é"]
    assert part.columns["n"][1].tolist() == [3, 4] and part.columns["flag"][1] == [True, False]


def test_requested_outputs_choose_json_or_binary_per_output(tmp_path):
    sample = protocol.Output("table", ["p", "label"], [np.array([0.25]), ["yes"]])
    client, pool = v2_app(tmp_path, sample=sample)
    pool.predict = lambda model, part, timeout, version=None: type("Job", (), {
        "output": protocol.Output("table", ["p", "label"], [np.array([0.25, 0.5]), ["yes", "no"]]),
        "version": "v1", "slot": 0})()
    body = {"inputs": cars_inputs([ROW, ROW]),
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "p"}]}
    r = client.post("/v2/models/cars/infer", json=body, headers=AUTH)
    assert r.status_code == 200, r.data
    size = int(r.headers["Inference-Header-Content-Length"])
    label, p = json.loads(r.data[:size])["outputs"]
    assert (label["name"], label["datatype"], p["name"], p["datatype"]) == ("label", "BYTES", "p", "FP64")
    assert p["data"] == [0.25, 0.5]
    assert r.data[size:] == b"\x03\x00\x00\x00yes\x02\x00\x00\x00no"
    meta = client.get("/v2/models/cars", headers=AUTH).json
    assert meta["outputs"] == [{"name": "p", "datatype": "FP64", "shape": [-1]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]}]
    body["outputs"] = [{"name": "nope"}]
    r = client.post("/v2/models/cars/infer", json=body, headers=AUTH)
    assert r.status_code == 400 and r.json == {"error": "model 'cars' has no output 'nope'; its outputs: p, label"}


def test_missing_values_travel_only_in_binary(tmp_path):
    client, pool = v2_app(tmp_path, schema=NA_SCHEMA)
    r = binary_request(client, [("wt", "FP64", [float("nan"), 1.0]), ("n", "INT32", [-2147483648, 5])])
    assert r.status_code == 200, r.data
    wt, n = pool.sent[0][1].columns["wt"][1], pool.sent[0][1].columns["n"][1]
    assert np.isnan(wt[0]) and wt.view(np.uint64)[0] == 0x7FF00000000007A2 and wt[1] == 1.0   # R's NA_real_
    assert n.tolist() == [-2147483648, 5]
    r = client.post("/v2/models/cars/infer", json={"inputs": [tensor("wt", [None], "FP64"), tensor("n", [1], "INT32")]},
                    headers=AUTH)
    assert r.status_code == 422 and "binary" in r.json["error"] and "POST /models/<name>/predict" in r.json["error"]
    meta = client.get("/v2/models/cars", headers=AUTH).json
    assert [i["parameters"]["na"] for i in meta["inputs"]] == ["NaN in the binary tensor form",
                                                               "-2147483648 in the binary tensor form"]


def test_nan_where_the_column_takes_no_na_is_422(v2):
    client, _ = v2
    r = binary_request(client, [("wt", "FP64", [float("nan")]), ("cyl", "BYTES", ["6"]), ("note", "BYTES", ["a"]),
                                ("n", "INT32", [3]), ("flag", "BOOL", [True])])
    assert r.status_code == 422 and "'wt'" in r.json["error"] and "finite" in r.json["error"]


def test_metadata_types_every_input_from_the_schema(v2):
    client, _ = v2
    r = client.get("/v2/models/cars", headers=AUTH)
    assert r.status_code == 200
    meta = r.json
    assert meta["name"] == "cars" and meta["versions"] == ["v1"] and meta["platform"] == "r-rds"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("wt", "FP64", [-1]), ("cyl", "BYTES", [-1]), ("note", "BYTES", [-1]), ("n", "INT32", [-1]),
        ("flag", "BOOL", [-1])]
    assert meta["inputs"][1]["parameters"] == {"r_type": "factor", "levels": ["4", "6", "8"]}
    assert "native" in meta["inputs"][2]["parameters"]["na"] or "POST" in meta["inputs"][2]["parameters"]["na"]
    assert "na" not in meta["inputs"][0]["parameters"]
    assert client.get("/v2/models/cars/versions/v1", headers=AUTH).json == meta
    assert client.get("/v2/models/cars/ready", headers=AUTH).status_code == 200
    assert client.get("/v2/models/cars/versions/v1/ready", headers=AUTH).status_code == 200
    server = client.get("/v2", headers=AUTH).json
    assert server["name"] == "rbridge" and "binary_tensor_data" in server["extensions"]


def test_versioned_paths_answer_only_for_the_served_version(v2):
    client, pool = v2
    for method, path in (("get", "/v2/models/cars/versions/v0"), ("get", "/v2/models/cars/versions/v0/ready"),
                         ("post", "/v2/models/cars/versions/v0/infer")):
        r = getattr(client, method)(path, json={"inputs": cars_inputs([ROW])}, headers=AUTH)
        assert r.status_code == 404, path
        assert r.json == {"error": "model 'cars' serves version 'v1', not 'v0' (a versioned path answers only "
                                   "for the version being served)"}
    r = client.post("/v2/models/cars/versions/v1/infer", json={"inputs": cars_inputs([ROW])}, headers=AUTH)
    assert r.status_code == 200 and r.json["model_version"] == "v1"
    assert len(pool.sent) == 1


def test_health_is_open_and_the_rest_needs_a_user(v2):
    client, _ = v2
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    for method, path in (("get", "/v2"), ("get", "/v2/models/cars"), ("get", "/v2/models/cars/ready"),
                         ("post", "/v2/models/cars/infer")):
        r = getattr(client, method)(path, json={"inputs": cars_inputs([ROW])})
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic")
        assert isinstance(r.json["error"], str) and "sign in" in r.json["error"]


@pytest.mark.parametrize("change, status, words", [
    (lambda b: b["inputs"][0].update(shape=[1, 2]), 400, ["'wt'", "[n] or [n, 1]"]),
    (lambda b: b["inputs"][0].update(datatype="UINT8"), 400, ["'wt'", "UINT8"]),
    (lambda b: b["inputs"][0].update(data=[1.0, 2.0]), 400, ["'wt'", "holds 1 values, data has 2"]),
    (lambda b: b["inputs"][1].update(datatype="FP64", data=[6.0]), 422, ["'cyl'", "FP64", "BYTES"]),
    (lambda b: b["inputs"][1].update(data=["5"]), 422, ["'cyl'", "row 0", '"5"', '"4", "6", "8"']),
    (lambda b: b["inputs"][0].update(data=["heavy"]), 422, ["'wt'", "a number"]),
    (lambda b: b["inputs"][3].update(data=[2.5]), 422, ["'n'", "an integer"]),
    (lambda b: b["inputs"].pop(0), 422, ["missing column 'wt'"]),
    (lambda b: b["inputs"].append(tensor("wt", [1.0], "FP64")), 400, ["more than once", "wt"]),
    (lambda b: b["inputs"][0].update(shape=[2], data=[1.0, 2.0]), 400, ["same number of rows"]),
    (lambda b: b.update(inputs=[]), 400, ["one tensor per column"]),
    (lambda b: b.update(id=5), 400, ['"id"']),
    (lambda b: b.update(parameters={"deep": [[[[1]]]]}), 400, ['parameter "deep"']),
    (lambda b: b["inputs"][0].update(data=[[[[[2.5]]]]]), 422, ["'wt'", "a number"]),
    (lambda b: b.update(outputs=[{"name": "predictions", "parameters": {"classification": 2}}]), 400,
     ["classification"]),
])
def test_bad_requests_get_the_native_status_and_the_protocols_error_shape(v2, change, status, words):
    client, pool = v2
    body = {"inputs": cars_inputs([ROW])}
    change(body)
    r = client.post("/v2/models/cars/infer", json=body, headers=AUTH)
    assert r.status_code == status, r.json
    assert list(r.json) == ["error"] and isinstance(r.json["error"], str)
    for w in words:
        assert w in r.json["error"]
    assert pool.sent == []


def test_too_many_rows_unknown_model_worker_errors_and_routes(v2):
    client, pool = v2
    r = client.post("/v2/models/cars/infer", json={"inputs": cars_inputs([ROW] * 101)}, headers=AUTH)
    assert r.status_code == 413 and "101 rows" in r.json["error"]
    r = client.post("/v2/models/nope/infer", json={"inputs": cars_inputs([ROW])}, headers=AUTH)
    assert r.status_code == 404 and r.json == {"error": "no model named 'nope' (GET /models lists the models)"}
    assert client.get("/v2/models/nope", headers=AUTH).status_code == 404
    assert client.get("/v2/models/nope/ready", headers=AUTH).status_code == 404
    r = client.get("/v2/no/such/route", headers=AUTH)
    assert r.status_code == 404 and isinstance(r.json["error"], str)
    r = client.get("/v2/models/cars/infer", headers=AUTH)
    assert r.status_code == 405 and isinstance(r.json["error"], str)
    r = client.get("/no/such/route", headers=AUTH)     # the native shape is untouched
    assert r.json["error"]["code"] == "not_found"
    from rbridge.errors import Overloaded, RError
    pool.raise_error = RError("R failed: object 'x' not found")
    r = client.post("/v2/models/cars/infer", json={"inputs": cars_inputs([ROW])}, headers=AUTH)
    assert r.status_code == 422 and r.json == {"error": "R failed: object 'x' not found"}
    pool.raise_error = Overloaded("busy", headers={"Retry-After": "1"})
    r = client.post("/v2/models/cars/infer", json={"inputs": cars_inputs([ROW])}, headers=AUTH)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json == {"error": "busy"}


@pytest.mark.parametrize("header, tail, words", [
    ("abc", b"", ["Inference-Header-Content-Length"]),
    ("99999", b"", ["Inference-Header-Content-Length"]),
    (None, b"\x00" * 3, ["3 bytes of binary data"]),
])
def test_malformed_binary_bodies_are_400(v2, header, tail, words):
    client, _ = v2
    spec, raw = binary_tensor("wt", "FP64", [2.5])
    head = json.dumps({"inputs": [spec]}).encode()
    r = client.post("/v2/models/cars/infer", data=head + raw + tail,
                    headers={**AUTH, "Inference-Header-Content-Length": header or str(len(head))})
    assert r.status_code == 400
    for w in words:
        assert w in r.json["error"]


def test_binary_size_that_does_not_fit_the_shape_is_400(v2):
    client, _ = v2
    spec, raw = binary_tensor("wt", "FP64", [2.5, 1.0])
    spec["shape"] = [3]
    head = json.dumps({"inputs": [spec]}).encode()
    r = client.post("/v2/models/cars/infer", data=head + raw,
                    headers={**AUTH, "Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 400 and "3 FP64 values are 24 bytes" in r.json["error"]


def test_v2_requests_count_in_the_models_metrics(v2):
    client, pool = v2
    client.post("/v2/models/cars/infer", json={"inputs": cars_inputs([ROW, ROW])}, headers=AUTH)
    text = pool.metrics.render().decode() if isinstance(pool.metrics.render(), bytes) else pool.metrics.render()
    assert 'rbridge_requests_total{model="cars",status="200"} 1.0' in text
    assert 'rbridge_rows_total{model="cars"} 2.0' in text
