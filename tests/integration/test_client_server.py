"""bridge.client, `rbridge predict` and CSV request bodies: unit tests, then against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import pytest

from rbridge.client import BridgeClientError, Client
from serverproc import ROOT, SCORER, Server, copy_models

CARS_ROWS = [{"wt": 2.62, "hp": 110, "cyl": "6"}, {"wt": 3.215, "hp": 245, "cyl": "8"}]
CARS_SCHEMA = [{"name": "wt", "type": "numeric"}, {"name": "hp", "type": "numeric"},
               {"name": "cyl", "type": "factor", "levels": ["4", "6", "8"]}]
SIGNING_KEY = "k" * 48


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
    assert r.status_code == 200 and r.json()["predictions"] == [None]   # NA in, NA out: as R's predict.lm
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
    cmd = [sys.executable, "-m", "rbridge", "predict", "--model", "cars"]
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
    from rbridge.gateway import auth
    from rbridge.gateway.users import UserStore

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
