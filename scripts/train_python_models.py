"""Train the example Python models into models/ (fixed seeds, no download):

    .venv/bin/python scripts/train_python_models.py [MODELS_DIR]

faq: matches a question about R Bridge to the closest of its FAQs (TF-IDF + logistic regression
in one scikit-learn Pipeline), answering the top 3 with scores: models/faq.joblib + faq.json.
Each FAQ is its canonical question (the class label) and paraphrases of it, written here.

digits: an image classifier on scikit-learn's bundled 8x8 digits (StandardScaler + logistic
regression), exported to ONNX with skl2onnx in double precision, so that onnxruntime answers
within 1e-6 of scikit-learn's predict_proba (checked here: the script fails otherwise); scores
PNG/JPEG uploads: models/digits.onnx + digits.json (its "image" block, top_k 3), and a few PNGs
of held-out digits in tests/fixtures/digits (written when MODELS_DIR is ./models).
The convention of the images: the dataset's digits are 0 (background) to 16 (ink), bright ink
on black. People draw and scan dark ink on white, so the PNGs are dark on white and the "image"
block says "invert": true (255 - v) and "range": [0, 16] (0..255 -> 0..16): an upload of a digit
drawn dark on white, of any size (resized to 8x8 with a box filter), reads as the training data did.

One function per model, so that other examples can sit beside `train_faq`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")       # 0.1 s on one thread; minutes on a busy machine otherwise
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
DIGIT_FIXTURES = ROOT / "tests" / "fixtures" / "digits"

# canonical question (the label the model answers) -> paraphrases a user might type
FAQS = {
    "How do I install R Bridge?": [
        "how to install rbridge", "what do I need to set up the bridge", "installation steps please",
        "pip install rbridge what else is needed"],
    "How do I serve my R model?": [
        "I have an rds file, how do I put it online", "start serving a saved R model",
        "how can I expose my saveRDS model as an API", "run rbridge serve with my model"],
    "How do I serve a scikit-learn or ONNX model?": [
        "can I serve python models too", "serving a joblib pipeline", "does it run onnx files",
        "put my sklearn model next to the R ones"],
    "How do I call a model's predict endpoint?": [
        "what does a prediction request look like", "POST to predict example",
        "how to send rows to the model", "curl example for scoring"],
    "How do I create an API key?": [
        "generate a key for my application", "how do I get an api token",
        "make a new X-API-Key", "where do keys come from"],
    "How do I add a user?": [
        "create a new account on the server", "add a scorer login", "set up users and passwords",
        "how to give my colleague access"],
    "Which roles are there?": [
        "what is the difference between scorer publisher and admin", "what can a publisher do",
        "list of permissions", "who may publish models"],
    "How do I publish a new model version?": [
        "upload a new version of my model", "replace the model without restarting",
        "PUT a model over HTTP", "deploy an updated rds"],
    "How do I roll back to an earlier version?": [
        "undo the last publish", "go back to the previous model", "restore an old version",
        "the new model is bad, revert it"],
    "Does the server reload models automatically?": [
        "hot reload when files change", "do I need to restart after copying a model",
        "is the models folder watched", "pick up new files without downtime"],
    "How many workers does the server start?": [
        "how is the pool sized", "number of worker processes", "set the worker count",
        "does it use all my cores"],
    "What happens when a worker crashes?": [
        "a worker died during a request", "is a crashed process restarted",
        "segfault in R what then", "are requests retried after a crash",
        "my worker process keeps dying"],
    "How do I set a timeout for slow models?": [
        "my model takes too long", "change the request time limit",
        "504 timeout what can I do", "per model timeout setting"],
    "How do I limit a worker's memory?": [
        "workers use too much ram", "recycle a worker above some memory",
        "max worker memory option", "out of memory killed worker"],
    "What does a 422 error mean?": [
        "why is my input rejected", "invalid input error column", "unprocessable entity response",
        "wrong type in a column error"],
    "What does a 503 error mean?": [
        "service unavailable answer", "model not loaded error", "the server says unavailable",
        "why do I get 503"],
    "What does a 429 error mean?": [
        "too many requests", "rate limited by the server", "throttling error", "slow down response"],
    "How do I describe the input columns in <name>.json?": [
        "write a schema for my model", "declare column types", "factor levels in the json file",
        "schema columns example"],
    "How do I get class probabilities?": [
        "predict_proba instead of labels", "return probabilities per class",
        "type prob in predict args", "scores for each class"],
    "How does batching work?": [
        "are requests merged", "micro batching settings", "max batch rows",
        "combine several requests into one call"],
    "Where are the metrics?": [
        "prometheus endpoint", "how do I monitor the server", "scrape metrics",
        "latency histograms"],
    "How do I check that a model loads before serving it?": [
        "test a model file first", "rbridge check command", "validate my rds",
        "dry run a model"],
    "How do I enable TLS?": [
        "serve over https", "certificates for the server", "ssl setup", "encrypt traffic"],
    "How do I run R Bridge in a container?": [
        "docker image", "podman run the bridge", "build the container image", "containerfile"],
    "How do I deploy on Kubernetes?": [
        "helm or manifests for k8s", "run it in a cluster", "kubernetes deployment yaml",
        "aks deployment"],
    "Is there an Open Inference Protocol endpoint?": [
        "v2 infer route", "kserve compatible api", "tritonclient support", "v2 models ready"],
    "Where is the OpenAPI description?": [
        "swagger ui", "openapi json document", "api documentation page", "generate a client"],
    "Are secrets kept out of the logs?": [
        "do logs show passwords", "is the api key logged", "redaction of tokens",
        "security of the access log"],
    "Can I load pickles safely?": [
        "is joblib loading dangerous", "pickle security", "who may upload a pkl",
        "why prefer onnx"],
    "How do I see which models are loaded?": [
        "list the models", "GET models", "which versions are served", "model status page"],
}


def train_faq(models_dir: Path) -> Path:
    """The FAQ matcher: models_dir/faq.joblib and faq.json (top_k 3)."""
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts, labels = [], []
    for question, paraphrases in FAQS.items():
        for text in [question, *paraphrases]:
            texts.append(text)
            labels.append(question)
    model = Pipeline([
        ("tfidf", TfidfVectorizer(stop_words="english", ngram_range=(1, 2), sublinear_tf=True)),
        ("classify", LogisticRegression(C=20.0, max_iter=2000, random_state=0)),
    ]).fit(texts, labels)
    # Only for introspection (scikit-learn says it may be removed before pickling); a set, whose
    # order changes from run to run, so without it the same seeds write the same bytes.
    model.named_steps["tfidf"].stop_words_ = None
    path = models_dir / "faq.joblib"
    joblib.dump(model, path, compress=3)
    (models_dir / "faq.json").write_text(json.dumps({
        "description": "Matches a question about R Bridge to its closest FAQs (TF-IDF + logistic "
                       "regression); answers the best 3 with scores.",
        "schema": {"columns": [{"name": "question", "type": "character",
                                "description": "the user's question, in English"}]},
        "top_k": 3,
    }, indent=2) + "\n")
    return path


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


def train_digits(models_dir: Path, fixtures: Path | None = None) -> Path:
    """The digit classifier: models_dir/digits.onnx and digits.json (and PNGs in `fixtures`)."""
    import numpy as np
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

    (models_dir / "digits.onnx").write_bytes(blob)
    (models_dir / "digits.json").write_text(json.dumps(DIGITS_JSON, indent=2) + "\n")
    if fixtures is not None:
        fixtures.mkdir(parents=True, exist_ok=True)
        for d in FIXTURE_DIGITS:
            i = next(int(i) for i, x, y in zip(i_test, x_test, y_test)
                     if y == d and pipeline.predict(x[None])[0] == d)
            path = fixtures / f"digit-{d}.png"
            drawn(digits.images[i]).save(path, optimize=True)
        big = fixtures / "digit-7-large.png"         # the same 7 at 32 x 32: the server resizes it
        drawn(digits.images[next(int(i) for i, y in zip(i_test, y_test) if y == 7)]).resize(
            (32, 32), Image.Resampling.NEAREST).save(big, optimize=True)
    print(f"digits: accuracy {pipeline.score(x_test, y_test):.3f} on held-out images, ONNX within "
          f"{gap:.1e} of scikit-learn")
    return models_dir / "digits.onnx"


def drawn(image: np.ndarray):
    """A dataset image (8x8, 0..16, bright ink) as a person draws it: dark ink on white, 8 bits."""
    import numpy as np
    from PIL import Image
    return Image.fromarray(np.rint(255 - image * (255 / 16)).astype(np.uint8), "L")


def main(argv: list[str]) -> int:
    models_dir = Path(argv[0]) if argv else ROOT / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    fixtures = DIGIT_FIXTURES if models_dir.resolve() == (ROOT / "models").resolve() else None
    for train in (train_faq, lambda d: train_digits(d, fixtures)):
        path = train(models_dir)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
