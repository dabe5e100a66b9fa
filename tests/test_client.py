"""bridge.client, `rbridge predict` and CSV request bodies: unit tests, then against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import pytest

from bridge import csvbody
from bridge.client import BridgeClientError, Client, to_body
from bridge.errors import BadRequest
from conftest import copy_models
from serverproc import ADMIN, ROOT, SCORER, Server

CARS_ROWS = [{"wt": 2.62, "hp": 110, "cyl": "6"}, {"wt": 3.215, "hp": 245, "cyl": "8"}]
CARS_SCHEMA = [{"name": "wt", "type": "numeric"}, {"name": "hp", "type": "numeric"},
               {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"]}]
SIGNING_KEY = "k" * 48


# -- unit: request bodies ---------------------------------------------------------------------------
def test_to_body_shapes():
    assert to_body(CARS_ROWS) == {"data": CARS_ROWS}
    assert to_body({"wt": [2.62], "cyl": ["6"]}) == {"columns": {"wt": [2.62], "cyl": ["6"]}}
    assert to_body({"data": CARS_ROWS}) == {"data": CARS_ROWS}
    assert to_body([{"wt": float("nan")}]) == {"data": [{"wt": None}]}
    with pytest.raises(TypeError):
        to_body("wt,hp\n1,2\n")


def test_to_body_dataframe():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"wt": [2.62, None], "hp": [110, 245],
                              "cyl": pandas.Categorical(["6", None], categories=["4", "6", "8"])})
    assert to_body(frame) == {"columns": {"wt": [2.62, None], "hp": [110, 245], "cyl": ["6", None]}}


def test_client_imports_nothing_of_the_server():
    code = ("import sys, bridge.client; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('rpy2', 'flask', 'numpy') or m in ('bridge.pool', 'bridge.worker', 'bridge.app')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- unit: CSV bodies -------------------------------------------------------------------------------
def test_csv_is_typed_by_the_schema():
    schema = CARS_SCHEMA + [{"name": "n", "type": "integer"}, {"name": "am", "type": "logical"},
                            {"name": "note", "type": "character"}]
    body = csvbody.parse(b'wt,hp,cyl,n,am,note,extra\n2.62,110,6,3,TRUE,"a, b",x\n3.2,NA,8,4.0,false,,y\r\n',
                         schema)
    assert body == {"columns": {"wt": [2.62, 3.2], "hp": [110.0, None], "cyl": ["6", "8"], "n": [3.0, 4.0],
                                "am": [True, False], "note": ["a, b", None], "extra": ["x", "y"]}}


def test_csv_keeps_what_does_not_convert_for_validation_to_name():
    body = csvbody.parse(b"wt,hp,cyl\nheavy,inf,6\n", CARS_SCHEMA)
    assert body["columns"]["wt"] == ["heavy"] and body["columns"]["hp"] == ["inf"]


def test_csv_from_r_write_csv():
    data = b'"","wt","hp","cyl"\n"Mazda RX4",2.62,110,"6"\n"Valiant",NA,105,"6"\n'
    assert csvbody.parse(data, CARS_SCHEMA) == {"columns": {"wt": [2.62, None], "hp": [110.0, 105.0],
                                                            "cyl": ["6", "6"]}}


def test_csv_without_schema_guesses_per_column():
    body = csvbody.parse("\ufeffx,flag,name\n1,true,a\n2.5,,b\n".encode(), None)
    assert body == {"columns": {"x": [1.0, 2.5], "flag": [True, None], "name": ["a", "b"]}}


def test_csv_charset_and_errors():
    assert csvbody.parse("name\nJosé\n".encode("latin-1"), None, "ISO-8859-1") == {"columns": {"name": ["José"]}}
    for data, charset, words in ((b"", None, "no body"), (b"\n\n", None, "no header"),
                                 (b"a,a\n1,2\n", None, "repeated"), (b"a,b\n1\n", None, "line 2 has 1"),
                                 (b"a\n\xff\n", None, "not valid"), (b"a\n1\n", "klingon", "unknown charset"),
                                 (b'a,b\n"1,2\n', None, "not valid CSV")):
        with pytest.raises(BadRequest, match=words):
            csvbody.parse(data, None, charset)


# -- against the shared server ----------------------------------------------------------------------
@pytest.mark.r
def test_predict_rows_columns_and_dataframe(server):
    with Client(server.url, *SCORER) as client:
        by_rows = client.predict("cars", CARS_ROWS)
        by_columns = client.predict("cars", {k: [r[k] for r in CARS_ROWS] for k in CARS_ROWS[0]})
        assert by_rows == by_columns and len(by_rows) == 2 and 15 < by_rows[0] < 30
        assert client.predict_response("cars", CARS_ROWS)["model"] == "cars"
        assert [m["name"] for m in client.models()] == ["cars", "chaos", "iris"]
        assert client.model("iris")["schema"]["columns"][0]["name"] == "Sepal.Length"
        pandas = pytest.importorskip("pandas")
        frame = pandas.DataFrame(CARS_ROWS)
        frame["cyl"] = frame["cyl"].astype("category")
        assert client.predict("cars", frame) == by_rows


@pytest.mark.r
def test_client_errors(server):
    with Client(server.url, *SCORER) as client:
        with pytest.raises(BridgeClientError) as err:
            client.predict("nope", CARS_ROWS)
        assert (err.value.status, err.value.code) == (404, "unknown_model")
        with pytest.raises(BridgeClientError) as err:
            client.predict("cars", [{"wt": 2.6, "hp": 110, "cyl": "5"}])
        assert (err.value.status, err.value.code) == (422, "unknown_level")
        assert err.value.details["column"] == "cyl"
    with pytest.raises(BridgeClientError) as err:
        Client(server.url, "nobody", "wrong-password").models()
    assert err.value.status == 401
    with pytest.raises(BridgeClientError) as err:
        Client("http://127.0.0.1:1", *SCORER, timeout=2).models()
    assert err.value.status is None and err.value.code == "connection_error"


@pytest.mark.r
def test_client_api_key_and_token(server):
    token = server.post("/login", {"username": SCORER[0], "password": SCORER[1]}, auth=None).json()
    assert Client(server.url, token=token["access_token"]).predict("cars", CARS_ROWS[:1])
    with pytest.raises(BridgeClientError) as err:       # no credentials to renew with
        Client(server.url, token="not-a-token").models()
    assert err.value.status == 401


@pytest.mark.r
def test_csv_body_posted_directly(server):
    csv_text = "wt,hp,cyl\n2.62,110,6\n3.215,245,8\n"
    r = server.post("/models/cars/predict", auth=SCORER, data=csv_text, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == server.predict("cars", CARS_ROWS, auth=SCORER).json()["predictions"]
    r = server.post("/models/cars/predict", auth=SCORER, data="wt,hp,cyl\n2.62,fast,6\n",
                    headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.status_code == 422 and r.json()["error"]["column"] == "hp" and '"fast"' in r.json()["error"]["message"]
    r = server.post("/models/cars/predict", auth=SCORER, data="wt,hp,cyl\n2.62,NA,6\n",
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "null_value"
    r = server.post("/models/cars/predict", auth=SCORER, data="wt,hp,cyl\n2.62,110\n",
                    headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and "line 2" in r.json()["error"]["message"]
    assert Client(server.url, *SCORER).predict_csv("iris", "Sepal.Length,Sepal.Width,Petal.Length,Petal.Width\n"
                                                           "5.1,3.5,1.4,0.2\n")["predictions"] == ["setosa"]


@pytest.mark.r
def test_rbridge_predict_command(server, tmp_path):
    (tmp_path / "cars.csv").write_text("wt,hp,cyl\n2.62,110,6\n3.215,245,8\n")
    (tmp_path / "cars.json").write_text(json.dumps(CARS_ROWS))
    expected = server.predict("cars", CARS_ROWS, auth=SCORER).json()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RB_", "RBRIDGE_"))}
    cmd = [sys.executable, "-m", "bridge", "predict", "--model", "cars"]
    out = subprocess.run(cmd + ["--url", server.url, "--user", SCORER[0], "--password-stdin",
                                str(tmp_path / "cars.csv")], input=SCORER[1] + "\n", capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    out = subprocess.run(cmd + [str(tmp_path / "cars.json")], capture_output=True, text=True, timeout=60,
                         env={**env, "RB_URL": server.url, "RB_USER": SCORER[0], "RB_PASSWORD": SCORER[1]})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    out = subprocess.run(cmd[:-1] + ["nope", str(tmp_path / "cars.json")], capture_output=True, text=True,
                         timeout=60, env={**env, "RB_URL": server.url, "RB_USER": SCORER[0],
                                          "RB_PASSWORD": SCORER[1]})
    assert out.returncode == 1 and "unknown_model" in out.stderr


# -- token renewal, against a server whose signing key the test knows ------------------------------
@pytest.fixture(scope="module")
def keyed_server(small_models, tmp_path_factory):
    models = copy_models(small_models, tmp_path_factory.mktemp("keyed-models"), ["cars"])
    with Server(models, tmp_path_factory.mktemp("keyed"), "--workers", "1",
                env={"RBRIDGE_SIGNING_KEY": SIGNING_KEY}) as s:
        yield s


def _expired_token(server, name: str, monkeypatch) -> str:
    """A token signed with the server's key an hour ago, with a lifetime of a minute."""
    from bridge import auth
    from bridge.users import UserStore

    store = UserStore(server.users)
    with monkeypatch.context() as m:
        m.setattr(auth, "time", types.SimpleNamespace(time=lambda: time.time() - 3600, monotonic=time.monotonic))
        return auth.Authenticator(store, [SIGNING_KEY.encode()], 60).issue(store.get(name))["access_token"]


