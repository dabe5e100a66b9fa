"""The management routes alone (no R): roles, a read-only models folder, malformed uploads."""

from __future__ import annotations

import base64
import os

import pytest

from gateway_fakes import FakePool, fake_registry
from rbridge import settings as settings_mod
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator
from rbridge.gateway.users import UserStore
from rbridge.models.reload import Reloader
from rbridge.models.versions import VersionStore
from serverproc import ADMIN, PUBLISHER, SCORER, make_users


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


@pytest.fixture
def client(tmp_path):
    s = settings_mod.load({"users": str(tmp_path / "users.json"), "models": str(tmp_path / "models"),
                           "max_model_bytes": "4096"}, env={})
    make_users(s.users)
    (tmp_path / "models").mkdir()
    pool, registry = FakePool(), fake_registry(s)
    reloader = Reloader(registry, pool, 0, VersionStore(s.models, s.keep_versions))
    return create_app(s, registry, pool, Authenticator(UserStore(s.users), [b"k" * 32], 3600), reloader).test_client()


def upload(client, data, user=PUBLISHER, name="m"):
    return client.put(f"/models/{name}", data=data, headers=basic(user), content_type="multipart/form-data")


def test_publisher_sits_between_scorer_and_admin(client):
    assert upload(client, {}, user=SCORER).status_code == 403
    assert "needs a publisher" in upload(client, {}, user=SCORER).get_json()["error"]["message"]
    assert client.get("/models/cars/versions", headers=basic(SCORER)).status_code == 403
    assert client.get("/models/cars/versions", headers=basic(PUBLISHER)).status_code == 200
    assert client.get("/models/cars/versions", headers=basic(ADMIN)).status_code == 200
    assert client.post("/models/cars/predict", json={"data": [{"wt": 1, "cyl": "4", "note": None, "n": 1,
                                                               "flag": True}]},
                       headers=basic(PUBLISHER)).status_code == 200
    for path in ("/status", "/metrics", "/dashboard/data"):
        assert client.get(path, headers=basic(PUBLISHER)).status_code == 403, path
    assert client.post("/admin/reload", headers=basic(PUBLISHER)).status_code == 403


def test_uploads_are_checked_before_anything_loads(client):
    from io import BytesIO
    r = upload(client, {"script": (BytesIO(b"x"), "m.R")})
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "no_model"
    r = upload(client, {"model": (BytesIO(b"x"), "m.rds"), "other": (BytesIO(b"x"), "o")})
    assert r.status_code == 400 and "other" in r.get_json()["error"]["message"]
    r = upload(client, {"model": (BytesIO(b"x" * 5000), "m.rds")})
    assert r.status_code == 413 and "--max-model-bytes" in r.get_json()["error"]["message"]
    r = upload(client, {"model": (BytesIO(b"x"), "m.rds")}, name="bad name!")
    assert r.status_code == 400
    r = client.put("/models/m", data=b"raw", headers=basic(PUBLISHER), content_type="application/octet-stream")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "not_multipart"


def test_a_read_only_models_folder_answers_409_saying_why(client, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    for r in (upload(client, {}), client.delete("/models/cars", headers=basic(PUBLISHER)),
              client.post("/models/cars/versions/1/activate", headers=basic(PUBLISHER))):
        assert r.status_code == 409
        assert r.get_json()["error"]["code"] == "read_only" and "read-only" in r.get_json()["error"]["message"]
