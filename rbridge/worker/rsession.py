"""The embedded R session of one worker: load models, turn typed buffers into R, R results back.

Only the worker process imports this module (the gateway never imports rpy2; a test checks).
Threading: R is single-threaded and rpy2 is not re-entrant, so exactly one thread, the worker's
main loop, ever calls into an `RSession`.

Conversion is explicit and low-level (rpy2.rinterface, no pandas, no conversion rules that
guess): numbers go to R as one memory copy of a float64/int32 buffer, strings as a STRSXP, and
factor codes become factors with the model's training levels in R (r/worker.R `bridge_frame`).
Results come back through `bridge_output` as plain vectors, read the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from rbridge.pool import protocol
from rbridge.worker import batching
from rbridge.errors import BridgeError, InvalidInput, RError, Unavailable

log = logging.getLogger("bridge.worker")

R_DIR = Path(__file__).resolve().parent / "r"   # the bridge's R code, shipped as package data
INT_NA = np.iinfo(np.int32).min          # R's NA_integer_ (and NA for logicals)


class StartError(Exception):
    """R cannot start in this worker: `failure` (a protocol.StartFailed) says what is missing."""

    def __init__(self, missing: str, message: str, fix: str):
        self.failure = protocol.StartFailed(missing, message, fix)
        super().__init__(self.failure.line())


class RSession:
    def __init__(self, r_dir: Path | None = None, console=None):
        """Start R and source the bridge's R code; raises StartError naming what is missing."""
        r_dir = Path(r_dir or R_DIR)
        r_files = sorted(r_dir.glob("*.R"))
        if not r_files:
            raise StartError("R code", f"the bridge's R code is missing: no *.R files in {r_dir}",
                             "reinstall rbridge (pip install --force-reinstall rbridge: the package "
                             "ships rbridge/worker/r/*.R), or point the r_dir setting at that folder")
        ri, callbacks = _import_rpy2()
        self.ri = ri
        # R's console output goes to our log with the worker's name, not straight to stderr.
        write = console or (lambda text: log.info("R: %s", text.rstrip()))
        callbacks.consolewrite_print = lambda text: text.strip() and write(text)
        callbacks.consolewrite_warnerror = lambda text: text.strip() and write(text)
        try:
            ri.initr_simple()
        except Exception as exc:
            raise StartError("R", f"R did not start: {exc}", "check the R installation "
                             "(R --version; apt-get install r-base-core)") from exc
        self.env = ri.baseenv["new.env"]()
        source = ri.baseenv["sys.source"]
        try:
            for path in r_files:
                source(str(path), envir=self.env)
            fn = self.env.find
            self._run, self._heap = fn("bridge_run"), fn("bridge_heap")
            self._load, self._list = fn("bridge_load_safe"), ri.baseenv["list"]
        except Exception as exc:   # an R error while sourcing, or a bridge function not defined
            raise StartError("R code", f"the bridge's R code in {r_dir} does not load: {exc}",
                             "reinstall rbridge (pip install --force-reinstall rbridge)") from exc
        self.models: dict[str, _Loaded] = {}
        self.r_version = str(ri.baseenv["R.version.string"][0])

    # -- loading ---------------------------------------------------------------------------
    def load(self, spec: protocol.ModelSpec) -> protocol.ModelInfo:
        """Load one model (and its script); an R failure is reported, never raised."""
        ri = self.ri
        started = time.perf_counter()
        script = ri.NULL if spec.script is None else ri.StrSexpVector([spec.script])
        out = self._load(ri.StrSexpVector([spec.name]), ri.StrSexpVector([spec.rds]), script,
                         self._to_r_list(spec.predict_args or {}), ri.StrSexpVector(spec.packages or []))
        if not bool(out[0][0]):
            return protocol.ModelInfo(spec.name, spec.version, ok=False, error=str(out[1][0]))
        result = out[1]
        loaded = result
        problem = _field(loaded, "na_problem")
        na_reason = None if problem is None or problem.typeof == 0 else str(problem[0])
        r_schema = _schema_from_r(_field(loaded, "schema"))
        schema, source = _merge_schema(r_schema, spec.schema, na_reason)
        info = protocol.ModelInfo(
            spec.name, spec.version, ok=True,
            r_class=[str(c) for c in _field(loaded, "class")],
            packages=[str(p) for p in _field(loaded, "packages")],
            schema=schema, schema_source=source)
        self.models[spec.name] = _Loaded(spec, loaded, schema, ri)
        info.load_seconds = time.perf_counter() - started
        return info

    def _to_r_list(self, args: dict):
        """predict_args from <name>.json (plain JSON scalars and lists) as an R list."""
        ri = self.ri
        values = []
        for value in args.values():
            values.append(_scalar_or_vector(ri, value))
        lst = self._list(*values)
        if args:
            lst.names = ri.StrSexpVector(list(args))
        return lst

    # -- scoring ---------------------------------------------------------------------------
    def score(self, name: str, parts: list) -> tuple[list, bool]:
        """Score the parts, merged into one R call when there are several.

        If the merged call fails, each part is scored alone so one bad request cannot fail its
        neighbours. Returns (outputs, merged) with one Output or error dict per part.
        """
        model = self.models.get(name)
        if model is None:
            err = Unavailable(f"model '{name}' is not loaded in this worker", code="not_loaded").to_dict()
            return [err] * len(parts), False
        if len(parts) > 1 and batching.one_shape(parts):
            out = self._score_safely(model, batching.concat(parts), sum(p.nrows for p in parts))
            if isinstance(out, protocol.Output):
                return batching.split(out, [p.nrows for p in parts]), True
        return [self._score_safely(model, p.columns, p.nrows) for p in parts], False

    def _score_safely(self, model: "_Loaded", columns: dict, nrows: int):
        """`_score_columns`, with a failure of the bridge's own code as this part's error."""
        try:
            return self._score_columns(model, columns, nrows)
        except Exception as exc:
            log.exception("model %s: the bridge failed to score a request", model.spec.name)
            return BridgeError(f"the bridge could not score this request: {type(exc).__name__}: {exc}",
                               code="internal").to_dict()

    def _score_columns(self, model: "_Loaded", columns: dict, nrows: int):
        ri = self.ri
        try:
            if model.columns:
                names, r_names, r_levels, r_ordered = model.columns, model.r_names, model.r_levels, model.r_ordered
            else:  # no schema: the request's own columns, types checked by the gateway
                names = list(columns)
                r_names = _strings(ri, names)
                r_levels = ri.ListSexpVector([ri.NULL] * len(names))
                r_ordered = ri.BoolSexpVector([False] * len(names))
            vectors = [_to_r(ri, *columns[col]) for col in names]
        except InvalidInput as exc:     # this part's error: batch-mates are scored without it
            return exc.to_dict()
        out = self._run(model.loaded, ri.ListSexpVector(vectors), r_names, r_levels, r_ordered,
                        ri.IntSexpVector([nrows]), model.r_types, model.r_zone)
        if not bool(out[0][0]):
            return RError(f"R failed: {out[1][0]}").to_dict()
        names, levels = out[2], out[4]
        return protocol.Output(str(out[1][0]), None if names.typeof == 0 else [str(n) for n in names],
                               [_from_r(ri, v) for v in out[3]],
                               None if levels.typeof == 0 else [str(v) for v in levels])

    @contextlib.contextmanager
    def time_limit(self, seconds: float | None):
        """R's setTimeLimit(elapsed = seconds) for what runs inside: an R error past it, where R
        checks for interrupts (R code; not Sys.sleep in an embedded R, nor compiled loops)."""
        ri = self.ri
        set_limit = ri.baseenv["setTimeLimit"]
        if seconds:
            set_limit(elapsed=ri.FloatSexpVector([seconds]), transient=ri.BoolSexpVector([False]))
        try:
            yield
        finally:
            if seconds:
                set_limit()

    def heap(self) -> tuple[int, int]:
        h = self._heap()
        return int(h[0]), int(h[1])


