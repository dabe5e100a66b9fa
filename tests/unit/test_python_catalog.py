"""Python models without a server: the catalogue picks the kind by the file, top_k ranks a table,
Python models refuse extra columns, and PySession derives schemas and answers like the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rbridge.errors import InvalidInput
from rbridge.gateway.views_predict import render
from rbridge.models import catalog
from rbridge.pool import protocol
from rbridge.schema import Schema


def test_the_file_says_the_kind_and_two_model_files_fail_that_name_only(tmp_path):
    (tmp_path / "a.rds").write_bytes(b"x")
    (tmp_path / "b.joblib").write_bytes(b"x")
    (tmp_path / "c.onnx").write_bytes(b"x")
    (tmp_path / "d.pkl").write_bytes(b"x")
    (tmp_path / "d.onnx").write_bytes(b"x")
    (tmp_path / "e.joblib").write_bytes(b"x")
    (tmp_path / "e.R").write_text("score <- function(model, newdata) 1")
    (tmp_path / "notes.txt").write_text("not a model")
    entries = catalog.scan(tmp_path)
    assert sorted(entries) == ["a", "b", "c", "d", "e"]
    assert {n: e.spec.kind for n, e in entries.items() if e.spec} == {"a": "r", "b": "sklearn", "c": "onnx"}
    assert entries["d"].spec is None and "d.pkl and d.onnx are both there" in entries["d"].error
    assert entries["e"].spec is None and "e.R scores R models" in entries["e"].error


@pytest.mark.parametrize("top_k, ok", [(3, True), (1, True), (0, False), (2.5, False), (True, False)])
def test_top_k_is_a_whole_number_of_classes(tmp_path, top_k, ok):
    (tmp_path / "m.joblib").write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps({"top_k": top_k}))
    entry = catalog.read_entry(tmp_path, "m")
    if ok:
        assert entry.spec.top_k == top_k
    else:
        assert entry.spec is None and "top_k must be a whole number" in entry.error


def test_top_k_answers_the_best_classes_first_ties_in_class_order():
    out = protocol.Output("table", ["a", "b", "c"], [np.array([0.2, 0.5]), np.array([0.5, 0.25]),
                                                      np.array([0.3, 0.25])])
    assert render(out, 2) == [[{"label": "b", "score": 0.5}, {"label": "c", "score": 0.3}],
                              [{"label": "a", "score": 0.5}, {"label": "b", "score": 0.25}]]
    assert render(out) == [{"a": 0.2, "b": 0.5, "c": 0.3}, {"a": 0.5, "b": 0.25, "c": 0.25}]


def test_python_models_refuse_a_column_they_do_not_take():
    columns = [{"name": "x", "type": "numeric"}]
    body = {"data": [{"x": 1.0, "y": 2.0}]}
    assert list(Schema(columns).encode(body, 10)[0]) == ["x"]             # R: ignored
    with pytest.raises(InvalidInput) as err:
        Schema(columns, extra_ok=False).encode(body, 10)
    assert err.value.code == "unknown_column" and "'y'" in err.value.message


def _part(columns: dict, nrows: int) -> protocol.Part:
    return protocol.Part("r1", nrows, columns)


def test_pysession_schema_and_answers_from_a_dataframe_pipeline(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from rbridge.worker.pysession import PySession
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "k": ["u", "v", "u", "v", "u", "v"]})
    y = ["no", "no", "no", "yes", "yes", "yes"]
    model = Pipeline([("pre", ColumnTransformer([("k", OneHotEncoder(), ["k"])], remainder="passthrough")),
                      ("clf", LogisticRegression(random_state=0))]).fit(frame, y)
    joblib.dump(model, tmp_path / "m.joblib")
    spec = protocol.ModelSpec("m", str(tmp_path / "m.joblib"), None, "1", "0" * 64,
                              {"method": "predict_proba"}, None, kind="sklearn")
    session = PySession()
    info = session.load(spec)
    assert info.ok, info.error
    assert [(c["name"], c["type"], c["levels"], c["na"]) for c in info.schema] == \
        [("x", "numeric", None, False), ("k", "character", ["u", "v"], False)]
    cols, n = Schema(info.schema, extra_ok=False).encode({"data": [{"x": 2.5, "k": "v"}, {"x": 0.5, "k": "u"}]}, 10)
    (out,), merged = session.score("m", [_part(cols, n)])
    assert out.kind == "table" and out.names == ["no", "yes"]
    np.testing.assert_array_equal(np.column_stack(out.values),
                                  model.predict_proba(pd.DataFrame({"x": [2.5, 0.5], "k": ["v", "u"]})))


def test_pysession_refuses_what_a_python_model_cannot_use(tmp_path):
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.linear_model import LinearRegression
    from rbridge.worker.pysession import PySession
    joblib.dump(LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0]), tmp_path / "m.joblib")

    def load(predict_args=None, schema=None, packages=()):
        spec = protocol.ModelSpec("m", str(tmp_path / "m.joblib"), None, "1", "0" * 64, predict_args or {},
                                  schema, list(packages), kind="sklearn")
        return PySession().load(spec)
    assert "does not name its input columns" in load().error          # fitted on a bare array
    named = [{"name": n, "type": "numeric"} for n in "abc"]
    assert load(schema=named).ok
    assert "has no predict_proba()" in load({"method": "predict_proba"}, named).error
    assert 'takes only "method"' in load({"type": "prob"}, named).error
    assert "packages lists R packages" in load(schema=named, packages=["splines"]).error
    assert "is date" in load(schema=[{"name": "a", "type": "date"}]).error


def test_a_models_manifest_may_fetch_every_kind_of_model_file():
    from rbridge.models import fetch
    assert all(fetch.NAME_RE.match(f"credit{ext}") for ext in catalog.EXTS)
    assert not fetch.NAME_RE.match("credit.py") and not fetch.NAME_RE.match(".credit.joblib/../x")


def test_pysession_merges_parts_of_one_shape_and_answers_each_as_alone(tmp_path):
    pytest.importorskip("sklearn")
    import joblib
    from sklearn.linear_model import LinearRegression
    from rbridge.worker.pysession import PySession
    model = LinearRegression().fit([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])
    joblib.dump(model, tmp_path / "m.joblib")
    spec = protocol.ModelSpec("m", str(tmp_path / "m.joblib"), None, "1", "0" * 64, {},
                              [{"name": "x", "type": "numeric"}], kind="sklearn")
    session = PySession()
    assert session.load(spec).ok
    parts = [_part({"x": ("numeric", np.array([float(i), 10.0]))}, 2) for i in range(3)]
    outs, merged = session.score("m", parts)
    alone = [model.predict([[float(i)], [10.0]]).tolist() for i in range(3)]
    assert merged and [o.values[0].tolist() for o in outs] == alone
    odd = _part({"x": ("character", ["a"])}, 1)        # another shape: scored alone, its own error
    outs, merged = session.score("m", [parts[0], odd])
    assert not merged and outs[0].values[0].tolist() == alone[0]
    assert outs[1]["status"] == 422 and outs[1]["error"]["code"] == "model_error"
