"""The Python models of one worker: scikit-learn estimators (joblib/pickle) and ONNX models.

Why one worker hosts both kinds (host.py): a worker loads every model of its `Load`, whatever
the kind, so the pool, its slots, the job queue, timeouts, memory measurement, recycling, crash
retry, reload and batching stay one machinery with one core and memory budget. R starts in a
worker only when an R model is among them; a Python-only folder never starts R nor imports rpy2.
scikit-learn, joblib and onnxruntime are imported when the first model of theirs loads.

Input: the gateway sends the same typed column buffers as for R (rbridge/schema.py checked
them), and `_Inputs` builds what the model takes: a pandas DataFrame for an estimator fitted on
named columns (`feature_names_in_`), a 1-D array of strings for a text pipeline fitted on a
list of texts, a 2-D array otherwise; for ONNX one tensor per input, or the columns stacked
into its single input. Output: like R's, a vector (predict) or a table keyed by class
(predict_proba, decision_function), chosen by `"predict_args": {"method": ...}`.

Pickles run code when they are loaded: only operators and publishers can place model files
(docs/security.md); ONNX files hold no code.

Threading: single-threaded like the rest of the worker; onnxruntime gets one thread per session
(the pool is the parallelism). `time_limit` uses SIGALRM, so it must run in the main thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time

import numpy as np

from rbridge.errors import BridgeError, InvalidInput, ModelError, Unavailable
from rbridge.pool import protocol
from rbridge.worker import batching

log = logging.getLogger("bridge.worker")

METHODS = ("predict", "predict_proba", "decision_function")
TYPES = ("numeric", "integer", "logical", "character", "factor")   # the schema types a Python model takes
INT_NA = np.iinfo(np.int32).min
NO_NA = ("scikit-learn and ONNX models are not given missing values unless <name>.json says "
         "\"na\": true for the column")
_ONNX_TYPES = {"tensor(float)": "numeric", "tensor(double)": "numeric", "tensor(int64)": "integer",
               "tensor(int32)": "integer", "tensor(string)": "character", "tensor(bool)": "logical"}
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": object}
_INSTALL = 'install the extra: pip install "rbridge[python-models]"'


class LoadProblem(Exception):
    """Why a Python model cannot be served (its ModelInfo.error)."""


class PySession:
    def __init__(self):
        self.models: dict[str, _Model] = {}

    def load(self, spec: protocol.ModelSpec) -> protocol.ModelInfo:
        """Load one model; a failure is reported (ok=False), never raised."""
        started = time.perf_counter()
        try:
            _check_options(spec)
            model = _Sklearn(spec) if spec.kind == "sklearn" else _Onnx(spec)
        except LoadProblem as exc:
            return protocol.ModelInfo(spec.name, spec.version, ok=False, error=str(exc))
        self.models[spec.name] = model
        return protocol.ModelInfo(spec.name, spec.version, ok=True, r_class=[model.class_name],
                                  packages=model.packages, schema=model.schema,
                                  schema_source=model.schema_source, kind=spec.kind,
                                  load_seconds=time.perf_counter() - started)

    def score(self, name: str, parts: list) -> tuple[list, bool]:
        """Score the parts, merged into one call when they have one shape (as RSession.score)."""
        model = self.models.get(name)
        if model is None:
            err = Unavailable(f"model '{name}' is not loaded in this worker", code="not_loaded").to_dict()
            return [err] * len(parts), False
        if len(parts) > 1 and batching.one_shape(parts):
            out = _score_safely(model, batching.concat(parts), sum(p.nrows for p in parts))
            if isinstance(out, protocol.Output):
                return batching.split(out, [p.nrows for p in parts]), True
        return [_score_safely(model, p.columns, p.nrows) for p in parts], False

    @contextlib.contextmanager
    def time_limit(self, seconds: float | None):
        """A TimeoutError in the model's code after `seconds` (where Python code runs again:
        a long call into compiled code ends first; the pool's start timeout is the backstop)."""
        if not seconds:
            yield
            return

        def alarm(signum, frame):
            raise TimeoutError(f"stopped after {seconds:g} s")
        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _score_safely(model: "_Model", columns: dict, nrows: int):
    """One call of the model; its exception is this part's error (422), never the worker's end."""
    try:
        return model.score(columns, nrows)
    except BridgeError as exc:
        return exc.to_dict()
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return ModelError(f"the model's {model.method} failed: {type(exc).__name__}: {message}"[:2000]).to_dict()


