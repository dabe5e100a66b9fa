#!/usr/bin/env python3
"""The image example: a digit classifier on scikit-learn's bundled 8x8 digits, as ONNX.

    .venv/bin/python scripts/train_digits.py [--models models] [--fixtures tests/fixtures/digits]

Writes models/digits.onnx (a StandardScaler + LogisticRegression pipeline exported with skl2onnx,
in double precision, so that onnxruntime answers within 1e-6 of scikit-learn's predict_proba:
checked here, the script fails otherwise), models/digits.json (its "image" block and top_k), and a
few PNGs of held-out digits for the tests and the README. Fixed seed, no download: the data ship
with scikit-learn.

The convention of the images: scikit-learn's digits are 8x8, 0 (background) to 16 (ink), bright
ink on black. People draw and scan dark ink on white, so the PNGs here are dark on white and the
model's "image" block says `"invert": true` (255 - v) and `"range": [0, 16]` (0..255 -> 0..16): an
upload of a digit drawn dark on white, of any size (resized to 8x8 with a box filter), reads as the
training data did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")       # 0.1 s on one thread; minutes on a busy machine otherwise
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 16
FIXTURE_DIGITS = (0, 3, 7, 8)       # one held-out image of each becomes tests/fixtures/digits/digit-<d>.png
DIGITS_JSON = {
    "version": "1",
    "description": "Handwritten digit (0-9) from a PNG or JPEG, drawn dark on white: scikit-learn's 8x8 "
                   "digits, StandardScaler + LogisticRegression, run by onnxruntime",
    "top_k": 3,
    "image": {"size": [8, 8], "mode": "L", "invert": True, "range": [0, 16], "layout": "flat",
              "dtype": "float64", "resample": "box", "max_images": 16},
}


def train_digits(models: Path, fixtures: Path | None = None) -> dict:
    """Train, export, check and write the digits model (and the PNGs); returns what it measured."""
    from PIL import Image
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import onnxruntime as ort

    digits = load_digits()
    x_train, x_test, y_train, y_test, _, i_test = train_test_split(
        digits.data, digits.target, np.arange(len(digits.target)), test_size=0.25, random_state=SEED,
        stratify=digits.target)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    pipeline.fit(x_train, y_train)
    onx = to_onnx(pipeline, initial_types=[("pixels", DoubleTensorType([None, 64]))],
                  options={id(pipeline.steps[-1][1]): {"zipmap": False}}, target_opset=17)
    blob = onx.SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    labels, proba = session.run(None, {"pixels": x_test.astype(np.float64)})
    gap = float(np.abs(proba - pipeline.predict_proba(x_test)).max())
    if gap > 1e-6 or not (labels == pipeline.predict(x_test)).all():
        raise SystemExit(f"the ONNX export differs from scikit-learn by {gap:g} (more than 1e-6)")

    models.mkdir(parents=True, exist_ok=True)
    (models / "digits.onnx").write_bytes(blob)
    (models / "digits.json").write_text(json.dumps(DIGITS_JSON, indent=2) + "\n")
    written = []
    if fixtures is not None:
        fixtures.mkdir(parents=True, exist_ok=True)
        for d in FIXTURE_DIGITS:
            i = next(int(i) for i, x, y in zip(i_test, x_test, y_test)
                     if y == d and pipeline.predict(x[None])[0] == d)
            path = fixtures / f"digit-{d}.png"
            drawn(digits.images[i]).save(path, optimize=True)
            written.append(path.name)
        big = fixtures / "digit-7-large.png"         # the same 7 at 32 x 32: the server resizes it
        drawn(digits.images[next(int(i) for i, y in zip(i_test, y_test) if y == 7)]).resize(
            (32, 32), Image.Resampling.NEAREST).save(big, optimize=True)
        written.append(big.name)
    return {"accuracy": float(pipeline.score(x_test, y_test)), "onnx_vs_sklearn": gap,
            "bytes": len(blob), "fixtures": written}


def drawn(image: np.ndarray):
    """A dataset image (8x8, 0..16, bright ink) as a person draws it: dark ink on white, 8 bits."""
    from PIL import Image
    return Image.fromarray(np.rint(255 - image * (255 / 16)).astype(np.uint8), "L")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "fixtures" / "digits")
    args = parser.parse_args(argv)
    out = train_digits(args.models, args.fixtures)
    print(f"digits: accuracy {out['accuracy']:.3f} on held-out images, ONNX within {out['onnx_vs_sklearn']:.1e} "
          f"of scikit-learn, {out['bytes']} bytes; fixtures {', '.join(out['fixtures'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
