"""Python models through a real server and real worker processes: scikit-learn pipelines saved
with joblib, an ONNX export, the FAQ matcher with top_k; bad inputs; a Python-only folder starts
no R; a folder of R and Python models serves both with the same users and keys.

Every model is trained here with fixed seeds; each answer is compared with the model's own
predict/predict_proba in this process (ONNX: with scikit-learn's, to 1e-6).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from serverproc import PUBLISHER, ROOT, SCORER, Server

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")

import joblib  # noqa: E402
import pandas as pd  # noqa: E402

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
QUESTIONS = ["how can I roll back my model", "what is a 422", "can I use onnx", "docker image",
             "how do I make an api key", "my request takes too long", "https"]


def _train_script():
    spec = importlib.util.spec_from_file_location("train_python_models", ROOT / "scripts/train_python_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mixed_pipeline():
    """Numbers, a category and free text, through one ColumnTransformer (fitted on a DataFrame)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame({
        "age": rng.normal(40, 12, n), "visits": rng.integers(0, 20, n),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "note": rng.choice(["great service", "slow delivery", "bad food", "friendly staff", "too expensive"], n)})
    y = np.where(frame.age + 3 * (frame.plan == "pro") > 42, "stays", "leaves")
    y[frame.note.str.contains("slow").to_numpy()] = "complains"
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "visits"]),
                             ("plan", OneHotEncoder(), ["plan"]),
                             ("note", TfidfVectorizer(), "note")])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000, random_state=0))]).fit(frame, y)