def _check_options(spec: protocol.ModelSpec) -> None:
    """What <name>.json may say for a Python model."""
    args = spec.predict_args or {}
    if set(args) - {"method"} or args.get("method", "predict") not in METHODS:
        raise LoadProblem('predict_args of a Python model takes only "method", one of '
                          f"{', '.join(METHODS)} (got {args})")
    if spec.packages:
        raise LoadProblem("packages lists R packages to attach; a Python model brings its own imports")
    for col in spec.schema or []:
        if col["type"] not in TYPES:
            raise LoadProblem(f"schema column '{col['name']}' is {col['type']}: a Python model's columns "
                              f"are one of {', '.join(TYPES)}")


class _Model:
    """What both kinds share: the schema, the method, and turning answers into Outputs."""
    class_name = ""
    packages: list = []
    schema: list | None = None
    schema_source = "none"
    classes: list | None = None      # class labels (str) of a classifier, in its column order

    def __init__(self, spec: protocol.ModelSpec):
        self.spec = spec
        default = "predict_proba" if spec.top_k else "predict"
        self.method = (spec.predict_args or {}).get("method", default)

    def set_schema(self, from_model: list | None, source: str) -> None:
        """<name>.json's columns win; the model's levels fill in; NA is refused unless "na": true."""
        if self.spec.schema:
            known = {c["name"]: c for c in from_model or []}
            columns = []
            for col in self.spec.schema:
                merged = {**known.get(col["name"], {}), **{k: v for k, v in col.items() if v is not None}}
                merged.setdefault("levels", None)
                merged.setdefault("ordered", False)
                columns.append(merged)
            self.schema, self.schema_source = columns, "json"
        elif from_model:
            self.schema, self.schema_source = from_model, source
        else:
            raise LoadProblem(f"{self.class_name} does not name its input columns: list them in "
                              "<name>.json (\"schema\": {\"columns\": [{\"name\": ..., \"type\": ...}]}), "
                              "in the order the model was fitted with")
        for col in self.schema:
            if "na" not in col:
                col["na"], col["na_reason"] = False, NO_NA

    def images(self, columns: dict) -> np.ndarray:
        """An image model's input: the uploaded files, decoded and preprocessed as its "image"
        block says (images.py; imported here, so that only image models need Pillow)."""
        from rbridge.worker import images
        return images.preprocess(self.spec.image, columns["image"][1])

    def columns(self, columns: dict) -> dict:
        """The request's buffers as numpy arrays, in the schema's order."""
        out = {}
        for col in self.schema:
            kind, buf = columns[col["name"]]
            out[col["name"]] = _array(kind, buf, col.get("levels"))
        return out

    def output(self, values) -> protocol.Output:
        """A method's answer as an Output: a vector, or a table of scores keyed by class."""
        if isinstance(values, list) and values and isinstance(values[0], dict):   # ONNX ZipMap
            names = [str(k) for k in values[0]]
            keys = list(values[0])
            return protocol.Output("table", names, [np.array([row[k] for row in values], np.float64)
                                                    for k in keys])
        arr = np.asarray(values)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim == 2:
            names = self.classes if self.classes and len(self.classes) == arr.shape[1] else \
                [str(i) for i in range(arr.shape[1])]
            return protocol.Output("table", names, [np.ascontiguousarray(arr[:, j], np.float64)
                                                    for j in range(arr.shape[1])])
        if arr.ndim != 1:
            raise ModelError(f"the model's {self.method} answered an array of shape {arr.shape}; "
                             "the bridge serves one value, or one row of scores, per row")
        if arr.dtype.kind == "f":
            return protocol.Output("vector", None, [np.ascontiguousarray(arr, np.float64)])
        if arr.dtype.kind in "iub":
            return protocol.Output("vector", None, [arr.tolist()])
        levels = self.classes if self.method == "predict" else None
        return protocol.Output("vector", None, [[None if v is None else str(v) for v in arr.tolist()]],
                               levels)


