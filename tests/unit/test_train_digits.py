"""The digits example's training (scripts/train_python_models.py, train_digits): it runs with a
fixed seed and no download, its ONNX export answers within 1e-6 of scikit-learn's predict_proba
(the function refuses to write otherwise; checked again here), and the shipped models/digits.*
and tests/fixtures/digits are what it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skl2onnx", reason="skl2onnx (the test extra) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the python-models extra is not installed")

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("train_python_models", ROOT / "scripts" / "train_python_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_digits_exports_onnx_within_1e6_of_scikit_learn(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits
    script = _script()
    path = script.train_digits(tmp_path, tmp_path / "fixtures")
    assert path == tmp_path / "digits.onnx"
    assert json.loads((tmp_path / "digits.json").read_text()) == json.loads((ROOT / "models" / "digits.json").read_text())
    digits = load_digits()
    fresh = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shipped = ort.InferenceSession(str(ROOT / "models" / "digits.onnx"), providers=["CPUExecutionProvider"])
    x = digits.data.astype(np.float64)
    (fresh_labels, fresh_proba), (shipped_labels, _) = fresh.run(None, {"pixels": x}), shipped.run(None, {"pixels": x})
    assert (fresh_labels == shipped_labels).all()
    assert (fresh_labels == digits.target).mean() > 0.95
    np.testing.assert_allclose(fresh_proba.sum(axis=1), 1, atol=1e-12)
    # the same pipeline fitted here, the script's way: scikit-learn's own predict_proba
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x_train, _, y_train, _ = train_test_split(digits.data, digits.target, test_size=0.25,
                                              random_state=script.SEED, stratify=digits.target)
    own = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000)).fit(x_train, y_train)
    assert np.abs(fresh_proba - own.predict_proba(x)).max() < 1e-6
    for png in sorted((ROOT / "tests" / "fixtures" / "digits").glob("*.png")):
        made = tmp_path / "fixtures" / png.name
        assert np.array_equal(np.asarray(Image.open(made)), np.asarray(Image.open(png))), png.name