def _iris_onnx(path: Path):
    """A scikit-learn iris classifier, and its ONNX export with one input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    data = load_iris()
    y = np.array(data.target_names)[data.target]
    model = Pipeline([("scale", StandardScaler()),
                      ("clf", LogisticRegression(max_iter=1000, random_state=0))]).fit(data.data, y)
    onx = convert_sklearn(model, initial_types=[(c, FloatTensorType([None, 1])) for c in IRIS_COLUMNS],
                          target_opset=17)
    path.write_bytes(onx.SerializeToString())
    return model, data.data


@pytest.fixture(scope="module")
def py_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("pymodels")
    mixed = _mixed_pipeline()
    joblib.dump(mixed, d / "churn.joblib")
    shutil.copy(d / "churn.joblib", d / "churn_proba.pkl")
    (d / "churn_proba.json").write_text(json.dumps({"predict_args": {"method": "predict_proba"}}))
    iris, iris_x = _iris_onnx(d / "iris_onnx.onnx")
    shutil.copy(d / "iris_onnx.onnx", d / "iris_onnx_proba.onnx")
    (d / "iris_onnx_proba.json").write_text(json.dumps({"predict_args": {"method": "predict_proba"}}))
    _train_script().train_faq(d)
    shutil.copy(d / "churn.joblib", d / "twice.joblib")          # two model files for one name
    shutil.copy(d / "iris_onnx.onnx", d / "twice.onnx")
    (d / "broken.joblib").write_bytes(b"not a pickle")
    return {"dir": d, "churn": mixed, "iris": iris, "iris_x": iris_x, "faq": joblib.load(d / "faq.joblib")}


@pytest.fixture(scope="module")
def py_server(py_models, tmp_path_factory):
    # not ready: two models fail on purpose (test_model_files_that_conflict_or_break_fail_only_that_name)
    with Server(py_models["dir"], tmp_path_factory.mktemp("pyserver"), "--workers", "1", wait_ready=False) as s:
        deadline = time.monotonic() + 90
        while any(m["state"] == "loading" for m in s.get("/models").json()["models"]):
            assert time.monotonic() < deadline, s.log_text()[-3000:]
            time.sleep(0.2)
        yield s


def _churn_rows(n: int, seed: int = 11) -> list:
    rng = np.random.default_rng(seed)
    return [{"age": float(rng.normal(40, 12)), "visits": int(rng.integers(0, 20)),
             "plan": str(rng.choice(["basic", "plus", "pro"])),
             "note": str(rng.choice(["great service", "slow delivery", "bad food", "never again", ""]))}
            for _ in range(n)]


def test_pipeline_predictions_equal_its_own(py_server, py_models):
    rows = _churn_rows(25)
    model = py_models["churn"]
    frame = pd.DataFrame(rows)
    labels = py_server.predict("churn", rows)
    assert labels.status_code == 200, labels.text
    assert labels.json()["predictions"] == model.predict(frame).tolist()
    proba = py_server.predict("churn_proba", rows)
    assert proba.status_code == 200, proba.text
    expected = model.predict_proba(frame)
    got = proba.json()["predictions"]
    assert [list(r) for r in got] == [list(model.classes_)] * len(rows)     # keyed by class, in its order
    np.testing.assert_array_equal(np.array([[r[c] for c in model.classes_] for r in got]), expected)


def test_onnx_equals_scikit_learn(py_server, py_models):
    model, x = py_models["iris"], py_models["iris_x"][::7]
    rows = [dict(zip(IRIS_COLUMNS, map(float, r))) for r in x]
    labels = py_server.predict("iris_onnx", rows)
    assert labels.status_code == 200, labels.text
    assert labels.json()["predictions"] == model.predict(x).tolist()
    proba = py_server.predict("iris_onnx_proba", rows).json()["predictions"]
    got = np.array([[r[c] for c in model.classes_] for r in proba])
    np.testing.assert_allclose(got, model.predict_proba(x), rtol=0, atol=1e-6)
    meta = py_server.get("/v2/models/iris_onnx").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert [i["name"] for i in meta["inputs"]] == IRIS_COLUMNS


def test_faq_top_k_is_predict_proba_sorted(py_server, py_models):
    faq = py_models["faq"]
    r = py_server.predict("faq", [{"question": q} for q in QUESTIONS])
    assert r.status_code == 200, r.text
    proba = faq.predict_proba(QUESTIONS)
    for answer, p in zip(r.json()["predictions"], proba):
        best = np.argsort(-p, kind="stable")[:3]
        assert [a["label"] for a in answer] == [faq.classes_[i] for i in best]
        assert [a["score"] for a in answer] == [p[i] for i in best]
    assert r.json()["predictions"][0][0]["label"] == "How do I roll back to an earlier version?"


@pytest.mark.parametrize("model, row, code", [
    ("churn", {"age": 30.0, "visits": 2, "plan": "pro"}, "missing_column"),
    ("churn", {"age": 30.0, "visits": 2, "plan": "pro", "note": "ok", "extra": 1}, "unknown_column"),
    ("churn", {"age": "thirty", "visits": 2, "plan": "pro", "note": "ok"}, "wrong_type"),
    ("churn", {"age": 30.0, "visits": 2, "plan": "gold", "note": "ok"}, "unknown_level"),
    ("churn", {"age": None, "visits": 2, "plan": "pro", "note": "ok"}, "null_value"),
    ("faq", {"question": 42}, "wrong_type"),
    ("iris_onnx", {"sepal_length": 5.0, "sepal_width": 3.0, "petal_length": 1.0}, "missing_column"),
])
def test_bad_input_is_422_naming_the_column(py_server, model, row, code):
    r = py_server.predict(model, [row])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert py_server.predict("churn", _churn_rows(1)).status_code == 200     # the worker lives on


def test_model_files_that_conflict_or_break_fail_only_that_name(py_server):
    models = {m["name"]: m for m in py_server.get("/models").json()["models"]}
    assert models["twice"]["state"] == "failed"
    assert "twice.joblib and twice.onnx" in models["twice"]["error"]
    assert models["broken"]["state"] == "failed" and "joblib could not load it" in models["broken"]["error"]
    assert {n for n, m in models.items() if m["state"] == "loaded"} == \
        {"churn", "churn_proba", "iris_onnx", "iris_onnx_proba", "faq"}
    assert models["iris_onnx"]["kind"] == "onnx" and models["churn_proba"]["kind"] == "sklearn"
    assert requests.get(py_server.url + "/readyz", timeout=10).status_code == 503   # as for an R model


def test_python_only_folder_starts_no_r(py_server):
    workers = py_server.get("/status").json()["workers"]
    assert workers and all(w["pid"] for w in workers)
    for w in workers:
        maps = Path(f"/proc/{w['pid']}/maps").read_text()
        assert "onnxruntime" in maps                     # it is the worker that scores the models
        assert "libR.so" not in maps and "rpy2" not in maps
        assert w["memory"]["rss"] > 0                   # measured like an R worker


def test_python_models_are_served_where_r_cannot_start(py_models, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    for f in ("faq.joblib", "faq.json"):
        shutil.copy(py_models["dir"] / f, d / f)
    with Server(d, tmp_path / "run", "--workers", "1", env={"R_HOME": str(tmp_path / "no-R-here")}) as s:
        r = s.predict("faq", [{"question": "https"}])
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0][0]["label"] == "How do I enable TLS?"


# -- R and Python side by side -----------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_server(py_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    shutil.copy(ROOT / "models/iris_rf.rds", d / "iris_rf.rds")
    shutil.copy(ROOT / "models/iris_rf.json", d / "iris_rf.json")
    for f in ("faq.joblib", "faq.json"):
        shutil.copy(py_models["dir"] / f, d / f)
    (d / "slow_faq.joblib").write_bytes((d / "faq.joblib").read_bytes())
    (d / "slow_faq.json").write_text(json.dumps({"timeout": 0.3, "schema": {"columns": [
        {"name": "question", "type": "character"}]}}))
    with Server(d, tmp_path_factory.mktemp("mixedserver"), "--workers", "2", "--max-requests", "6",
                "--reload-interval", "0") as s:
        yield s, d


IRIS_ROW = {"Sepal.Length": 6.3, "Sepal.Width": 2.9, "Petal.Length": 5.6, "Petal.Width": 1.8}


def test_r_and_python_models_share_users_and_keys(mixed_server):
    from rbridge.gateway import keys
    s, _ = mixed_server
    _, key = keys.create_key(s.users, SCORER[0], "mixed")
    for headers, auth in (({}, SCORER), ({"X-API-Key": key}, None)):
        r = requests.post(f"{s.url}/models/iris_rf/predict", json={"data": [IRIS_ROW]}, auth=auth,
                          headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"] == ["virginica"], r.text
        r = requests.post(f"{s.url}/models/faq/predict", json={"data": [{"question": "docker image"}]},
                          auth=auth, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0][0]["label"] == "How do I run R Bridge in a container?"
    r = requests.post(f"{s.url}/models/faq/predict", json={"data": [{"question": "x"}]},
                      auth=(SCORER[0], "wrong"), timeout=30)
    assert r.status_code == 401
    kinds = {m["name"]: m["kind"] for m in s.get("/models").json()["models"]}
    assert kinds == {"iris_rf": "r", "faq": "sklearn", "slow_faq": "sklearn"}


def test_python_model_timeout_stops_the_worker_and_the_next_request_is_served(mixed_server):
    s, _ = mixed_server
    long_text = " ".join(["how do I publish a new model version and roll it back"] * 40)
    r = s.predict("slow_faq", [{"question": long_text}] * 4000)
    assert r.status_code == 504, r.text[:300]
    assert "longer than 0.3 s" in r.json()["error"]["message"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = s.predict("slow_faq", [{"question": "docker image"}])
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == ["How do I run R Bridge in a container?"]
    assert any(w["last_exit"] and w["last_exit"].startswith("timeout") for w in s.get("/status").json()["workers"])


def test_python_model_workers_recycle_and_reload(mixed_server):
    s, d = mixed_server
    before = sum(w["restarts"] for w in s.get("/status").json()["workers"])
    for _ in range(14):
        r = s.predict("faq", [{"question": "https"}])
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 3
    deadline = time.monotonic() + 60
    while sum(w["restarts"] for w in s.get("/status").json()["workers"]) <= before:
        assert time.monotonic() < deadline, "no worker was recycled after --max-requests"
        time.sleep(0.2)
    config = json.loads((d / "faq.json").read_text())
    (d / "faq.json").write_text(json.dumps({**config, "top_k": 2}))
    summary = s.post("/admin/reload").json()
    assert "faq" in summary["changed"], summary
    r = s.predict("faq", [{"question": "https"}])
    assert r.status_code == 200 and [len(p) for p in r.json()["predictions"]] == [2]
    assert r.json()["predictions"][0][0]["label"] == "How do I enable TLS?"
    assert s.predict("iris_rf", [IRIS_ROW]).json()["predictions"] == ["virginica"]
    metrics = s.get("/metrics").text
    assert 'model="faq"' in metrics and 'model="iris_rf"' in metrics


def test_a_publisher_publishes_a_python_model_and_a_broken_one_changes_nothing(mixed_server, py_models):
    s, d = mixed_server
    onnx = (py_models["dir"] / "iris_onnx.onnx").read_bytes()
    r = requests.put(f"{s.url}/models/iris_py", files={"model": ("iris.onnx", onnx)}, auth=PUBLISHER, timeout=120)
    assert r.status_code == 201, r.text
    assert [c["name"] for c in r.json()["schema"]["columns"]] == IRIS_COLUMNS
    assert (d / "iris_py.onnx").read_bytes() == onnx and not (d / "iris_py.rds").exists()
    model, x = py_models["iris"], py_models["iris_x"][:5]
    rows = [dict(zip(IRIS_COLUMNS, map(float, row))) for row in x]
    assert s.predict("iris_py", rows).json()["predictions"] == model.predict(x).tolist()
    broken = requests.put(f"{s.url}/models/iris_py", files={"model": ("iris.pkl", b"not a pickle")},
                          auth=PUBLISHER, timeout=120)
    assert broken.status_code == 422 and "joblib could not load it" in broken.text, broken.text
    assert s.predict("iris_py", rows).json()["predictions"] == model.predict(x).tolist()
    assert not (d / "iris_py.pkl").exists()
    versions = s.get("/models/iris_py/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1] and versions[0]["files"].keys() == {".onnx"}
