"""The only things that cross the gateway <-> worker process line.

Transport: one Unix stream socket per worker (a socketpair made by the pool, the worker's end
passed as an inherited file descriptor). A frame is a 4-byte big-endian length followed by a
pickle (protocol 5) of one message below. A 10 KB round trip costs about 10 us here, several
times less than a multiprocessing.Queue. Both ends are ours, so pickle is safe; only typed
column buffers (numpy arrays, lists of str) travel, never code.

Conversation:
    gateway -> worker   Load(models)           once, right after start
    worker  -> gateway  Ready(pid, models)      every model loaded (or failed, with R's message)
                        or StartFailed(...)     R cannot start at all; the worker exits EXIT_R_FAILED
    gateway -> worker   Score(batch_id, model, parts)
    worker  -> gateway  Scored(batch_id, outputs)   one Output or error dict per part, same order
    gateway -> worker   Stats()
    worker  -> gateway  StatsReply(...)
A worker exits when its socket closes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import socket
import struct

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 31

# Worker exit codes that mean something to the pool (gunicorn's WORKER_BOOT_ERROR idea).
EXIT_R_FAILED = 3        # R itself could not start: respawning will not help
EXIT_PROTOCOL = 4        # the gateway sent something the worker does not understand


@dataclasses.dataclass
class ModelSpec:
    """What the gateway's catalogue found on disk for one model."""
    name: str
    rds: str                     # the model file: .rds, or .joblib/.pkl/.onnx for a Python model
    script: str | None
    version: str
    sha256: str
    predict_args: dict
    schema: list | None          # columns from <name>.json, overriding what R derives
    packages: list = dataclasses.field(default_factory=list)   # R packages <name>.json says to attach
    kind: str = "r"              # "r" (rsession.py), "sklearn" or "onnx" (pysession.py): by the file
    top_k: int | None = None     # answer the k best classes of a table of class scores, per row
    image: dict | None = None    # how uploaded images become the input (catalog.image_config), or None
    providers: list | None = None   # onnxruntime execution providers, in order of preference


def encoding_key(info: "ModelInfo") -> str:
    """What a Part encoded for this model version depends on: its kind and its columns (names,
    types, levels). Two versions with the same key take each other's parts, so during a reload
    that keeps the schema (a retrained model) old and new workers share one queue."""
    canonical = json.dumps([info.kind, info.schema], sort_keys=True, default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()


@dataclasses.dataclass
class Load:
    models: list                 # [ModelSpec]
    warmup_timeouts: dict = dataclasses.field(default_factory=dict)   # name -> seconds


@dataclasses.dataclass
class ModelInfo:
    """What a worker learned loading one model: R's view of it, or why it failed."""
    name: str
    version: str
    ok: bool
    error: str | None = None
    r_class: list = dataclasses.field(default_factory=list)
    packages: list = dataclasses.field(default_factory=list)
    schema: list | None = None   # effective columns: [{"name","type","levels","na","ordered"}]
    schema_source: str = "none"  # "r", "json" or "none" (types inferred from each request)
    load_seconds: float = 0.0
    warmup_timed_out: bool = False   # failed because its warm-up outran --warmup-timeout
    sample_output: "Output | None" = None   # the warm-up's prediction (one row): what answers look like
    output_levels: list | None = None   # levels of a factor answer (seen at the warm-up), else None
    kind: str = "r"              # ModelSpec.kind; r_class then holds the Python class


@dataclasses.dataclass
class Ready:
    pid: int
    models: list                 # [ModelInfo]
    r_version: str = ""


@dataclasses.dataclass
class StartFailed:
    """Instead of Ready: R cannot start in this worker, so no worker will serve a model.

    missing is one of MISSING; message says what is missing and where it was looked for;
    fix says how to install it. The gateway shows `line()` and stops (rbridge serve exits).
    """
    missing: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.message}; {self.fix}"


MISSING = ("rpy2", "R", "R code")   # StartFailed.missing: the Python package, R itself, the bridge's R


@dataclasses.dataclass
class Part:
    """One request's rows, already validated and encoded by the gateway.

    columns: name -> (type, buffer) with buffer a float64/int32 numpy array, or a list of
    str/None for character columns. Factor columns are int32 codes (1-based, NA = INT_MIN)
    into the model's levels, which the worker knows from its schema.
    """
    request_id: str
    nrows: int
    columns: dict


def column_shape(part: Part) -> tuple:
    """A part's column names and types, in order. Only parts of one shape are merged into one
    R call: a model without a schema takes each request's own columns."""
    return tuple((name, kind) for name, (kind, _) in part.columns.items())


@dataclasses.dataclass
class Score:
    batch_id: int
    model: str
    parts: list                  # [Part]; several parts are scored in one R call when they can be


@dataclasses.dataclass
class Output:
    """One part's predictions: kind 'vector' (values = [one column]) or 'table' (named columns)."""
    kind: str
    names: list | None
    values: list                 # numpy arrays or lists, each nrows long
    levels: list | None = None   # a factor answer's levels, in R's order (the values are labels)


@dataclasses.dataclass
class Scored:
    batch_id: int
    outputs: list                # [Output | dict]; a dict is a BridgeError.to_dict() for that part
    r_seconds: float = 0.0
    merged: bool = False         # True when all parts went through one R call


@dataclasses.dataclass
class Stats:
    pass


@dataclasses.dataclass
class StatsReply:
    r_heap_bytes: int            # R's own heap in use after gc(): Ncells + Vcells
    r_heap_max_bytes: int        # the most R's heap has held (gc()'s "max used")
    peak_rss_bytes: int          # ru_maxrss of the worker


def send(sock: socket.socket, message) -> None:
    payload = pickle.dumps(message, protocol=5)
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def recv(sock: socket.socket):
    """Read one message; raises EOFError when the other end has gone."""
    (size,) = _HEADER.unpack(_read_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise EOFError(f"frame of {size} bytes is too large")
    return pickle.loads(_read_exact(sock, size))


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return bytes(buf)