class _Sklearn(_Model):
    """A scikit-learn estimator or pipeline saved with joblib (or pickle)."""

    def __init__(self, spec: protocol.ModelSpec):
        super().__init__(spec)
        try:
            import joblib
            import sklearn
        except ImportError as exc:
            raise LoadProblem(f"{exc.name} is not installed in {sys.prefix}: {_INSTALL}") from None
        try:
            est = joblib.load(spec.rds)
        except ModuleNotFoundError as exc:
            raise LoadProblem(f"it needs the Python module {exc.name}, which is not installed "
                              f"in {sys.prefix}") from None
        except Exception as exc:
            raise LoadProblem(f"joblib could not load it: {type(exc).__name__}: {exc}") from None
        self.est = est
        self.class_name = f"{type(est).__module__}.{type(est).__qualname__}"
        self.packages = [f"scikit-learn {sklearn.__version__}"]
        if not callable(getattr(est, self.method, None)):
            raise LoadProblem(f"{type(est).__name__} has no {self.method}() (predict_args.method)")
        classes = getattr(est, "classes_", None)
        self.classes = None if classes is None else [str(c) for c in classes]
        names = getattr(est, "feature_names_in_", None)
        self.named = names is not None
        if spec.image:                      # images in, no columns (score() preprocesses them)
            self.schema_source = "image"
            return
        self.set_schema(_sklearn_columns(est, names), "model")
        # A text pipeline fitted on a list of strings takes a 1-D array of them.
        self.text = not self.named and len(self.schema) == 1 and self.schema[0]["type"] in ("character", "factor")

    def score(self, columns: dict, nrows: int) -> protocol.Output:
        if self.spec.image:
            return self.output(getattr(self.est, self.method)(self.images(columns)))
        cols = self.columns(columns)
        if self.named:
            import pandas as pd
            x = pd.DataFrame(cols)
        elif self.text:
            x = next(iter(cols.values()))
        else:
            x = np.column_stack(list(cols.values()))
        return self.output(getattr(self.est, self.method)(x))


def _sklearn_columns(est, names) -> list | None:
    """Columns from the estimator: its feature names, typed by what first transforms them
    (an encoder or a text vectorizer: strings, with the encoder's categories as levels when it
    refuses unknown ones; anything else: numbers)."""
    if names is None:
        return None
    kinds = {}
    ct = _column_transformer(est)
    for _, trans, cols in getattr(ct, "transformers_", []):
        if isinstance(cols, str):
            cols = [cols]
        if not isinstance(cols, (list, tuple, np.ndarray)) or not all(isinstance(c, str) for c in cols):
            continue
        first = _first_step(trans)
        cats = getattr(first, "categories_", None)
        if cats is not None:
            for j, c in enumerate(cols):
                levels = [str(v) for v in cats[j]] if j < len(cats) else None
                strict = getattr(first, "handle_unknown", "error") == "error"
                if levels is not None and all(isinstance(v, str) for v in cats[j]) and strict:
                    kinds[c] = ("character", levels)
                else:
                    kinds[c] = ("character", None)
        elif hasattr(first, "build_analyzer"):     # CountVectorizer, TfidfVectorizer, HashingVectorizer
            for c in cols:
                kinds[c] = ("character", None)
    return [{"name": str(n), "type": kinds.get(n, ("numeric", None))[0],
             "levels": kinds.get(n, ("numeric", None))[1], "ordered": False} for n in names]


def _column_transformer(est):
    """The ColumnTransformer that first sees the columns (the estimator, or a pipeline's first step)."""
    while hasattr(est, "steps"):
        est = est.steps[0][1]
    return est if hasattr(est, "transformers_") else None


def _first_step(trans):
    """The first fitted transformer of a ColumnTransformer's entry (inside a pipeline), skipping
    imputers, which pass the column's kind through."""
    steps = [s for _, s in trans.steps] if hasattr(trans, "steps") else [trans]
    for step in steps:
        if type(step).__name__ not in ("SimpleImputer", "MissingIndicator"):
            return step
    return steps[0]


