"""Prediction capture: a sample of what each model was asked and answered, for monitoring.

`"capture": {"sample": 0.05, "redact": ["ssn"], "url": ...}` in <name>.json (checked in
rbridge/models/rollout.py). A captured request is one record:

    {"time": "2026-12-01T12:00:00.123Z", "model": "cars", "version": "2.0", "request_id": "...",
     "inputs": [{"wt": 2.5, ...}, ...], "predictions": [21.3, ...]}

`inputs` are the rows as the caller sent them (JSON rows or columns, or CSV), with `redact`ed
columns left out ("drop") or replaced by the first 16 hex digits of their value's sha256
("hash": rows can still be joined; a value with few possibilities can be guessed from it).

Sinks, one per model, each with its own thread and bounded buffer (BUFFER records):
  - a folder (default): JSON lines appended to `<capture-dir>/<model>/<model>-<host>-<pid>-<time>.jsonl`,
    a new file past ROTATE_BYTES, the oldest of this process's files removed past KEEP_FILES.
    --capture-dir defaults to `<models>/.captures` (a dot folder the catalogue skips), so
    replicas sharing the models folder write beside each other (the host and pid keep files apart).
  - `url`: CloudEvents 1.0 in batch mode (`application/cloudevents-batch+json`, up to `batch`
    events per POST, at least every FLUSH_SECONDS), two events per request as KServe's payload
    logger sends them: type org.kubeflow.serving.inference.request (data: the inputs) and
    org.kubeflow.serving.inference.response (data: the predictions), both with the request id as
    `id` (KServe's way of pairing them), `source` the server, and the extensions
    `inferenceservicename` (the model), `modelversion` and `component` ("rbridge").
The request's own thread only samples and appends to the buffer: a full buffer drops the
record (rbridge_capture_records{result="dropped"}); a sink that is slow, down or refusing costs
its thread's time only (result="failed", SINK_TIMEOUT per POST). Nothing is retried.

Runs in the gateway process: HTTP threads call `offer`; one daemon thread per sink.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

log = logging.getLogger("bridge.capture")
BUFFER = 10_000             # records waiting per sink
ROTATE_BYTES = 64 << 20     # a capture file is closed past this size
KEEP_FILES = 20             # capture files of this process kept per model
FLUSH_SECONDS = 1.0         # an HTTP sink posts at least this often while records wait
SINK_TIMEOUT = 2.0          # seconds a POST to a sink may take
_JSON = orjson.OPT_SERIALIZE_NUMPY


class Captures:
    def __init__(self, folder: Path, metrics):
        self.folder, self.metrics = Path(folder), metrics
        self._sinks: dict[tuple, _Sink] = {}
        self._lock = threading.Lock()

    def offer(self, model: str, config: dict, version: str, request_id: str, body, predictions) -> None:
        """Maybe capture one answered request (`body`: the parsed request, rows or columns)."""
        if random.random() >= config["sample"]:
            return
        record = {"time": _now(), "model": model, "version": version, "request_id": request_id,
                  "inputs": _rows(body, config), "predictions": predictions}
        sink = self._sink(model, config)
        try:
            sink.buffer.put_nowait(record)
        except queue.Full:
            self.metrics.captured.labels(model, "dropped").inc()

    def _sink(self, model: str, config: dict) -> "_Sink":
        key = (model, config["url"], config["batch"])
        sink = self._sinks.get(key)
        if sink is None:
            with self._lock:
                sink = self._sinks.get(key)
                if sink is None:
                    sink = self._sinks[key] = (_HttpSink(model, config, self.metrics) if config["url"]
                                               else _FileSink(model, self.folder / model, self.metrics))
                    sink.start()
        return sink


class _Sink:
    def __init__(self, model: str, metrics):
        self.model, self.metrics = model, metrics
        self.buffer: queue.Queue = queue.Queue(BUFFER)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"capture-{self.model}", daemon=True).start()

    def _take(self, most: int, wait: float, linger: float = 0.0) -> list:
        """Up to `most` records: the first waited for up to `wait` s, more for `linger` s after it."""
        try:
            out = [self.buffer.get(timeout=wait)]
        except queue.Empty:
            return []
        until = time.monotonic() + linger
        while len(out) < most:
            try:
                out.append(self.buffer.get(timeout=max(0.0, until - time.monotonic())) if linger
                           else self.buffer.get_nowait())
            except queue.Empty:
                break
        return out

    def _run(self) -> None:
        while True:
            try:
                self._drain()
            except Exception:        # a sink that fails must not end capturing
                log.exception("capture for %s failed", self.model)
                time.sleep(1)


class _FileSink(_Sink):
    def __init__(self, model: str, folder: Path, metrics):
        super().__init__(model, metrics)
        self.folder = folder
        self._prefix = f"{model}-{socket.gethostname()}-{os.getpid()}-"
        self._file = None

    def _drain(self) -> None:
        records = self._take(1000, 60.0)
        if not records:
            return
        try:
            f = self._open()
            f.write(b"".join(orjson.dumps(r, option=_JSON) + b"\n" for r in records))
            f.flush()
        except OSError as exc:
            self._file = None
            self.metrics.captured.labels(self.model, "failed").inc(len(records))
            log.warning("capture for %s: cannot write to %s: %s", self.model, self.folder, exc.strerror)
            time.sleep(1)
            return
        self.metrics.captured.labels(self.model, "written").inc(len(records))

    def _open(self):
        if self._file is not None and self._file.tell() < ROTATE_BYTES:
            return self._file
        if self._file is not None:
            self._file.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.folder / f"{self._prefix}{stamp}-{time.monotonic_ns() % 10**6:06d}.jsonl"
        self._file = open(path, "ab")
        for old in sorted(self.folder.glob(f"{self._prefix}*.jsonl"))[:-KEEP_FILES]:
            old.unlink(missing_ok=True)
        return self._file


class _HttpSink(_Sink):
    def __init__(self, model: str, config: dict, metrics):
        super().__init__(model, metrics)
        self.url, self.batch = config["url"], config["batch"]
        self.source = f"rbridge/{socket.gethostname()}/models/{model}"

    def _drain(self) -> None:
        records = self._take(self.batch, 60.0, FLUSH_SECONDS)
        if not records:
            return
        events = [e for r in records for e in cloudevents(r, self.source)]
        request = urllib.request.Request(self.url, data=orjson.dumps(events, option=_JSON), method="POST",
                                         headers={"Content-Type": "application/cloudevents-batch+json"})
        try:
            with urllib.request.urlopen(request, timeout=SINK_TIMEOUT) as answer:
                answer.read()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            self.metrics.captured.labels(self.model, "failed").inc(len(records))
            log.warning("capture for %s: the sink did not take %s records: %s", self.model, len(records), exc)
            return
        self.metrics.captured.labels(self.model, "sent").inc(len(records))


def cloudevents(record: dict, source: str) -> list[dict]:
    """A captured request as KServe's payload logger's two CloudEvents (structured, for a batch)."""
    common = {"specversion": "1.0", "id": record["request_id"], "source": source, "time": record["time"],
              "datacontenttype": "application/json", "inferenceservicename": record["model"],
              "modelversion": record["version"], "component": "rbridge"}
    return [{**common, "type": "org.kubeflow.serving.inference.request", "data": {"inputs": record["inputs"]}},
            {**common, "type": "org.kubeflow.serving.inference.response",
             "data": {"model_name": record["model"], "model_version": record["version"],
                      "predictions": record["predictions"]}}]


def _rows(body, config: dict) -> list[dict]:
    """The request's rows (JSON rows, JSON columns or CSV columns), with redacted columns."""
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        rows = [dict(r) for r in body["data"]]
    elif isinstance(body, dict) and isinstance(body.get("columns"), dict):
        names = list(body["columns"])
        rows = [dict(zip(names, values)) for values in zip(*body["columns"].values())]
    else:
        rows = []
    drop, hashed = config["drop"], config["hash"]
    if drop or hashed:
        for row in rows:
            for column in drop:
                row.pop(column, None)
            for column in hashed:
                if column in row and row[column] is not None:
                    row[column] = hashlib.sha256(str(row[column]).encode()).hexdigest()[:16]
    return rows


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