def _recording(client: Client) -> list:
    calls = []
    send = client.session.request

    def request(method, url, **kw):
        response = send(method, url, **kw)
        calls.append((url.removeprefix(client.url), response.status_code))
        return response
    client.session.request = request
    return calls


@pytest.mark.r
def test_expired_token_is_refreshed_or_signed_in_again(keyed_server, monkeypatch):
    client = Client(keyed_server.url, *SCORER)
    calls = _recording(client)
    assert client.predict("cars", CARS_ROWS)
    assert [c[0] for c in calls] == ["/login", "/models/cars/predict"]
    offers_refresh = client._refresh_token is not None

    calls.clear()
    client._token, client._renew_at = _expired_token(keyed_server, SCORER[0], monkeypatch), float("inf")
    assert client.predict("cars", CARS_ROWS)
    renewal = "/login/refresh" if offers_refresh else "/login"
    assert calls == [("/models/cars/predict", 401), (renewal, 200), ("/models/cars/predict", 200)]

    calls.clear()                                   # a refresh token the server refuses: sign in
    client._token, client._renew_at = _expired_token(keyed_server, SCORER[0], monkeypatch), float("inf")
    client._refresh_token = "revoked" if offers_refresh else None
    assert client.predict("cars", CARS_ROWS)
    assert calls[-2:] == [("/login", 200), ("/models/cars/predict", 200)]

    calls.clear()                                   # renewed ahead of expiry, without a 401
    client._renew_at = time.time() - 1
    assert client.models()
    assert [c[1] for c in calls] == [200, 200] and calls[-1][0] == "/models"
