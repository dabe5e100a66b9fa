"""The gateway's side of image models, against a fake pool, on the fast path and on Flask's:
which Content-Types go to which model (415 otherwise), the multipart body (werkzeug's parser),
the caps on images and bytes (413 before the pool sees anything), auth, the ranked answer,
and the OpenAPI document of an image model."""

from __future__ import annotations

import numpy as np
import pytest

from rbridge import settings as settings_mod
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator
from rbridge.gateway.users import UserStore
from rbridge.models.catalog import Entry, image_config
from rbridge.models.registry import Registry
from rbridge.pool import protocol
from gateway_fakes import CARS, FakePool
from serverproc import SCORER, make_users

IMAGE = image_config({"size": [8, 8], "mode": "L", "layout": "flat", "max_images": 3, "max_bytes": 1000},
                     "digits.json: image")
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40        # the gateway does not decode: any bytes will do here


class ImagePool(FakePool):
    """Scores an image part with three class scores that depend on each file's length."""

    def predict(self, model, part, timeout, encoding=None):
        if model == "cars":
            return super().predict(model, part, timeout, version)
        self.sent.append((model, part))
        sizes = np.array([len(f) for f in part.columns["image"][1]], np.float64)
        return _Job(protocol.Output("table", ["a", "b", "c"], [sizes / 100, 1 - sizes / 100, np.full(len(sizes), 0.5)]))


class _Job:
    def __init__(self, output):
        self.output, self.version, self.slot = output, "v1", 0


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    return make_users(tmp_path_factory.mktemp("users") / "users.json")     # argon2: once, not per test


@pytest.fixture(params=[True, False], ids=["fast-path", "flask"])
def client_pool(users_file, request):
    s = settings_mod.load({"users": str(users_file), "max_body": "20000"}, env={})
    entries = {"cars": Entry("cars", protocol.ModelSpec("cars", "/x/cars.rds", None, "v1", "0" * 64, {}, None)),
               "digits": Entry("digits", protocol.ModelSpec("digits", "/x/digits.onnx", None, "v1", "0" * 64, {},
                                                            None, kind="onnx", top_k=2, image=IMAGE))}
    registry = Registry(s, entries=entries)
    registry.record(0, [protocol.ModelInfo("cars", "v1", ok=True, schema=CARS),
                        protocol.ModelInfo("digits", "v1", ok=True, schema=None, schema_source="image")])
    pool = ImagePool()
    app = create_app(s, registry, pool, Authenticator(UserStore(s.users), [b"k" * 32], 3600),
                     fast_path=request.param)
    return app.test_client(), pool


def multipart(*parts, boundary="b0undary"):
    """A multipart/form-data body: parts are (field, content type or None, bytes, filename or None)."""
    out = b""
    for field, ctype, body, filename in parts:
        disp = f'Content-Disposition: form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\n{disp}\r\n".encode()
        out += f"Content-Type: {ctype}\r\n".encode() if ctype else b""
        out += b"\r\n" + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(client, body, content_type, model="digits", auth=SCORER):
    return client.post(f"/models/{model}/predict", data=body, content_type=content_type, auth=auth)


def test_one_png_is_one_image_answered_with_its_top_k(client_pool):
    client, pool = client_pool
    r = post(client, PNG + b"x" * 12, "image/png")          # 60 bytes: scores a 0.6, b 0.4, c 0.5
    assert r.status_code == 200, r.json
    assert r.json == {"model": "digits", "version": "v1",
                      "predictions": [[{"label": "a", "score": 0.6}, {"label": "c", "score": 0.5}]]}
    (model, part), = pool.sent
    assert model == "digits" and part.nrows == 1 and part.columns == {"image": ("image", [PNG + b"x" * 12])}


def test_multipart_images_keep_their_order(client_pool):
    client, pool = client_pool
    files = [PNG + b"x" * n for n in (0, 42, 5)]          # 48, 90 and 53 bytes
    body, ctype = multipart(("first", "image/png", files[0], "a.png"), ("second", "image/jpeg", files[1], "b.jpg"),
                            ("first", "image/png", files[2], "c.png"))
    r = post(client, body, ctype)
    assert r.status_code == 200, r.json
    assert [(p[0]["label"], p[0]["score"]) for p in r.json["predictions"]] == [("b", 0.52), ("a", 0.9), ("a", 0.53)]
    assert pool.sent[0][1].columns["image"][1] == files and pool.sent[0][1].nrows == 3