class _Onnx(_Model):
    """An ONNX model, run by onnxruntime on the CPU (one thread)."""

    def __init__(self, spec: protocol.ModelSpec):
        super().__init__(spec)
        try:
            import onnxruntime as ort
        except ImportError:
            raise LoadProblem(f"onnxruntime is not installed in {sys.prefix}: {_INSTALL}") from None
        if self.method == "decision_function":
            raise LoadProblem("an ONNX model answers predict (its first output) or predict_proba "
                              "(its second); decision_function has no ONNX form")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        providers = _providers(ort, spec.providers)
        try:
            self.session = ort.InferenceSession(spec.rds, options, providers=providers)
        except Exception as exc:
            raise LoadProblem(f"onnxruntime could not load it: {type(exc).__name__}: {exc}") from None
        self.class_name = "onnxruntime.InferenceSession"
        # the providers the session runs on (a CUDA provider without a usable GPU falls back to the CPU)
        self.packages = [f"onnxruntime {ort.__version__} ({', '.join(self.session.get_providers())})"]
        self.inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        index = 1 if self.method == "predict_proba" else 0
        if index >= len(outputs):
            raise LoadProblem(f"predict_proba is the model's second output, and it has only {len(outputs)}")
        self.output_name = outputs[index].name
        if spec.image:                      # one image tensor in (score() preprocesses the files)
            if len(self.inputs) != 1:
                raise LoadProblem(f"an image model has one input; this one has {len(self.inputs)} "
                                  f"({', '.join(i.name for i in self.inputs)})")
            self.schema_source = "image"
            return
        per_column = [i for i in self.inputs if _width(i) == 1]
        from_model = None
        if len(per_column) == len(self.inputs):
            from_model = [{"name": i.name, "type": _ONNX_TYPES.get(i.type, "numeric"), "levels": None,
                           "ordered": False} for i in self.inputs]
        self.set_schema(from_model, "model")
        names = {i.name for i in self.inputs}
        self.stacked = not all(c["name"] in names for c in self.schema)
        if self.stacked and (len(self.inputs) != 1 or _width(self.inputs[0]) not in (None, len(self.schema))):
            raise LoadProblem(f"the schema's {len(self.schema)} columns fit neither the model's inputs "
                              f"({', '.join(f'{i.name} {i.shape}' for i in self.inputs)}) one by one, "
                              "nor its single input as one row of features")

    def score(self, columns: dict, nrows: int) -> protocol.Output:
        if self.spec.image:
            first = self.inputs[0]
            feed = {first.name: self.images(columns).astype(_ONNX_DTYPES.get(first.type, np.float32), copy=False)}
            (values,) = self.session.run([self.output_name], feed)
            return self.output(values)
        cols = self.columns(columns)
        if self.stacked:
            first = self.inputs[0]
            feed = {first.name: np.column_stack(list(cols.values())).astype(_ONNX_DTYPES.get(first.type, np.float32))}
        else:
            by_name = {i.name: i for i in self.inputs}
            feed = {}
            for name, values in cols.items():
                inp = by_name[name]
                arr = np.asarray(values).astype(_ONNX_DTYPES.get(inp.type, np.float32))
                feed[name] = arr.reshape(-1, 1) if len(inp.shape) == 2 else arr
        (values,) = self.session.run([self.output_name], feed)
        return self.output(values)


def _providers(ort, wanted: list | None) -> list:
    """The execution providers of <name>.json ("providers"), each one this onnxruntime has, or a
    LoadProblem naming those it has (the CUDA provider comes with the onnxruntime-gpu package,
    which replaces onnxruntime)."""
    wanted = wanted or ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise LoadProblem(f"providers {', '.join(missing)} are not in this onnxruntime ({ort.__version__}, "
                          f"which has {', '.join(available)}); CUDAExecutionProvider comes with the "
                          "onnxruntime-gpu package, installed instead of onnxruntime")
    if "CUDAExecutionProvider" in wanted and hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN from PyPI (onnxruntime-gpu[cuda,cudnn]) are not on the loader's path
        try:
            ort.preload_dlls()
        except Exception as exc:       # onnxruntime then falls back to the CPU, and says so
            log.warning("onnxruntime could not preload CUDA's libraries: %s", exc)
    return wanted


def _width(inp) -> int | None:
    """Features per row of an ONNX input: 1 for [N] or [N, 1], its second dimension, or None."""
    shape = inp.shape
    if len(shape) <= 1:
        return 1
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None


def _array(kind: str, buf, levels: list | None) -> np.ndarray:
    """One column's buffer as what scikit-learn takes: float64, int64, bool or str (object)."""
    if kind == "numeric":
        return np.asarray(buf, np.float64)
    if kind == "integer":
        arr = np.asarray(buf)
        na = arr == INT_NA
        return np.where(na, np.nan, arr.astype(np.float64)) if na.any() else arr.astype(np.int64)
    if kind == "factor":
        labels = np.array(levels + [None], dtype=object)
        codes = np.asarray(buf)
        return labels[np.where(codes == INT_NA, len(levels), codes - 1)]
    if kind == "logical":
        return np.array(buf, dtype=object if None in buf else np.bool_)
    if kind == "character":
        return np.array(buf, dtype=object)
    raise InvalidInput(f"a Python model does not take {kind} columns")
