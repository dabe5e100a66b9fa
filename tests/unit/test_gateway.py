"""The gateway alone (no R): routes, auth, validation and errors against a fake pool."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from rbridge.errors import Unavailable, Overloaded, RError
from gateway_fakes import gateway_app
from serverproc import ADMIN, SCORER

def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


ROW = {"wt": 2.5, "cyl": "6", "note": None, "n": 3, "flag": True, "unused": "ignored"}


def test_predict_records_encodes_typed_columns(app_pool):
    client, pool = app_pool
    r = client.post("/predict", json={"data": [ROW, dict(ROW, wt=1.0, cyl="8")]}, headers=basic(SCORER))
    assert r.status_code == 200, r.json
    assert r.json == {"model": "cars", "version": "v1", "predictions": [5.0, 2.0]}
    assert r.headers["X-Model-Version"] == "v1"
    _, part = pool.sent[0]
    assert part.nrows == 2 and "unused" not in part.columns
    assert part.columns["cyl"][0] == "factor" and part.columns["cyl"][1].tolist() == [2, 3]
    assert part.columns["wt"][1].dtype == np.float64
    assert part.columns["n"][1].dtype == np.int32
    assert part.columns["note"][1] == [None, None]
    assert part.columns["flag"][1] == [True, True]


def test_predict_columnar_equals_records(app_pool):
    client, pool = app_pool
    cols = {k: [v, v] for k, v in ROW.items()}
    r = client.post("/models/cars/predict", json={"columns": cols}, headers=basic(SCORER))
    assert r.status_code == 200 and r.json["predictions"] == [5.0, 5.0]


@pytest.mark.parametrize("row, code, words", [
    ({**ROW, "cyl": "5"}, "unknown_level", ["'cyl'", "row 0", '"5"', '"4", "6", "8"']),
    ({**ROW, "wt": "heavy"}, "wrong_type", ["'wt'", "row 0", "heavy", "a number"]),
    ({**ROW, "wt": True}, "wrong_type", ["'wt'", "a number"]),
    ({**ROW, "wt": None}, "null_value", ["'wt'", "null is not allowed"]),
    ({**ROW, "n": 2.5}, "wrong_type", ["'n'", "an integer"]),
    ({**ROW, "n": 2 ** 40}, "out_of_range", ["'n'"]),
    ({**ROW, "flag": "yes"}, "wrong_type", ["'flag'", "true or false"]),
    ({**ROW, "cyl": 6}, "unknown_level", ["'cyl'"]),
    ({k: v for k, v in ROW.items() if k != "wt"}, "missing_column", ["'wt'", "wt, cyl, note, n, flag"]),
])
def test_bad_rows_are_422_naming_column_row_value(app_pool, row, code, words):
    client, pool = app_pool
    r = client.post("/predict", json={"data": [row]}, headers=basic(SCORER))
    assert r.status_code == 422
    assert r.json["error"]["code"] == code
    for w in words:
        assert w in r.json["error"]["message"]
    assert pool.sent == []          # nothing invalid reaches a worker


def test_missing_column_in_a_later_row_names_the_row(app_pool):
    client, _ = app_pool
    r = client.post("/predict", json={"data": [ROW, {k: v for k, v in ROW.items() if k != "cyl"}]},
                    headers=basic(SCORER))
    assert r.status_code == 422 and "row 1" in r.json["error"]["message"]


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"data": {}}', b'{"data": []}', b'{"rows": []}',
                                  b'{"data": [1]}', b'{"columns": {"wt": [1], "cyl": [1, 2]}}', b"[NaN]", b""])
def test_malformed_bodies_are_400(app_pool, body):
    client, _ = app_pool
    r = client.post("/predict", data=body, headers={**basic(SCORER), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] == "bad_request"


def test_too_many_rows_and_too_large_body_are_413(app_pool):
    client, _ = app_pool
    r = client.post("/predict", json={"data": [ROW] * 101}, headers=basic(SCORER))
    assert r.status_code == 413 and r.json["error"]["code"] == "too_many_rows"
    big = b'{"data": [' + b'{"wt": 1.0},' * 1_000_000 + b'{"wt": 1.0}]}'
    r = client.post("/predict", data=big, headers={**basic(SCORER), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json["error"]["code"] == "too_large"


def test_unknown_model_is_404_and_unknown_route_is_json(app_pool):
    client, _ = app_pool
    r = client.post("/models/nope/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 404 and r.json["error"]["code"] == "unknown_model"
    r = client.get("/no/such/route", headers=basic(SCORER))
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    r = client.get("/predict", headers=basic(SCORER))
    assert r.status_code == 405 and "error" in r.json


def test_worker_errors_keep_their_status(app_pool):
    client, pool = app_pool
    pool.raise_error = RError("R failed: object 'x' not found")
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 422 and r.json["error"] == {"code": "r_error", "message": "R failed: object 'x' not found"}
    pool.raise_error = Overloaded("busy", headers={"Retry-After": "1"})
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_a_request_stranded_by_a_model_swap_is_read_again_once(app_pool):
    """A request encoded for a version swapped out before a worker took it is encoded again for
    the version served now and scored, not answered 503 (seen in CI: one 503 during a publish)."""
    client, pool = app_pool
    changed = lambda: Unavailable("replaced while this request waited", code="model_changed")
    pool.raise_next = [changed()]
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 200 and r.json["predictions"] == [ROW["wt"] * 2]
    assert len(pool.sent) == 2
    pool.raise_next = [changed(), changed()]          # swapped twice while it waited: the caller retries
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 503 and r.json["error"]["code"] == "model_changed"
    pool.raise_next = [Unavailable("no worker")]      # other 503s are not retried
    sent = len(pool.sent)
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 503 and len(pool.sent) == sent + 1


def test_unexpected_failure_is_500_without_traceback(app_pool):
    client, pool = app_pool
    pool.raise_error = ZeroDivisionError("secret internals")
    r = client.post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 500 and r.json["error"]["code"] == "internal_error"
    assert "secret internals" not in r.get_data(as_text=True) and "Traceback" not in r.get_data(as_text=True)


def test_auth_required_everywhere_but_probes(app_pool):
    client, _ = app_pool
    for method, path in (("post", "/predict"), ("post", "/models/cars/predict"), ("get", "/models"),
                         ("get", "/models/cars"), ("get", "/status"), ("get", "/metrics")):
        r = getattr(client, method)(path, json={"data": [ROW]})
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(app_pool):
    client, _ = app_pool
    wrong = client.post("/predict", json={"data": [ROW]}, headers=basic((SCORER[0], "nope-nope")))
    unknown = client.post("/predict", json={"data": [ROW]}, headers=basic(("nobody", "nope-nope")))
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json


def test_login_token_works_and_scorer_cannot_see_status(app_pool):
    client, _ = app_pool
    r = client.post("/login", json={"username": SCORER[0], "password": SCORER[1]})
    assert r.status_code == 200 and r.json["token_type"] == "Bearer" and r.json["expires_in"] == 3600
    bearer = {"Authorization": f"Bearer {r.json['access_token']}"}
    assert client.post("/predict", json={"data": [ROW]}, headers=bearer).status_code == 200
    assert client.get("/status", headers=bearer).status_code == 403
    tampered = {"Authorization": f"Bearer {r.json['access_token'][:-2]}xx"}
    assert client.post("/predict", json={"data": [ROW]}, headers=tampered).status_code == 401
    assert client.get("/status", headers=basic(ADMIN)).status_code == 200


def test_default_model_is_404_with_several_models(tmp_path):
    app, _ = gateway_app(tmp_path, models=("a", "b"))
    r = app.test_client().post("/predict", json={"data": [ROW]}, headers=basic(SCORER))
    assert r.status_code == 404 and "/models/<name>/predict" in r.json["error"]["message"]