@pytest.mark.parametrize("body, ctype, status, code, words", [
    (b'{"data": [{"x": 1}]}', "application/json", 415, "unsupported_media_type",
     "model 'digits' takes images: send one as image/png or image/jpeg, or several as multipart/form-data "
     "(this request is application/json)"),
    (PNG, "image/gif", 415, "unsupported_media_type", "(this request is image/gif)"),
    (b"", "image/png", 400, "bad_request", "the request has no body"),
    (PNG * 30, "image/png", 413, "image_too_large", "image 1 is 1440 bytes; this model takes images of at most 1000 "
                                                   "bytes (image.max_bytes)"),
    (b"no parts here", "multipart/form-data; boundary=zz", 400, "bad_request", "the multipart body cannot be read"),
    (b"--zz--\r\n", "multipart/form-data", 400, "bad_request", "needs its boundary"),
    (b"--zz--\r\n", "multipart/form-data; boundary=zz", 400, "bad_request", "the multipart body holds no image"),
])
def test_bad_image_requests(client_pool, body, ctype, status, code, words):
    client, pool = client_pool
    r = post(client, body, ctype)
    assert r.status_code == status, r.json
    assert r.json["error"]["code"] == code and words in r.json["error"]["message"], r.json
    assert pool.sent == []


def test_multipart_parts_must_be_images_and_at_most_max_images(client_pool):
    client, pool = client_pool
    body, ctype = multipart(("a", "image/png", PNG, "a.png"), ("b", "text/plain", b"hello", "b.txt"))
    r = post(client, body, ctype)
    assert r.status_code == 415 and r.json["error"]["message"] == (
        "part 2 ('b') is text/plain; every part must be image/png or image/jpeg")
    body, ctype = multipart(("a", "image/png", PNG, "a.png"), ("note", None, b"hello", None))
    r = post(client, body, ctype)
    assert r.status_code == 400 and "part 'note' is a plain field" in r.json["error"]["message"]
    for n in (4, 100):        # just over the cap, and far over it (the parser stops counting)
        body, ctype = multipart(*[("f", "image/png", PNG, f"{i}.png") for i in range(n)])
        r = post(client, body, ctype)
        assert r.status_code == 413 and r.json["error"]["code"] == "too_many_images", r.json
        assert "(3, image.max_images)" in r.json["error"]["message"]
    assert pool.sent == []


def test_body_over_max_body_is_413(client_pool):
    client, pool = client_pool
    r = post(client, PNG * 500, "image/png")
    assert r.status_code == 413 and "--max-body" in r.json["error"]["message"]


def test_images_for_a_model_of_rows_is_415_and_auth_comes_first(client_pool):
    client, pool = client_pool
    r = post(client, PNG, "image/png", model="cars")
    assert r.status_code == 415
    assert r.json["error"]["message"] == ("model 'cars' does not take images; send rows as JSON "
                                          "(application/json) or CSV (text/csv)")
    r = post(client, PNG, "image/png", auth=None)
    assert r.status_code == 401
    r = post(client, PNG, "image/png", model="nope")
    assert r.status_code == 404
    assert pool.sent == []


def test_v2_infer_of_an_image_model_points_to_predict(client_pool):
    client, pool = client_pool
    r = client.post("/v2/models/digits/infer", json={"inputs": []}, auth=SCORER)
    assert r.status_code == 400 and "POST them to /models/digits/predict" in r.json["error"], r.json


def test_openapi_documents_the_image_body(client_pool):
    client, _ = client_pool
    doc = client.get("/openapi.json", auth=SCORER).json
    op = doc["paths"]["/models/digits/predict"]["post"]
    assert set(op["requestBody"]["content"]) == {"image/png", "image/jpeg", "multipart/form-data"}
    assert op["requestBody"]["content"]["image/png"]["schema"]["format"] == "binary"
    assert "415" in op["responses"] and "413" in op["responses"]
    ranked = doc["components"]["schemas"]["digits.Response"]["properties"]["predictions"]
    assert ranked["items"] == {"type": "array", "items": {"$ref": "#/components/schemas/Ranked"}}
    from openapi_spec_validator import validate
    validate(doc)
