"""Image models through a real server (granian, workers, onnxruntime and scikit-learn in them).

The shipped digits example (models/digits.onnx + digits.json) and the same pipeline as a joblib
estimator trained here, scored with PNG and JPEG uploads, one image and several (multipart): each
answer equals onnxruntime's / scikit-learn's own predict_proba, in this process, on the arrays
images.py makes of the same bytes. Bad uploads get the right status and message and the worker
stays up (the next request is 200, from the same worker). Also on Flask's path (CORS on).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("onnxruntime", reason="the python-models extra is not installed")
pytest.importorskip("sklearn", reason="the python-models extra is not installed")
from PIL import Image  # noqa: E402

from rbridge.models.catalog import image_config  # noqa: E402
from rbridge.worker import images  # noqa: E402
from serverproc import ROOT, SCORER, Server  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "digits"
PNGS = sorted(FIXTURES.glob("digit-*.png"))
CONFIG = json.loads((ROOT / "models" / "digits.json").read_text())


def jpeg_of(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """digits (ONNX, shipped), digits_sk (the same pipeline as joblib) and rows (a model of rows)."""
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    d = tmp_path_factory.mktemp("image-models")
    shutil.copy(ROOT / "models" / "digits.onnx", d / "digits.onnx")
    shutil.copy(ROOT / "models" / "digits.json", d / "digits.json")
    digits = load_digits()
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(digits.data, digits.target)
    joblib.dump(est, d / "digits_sk.joblib")
    (d / "digits_sk.json").write_text(json.dumps({**CONFIG, "top_k": 10}))
    rows = LogisticRegression(max_iter=500).fit(digits.data[:, :2], digits.target)
    joblib.dump(rows, d / "rows.joblib")
    (d / "rows.json").write_text(json.dumps({"schema": {"columns": [{"name": "a", "type": "numeric"},
                                                                    {"name": "b", "type": "numeric"}]}}))
    return d


@pytest.fixture(scope="module", params=["fast-path", "flask"])
def server(models, tmp_path_factory, request):
    extra = ("--cors-origins", "https://example.test") if request.param == "flask" else ()
    with Server(models, tmp_path_factory.mktemp("image-server"), "--workers", "1", "--timeout", "20",
                *extra) as s:
        yield s


def expected(name: str, files: list[bytes], models: Path) -> np.ndarray:
    """The model's own predict_proba, in this process, on images.py's arrays of the same bytes."""
    x = images.preprocess(image_config(CONFIG["image"], "digits.json: image"), files)
    if name == "digits":
        import onnxruntime as ort
        session = ort.InferenceSession(str(models / "digits.onnx"), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"pixels": x})[0]
    import joblib
    return joblib.load(models / "digits_sk.joblib").predict_proba(x)


def check(answer: list, proba: np.ndarray, k: int) -> None:
    assert len(answer) == len(proba)
    for ranked, row in zip(answer, proba):
        best = np.argsort(-row, kind="stable")[:k]
        assert [r["label"] for r in ranked] == [str(j) for j in best]
        np.testing.assert_allclose([r["score"] for r in ranked], row[best], rtol=0, atol=1e-12)


def post_image(server, name, body, content_type, auth=SCORER):
    return requests.post(f"{server.url}/models/{name}/predict", data=body, headers={"Content-Type": content_type},
                         auth=auth, timeout=30)


def post_files(server, name, files: list[tuple[str, bytes, str]]):
    return requests.post(f"{server.url}/models/{name}/predict", auth=SCORER, timeout=30,
                         files=[(f"image{i}", f) for i, f in enumerate(files)])


@pytest.mark.parametrize("name, k", [("digits", 3), ("digits_sk", 10)])
def test_one_png_and_one_jpeg_equal_the_models_own_predict_proba(server, models, name, k):
    for png in PNGS:
        data = png.read_bytes()
        for body, ctype in ((data, "image/png"), (jpeg_of(data), "image/jpeg")):
            r = post_image(server, name, body, ctype)
            assert r.status_code == 200, r.text
            check(r.json()["predictions"], expected(name, [body], models), k)
    # the README's example: a 7, drawn dark on white, read as a 7 (also from the 32 x 32 drawing)
    for fixture in ("digit-7.png", "digit-7-large.png"):
        r = post_image(server, name, (FIXTURES / fixture).read_bytes(), "image/png")
        assert r.json()["predictions"][0][0]["label"] == "7", r.json()


def test_multipart_several_images_in_order(server, models):
    blobs = [p.read_bytes() for p in PNGS]
    files = [(p.name, b, "image/png") for p, b in zip(PNGS, blobs)] + [("7.jpg", jpeg_of(blobs[2]), "image/jpeg")]
    for name, k in (("digits", 3), ("digits_sk", 10)):
        r = post_files(server, name, files)
        assert r.status_code == 200, r.text
        assert r.headers["X-Model-Version"] == "1"
        check(r.json()["predictions"], expected(name, [f[1] for f in files], models), k)
    labels = [p[0]["label"] for p in r.json()["predictions"]]
    assert labels == [p.stem.split("-")[1] for p in PNGS] + ["7"]


def _worker_pids(server) -> list:
    return sorted(w["pid"] for w in server.get("/status").json()["workers"])


@pytest.mark.parametrize("what", ["corrupt", "text", "truncated jpeg", "too many pixels", "too many images",
                                  "wrong content type", "json to an image model", "image to a model of rows"])
def test_bad_uploads_get_their_status_and_the_worker_stays_up(server, what):
    png = PNGS[0].read_bytes()
    big = io.BytesIO()
    Image.new("L", (4097, 4097), "white").save(big, "PNG")       # 4097 x 4097 > max_pixels (4096 x 4096)
    pids = _worker_pids(server)
    if what == "corrupt":
        bad = bytearray(png)
        bad[bad.index(b"IDAT") + 6] ^= 0xFF                     # a byte of the compressed pixels
        r = post_image(server, "digits", bytes(bad), "image/png")
        status, code, words = 422, "invalid_image", "image 1 is corrupt or cut short"
    elif what == "text":
        r = post_files(server, "digits", [("a.png", png, "image/png"), ("b.png", b"not an image", "image/png")])
        status, code, words = 422, "invalid_image", "image 2 is not a PNG or JPEG image"
    elif what == "truncated jpeg":
        jpg = jpeg_of(png)
        r = post_image(server, "digits", jpg[:len(jpg) // 2], "image/jpeg")
        status, code, words = 422, "invalid_image", "image 1 is corrupt or cut short"
    elif what == "too many pixels":
        r = post_image(server, "digits", big.getvalue(), "image/png")
        status, code, words = 413, "image_too_large", "image 1 is 4097 x 4097 = 16785409 pixels"
    elif what == "too many images":
        r = post_files(server, "digits", [(f"{i}.png", png, "image/png") for i in range(17)])
        status, code, words = 413, "too_many_images", "17 images is more than this model takes in one request (16"
    elif what == "wrong content type":
        r = post_image(server, "digits", png, "image/gif")
        status, code, words = 415, "unsupported_media_type", "model 'digits' takes images"
    elif what == "json to an image model":
        r = server.post("/models/digits/predict", {"data": [{"a": 1}]}, auth=SCORER)
        status, code, words = 415, "unsupported_media_type", "model 'digits' takes images"
    else:
        r = post_image(server, "rows", png, "image/png")
        status, code, words = 415, "unsupported_media_type", "model 'rows' does not take images"
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"], r.json()
    ok = post_image(server, "digits", png, "image/png")
    assert ok.status_code == 200, ok.text
    assert _worker_pids(server) == pids           # the same worker, not a respawned one


def test_auth_metrics_and_the_model_description(server):
    png = PNGS[0].read_bytes()
    assert post_image(server, "digits", png, "image/png", auth=None).status_code == 401
    assert post_image(server, "digits", png, "image/png", auth=("scorer", "wrong")).status_code == 401
    detail = server.get("/models/digits").json()
    assert detail["state"] == "loaded" and detail["image"]["size"] == [8, 8] and detail["top_k"] == 3
    assert "CPUExecutionProvider" in detail["packages"][0]
    r = post_files(server, "digits", [("a.png", png, "image/png"), ("b.png", png, "image/png")])
    assert r.status_code == 200
    rid = r.headers["X-Request-ID"]
    assert 'rbridge_requests_total{model="digits",status="200"}' in server.get("/metrics").text
    time.sleep(0.2)
    (line,) = [json.loads(ln) for ln in server.log_text().splitlines() if rid in ln and '"rows"' in ln]
    assert line["message"] == "POST /models/digits/predict 200" and line["rows"] == 2 and line["user"] == "scorer"