class _Loaded:
    """A loaded model with its column order and R-side levels prepared once."""

    def __init__(self, spec, loaded, schema, ri):
        self.spec, self.loaded = spec, loaded
        schema = schema or []
        self.columns = [c["name"] for c in schema]
        self.r_names = ri.StrSexpVector(self.columns)
        self.r_levels = ri.ListSexpVector([
            ri.StrSexpVector(c["levels"]) if c["type"] == "factor" else ri.NULL for c in schema])
        self.r_ordered = ri.BoolSexpVector([bool(c.get("ordered")) for c in schema])
        self.r_types = ri.StrSexpVector([c["type"] for c in schema]) if schema else ri.NULL
        self.r_zone = ri.StrSexpVector([c.get("tz") or c.get("units") or
                                        ("UTC" if c["type"] == "datetime" else "") for c in schema])


def _field(vec, name: str):
    """vec$name for a named R list (rinterface objects have no $)."""
    names = vec.names
    if names.typeof != 0:
        for i, n in enumerate(names):
            if n == name:
                return vec[i]
    return None


# -- conversion helpers -----------------------------------------------------------------------
def _to_r(ri, kind: str, buf):
    if kind in ("numeric", "date", "datetime", "difftime"):   # R keeps all four as doubles
        return ri.FloatSexpVector.from_memoryview(memoryview(np.ascontiguousarray(buf, np.float64)))
    if kind in ("integer", "factor"):
        return ri.IntSexpVector.from_memoryview(memoryview(np.ascontiguousarray(buf, np.int32)))
    if kind == "logical":
        na = ri.NA_Logical
        return ri.BoolSexpVector([na if v is None else v for v in buf])
    if kind == "character":
        return _strings(ri, buf)
    raise ValueError(f"unknown column type {kind}")


