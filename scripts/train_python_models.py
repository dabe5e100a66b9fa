"""Train the example Python models into models/ (fixed seeds, no download):

    .venv/bin/python scripts/train_python_models.py [MODELS_DIR]

faq: matches a question about R Bridge to the closest of its FAQs (TF-IDF + logistic regression
in one scikit-learn Pipeline), answering the top 3 with scores: models/faq.joblib + faq.json.
Each FAQ is its canonical question (the class label) and paraphrases of it, written here.
One function per model, so that other examples can sit beside `train_faq`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def main(argv: list[str]) -> int:
    models_dir = Path(argv[0]) if argv else ROOT / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for train in (train_faq,):
        path = train(models_dir)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