def _strings(ri, values):
    """A STRSXP (None is NA). A string R cannot hold, with a lone surrogate, is the request's
    error: the gateway lets none through, and this is the last line before the worker dies."""
    na = ri.NA_Character
    try:
        return ri.StrSexpVector([na if v is None else v for v in values])
    except ValueError:      # rpy2 wraps the UnicodeEncodeError
        if all(v is None or _encodable(v) for v in values):
            raise
        raise InvalidInput("a string in the request is not valid Unicode (a lone surrogate); R cannot "
                           "hold it", code="unconvertible_input") from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _copy_out(vec, dtype) -> np.ndarray:
    """A copy of an R numeric vector's data.

    Not vec.memoryview(): in rpy2 3.5.17 it drops a reference to Python's None on every call
    (its C helper memoryview_swapstrides returns None without a new reference), so a worker
    died with "Fatal Python error: none_dealloc" after some hundred thousand requests.
    """
    from rpy2.rinterface_lib import openrlib
    ptr = vec._R_GET_PTR(vec.__sexp__._cdata)
    return np.frombuffer(openrlib.ffi.buffer(ptr, np.dtype(dtype).itemsize * len(vec)), dtype=dtype).copy()


def _from_r(ri, vec):
    t = vec.typeof
    if t == ri.RTYPES.REALSXP:
        return _copy_out(vec, np.float64)
    if t == ri.RTYPES.INTSXP:
        arr = _copy_out(vec, np.int32)
        if (arr == INT_NA).any():
            return [None if v == INT_NA else int(v) for v in arr]
        return arr
    if t == ri.RTYPES.LGLSXP:
        na = ri.NA_Logical
        return [None if v is na else bool(v) for v in vec]
    if t == ri.RTYPES.STRSXP:
        na = ri.NA_Character
        return [None if v is na else str(v) for v in vec]
    raise ValueError(f"bridge_output gave an R vector of type {t}")


def _scalar_or_vector(ri, value):
    items = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in items):
        return ri.BoolSexpVector(items)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return ri.IntSexpVector(items)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return ri.FloatSexpVector([float(v) for v in items])
    if all(isinstance(v, str) for v in items):
        return ri.StrSexpVector(items)
    raise ValueError(f"predict_args values must be numbers, strings or booleans (or lists of one kind): {value!r}")


def _schema_from_r(r_schema) -> list | None:
    if r_schema.typeof == 0:  # NILSXP: R does not know the columns
        return None
    columns = []
    for col in r_schema:
        levels = _field(col, "levels")
        ordered = _field(col, "ordered")
        column = {
            "name": str(_field(col, "name")[0]),
            "type": str(_field(col, "type")[0]),
            "levels": None if levels is None or levels.typeof == 0 else [str(v) for v in levels],
            "ordered": False if ordered is None or ordered.typeof == 0 else bool(ordered[0]),
        }
        for key in ("tz", "units"):
            value = _field(col, key)
            if value is not None and value.typeof != 0:
                column[key] = str(value[0])
        columns.append(column)
    return columns


def _merge_schema(r_schema, json_schema, na_reason: str | None = None):
    """<name>.json's columns win over what R derived; R's levels fill in where JSON has none.

    NA: a column accepts null (R's predict() answers NA or what it does for such rows) unless
    <name>.json says "na": false, or the class's predict() fails on NA (na_reason, from R): then
    every column refuses it with that reason, whatever <name>.json says.
    """
    if json_schema:
        from_r = {c["name"]: c for c in (r_schema or [])}
        merged = []
        for col in json_schema:
            base = dict(from_r.get(col["name"], {}))
            base.update({k: v for k, v in col.items() if v is not None})
            base.setdefault("levels", None)
            base.setdefault("ordered", False)
            merged.append(base)
        schema, source = merged, "json"
    else:
        schema, source = r_schema, ("r" if r_schema else "none")
    for col in schema or []:
        if na_reason:
            col["na"], col["na_reason"] = False, na_reason
        else:
            col.setdefault("na", True)
    return schema, source


def _import_rpy2():
    """rpy2's low-level interface, or StartError saying whether rpy2 or R is what is missing."""
    try:
        import rpy2  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "rpy2":
            raise
        raise StartError("rpy2", f"rpy2 is not installed in {sys.prefix}",
                         'install it: pip install "rbridge[r]" (it compiles against R: '
                         "apt-get install r-base-dev python3-dev)") from None
    # Where rpy2 will look for R: R_HOME (R's own variable), else `R RHOME` from the PATH.
    r_home = os.environ.get("R_HOME")
    if not r_home and shutil.which("R") is None:
        raise StartError("R", "R is not installed: no R on the PATH and R_HOME is not set",
                         "install it: apt-get install r-base-core")
    if r_home and not (Path(r_home) / "library" / "base").is_dir():
        raise StartError("R", f"R is not installed at R_HOME={r_home} (no library/base there)",
                         "install it (apt-get install r-base-core) or set R_HOME to R's home "
                         "(R RHOME prints it)")
    try:
        import rpy2.rinterface as ri
        import rpy2.rinterface_lib.callbacks as callbacks
    except Exception as exc:   # libR.so missing or not loadable, an rpy2 built for another R
        raise StartError("R", f"rpy2 cannot load R: {exc}",
                         "install R (apt-get install r-base-core), then rebuild rpy2: "
                         'pip install --force-reinstall --no-cache-dir "rbridge[r]"') from exc
    return ri, callbacks


def set_thread_env() -> None:
    """One thread per R: the pool is the parallelism. Must run before R (and BLAS) start."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
