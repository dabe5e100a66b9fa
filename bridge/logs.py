"""Logging: one JSON object per line (or readable text on a terminal), for the gateway and workers.

`setup_logging` is called once per process. Request logs and pool events go through the
standard `logging` module with their fields in `extra={"fields": {...}}`; the JSON formatter
writes them as top-level keys. Workers tag every line with their slot. Secrets are never passed
to a logger: callers log user names, never passwords, tokens or keys.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, worker=None):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, worker=None):
        prefix = f"worker[{worker}] " if worker is not None else ""
        super().__init__(f"%(asctime)s %(levelname)-5s {prefix}%(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def setup_logging(fmt: str = "auto", worker=None, level=logging.INFO, stream=None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("waitress.queue", "urllib3", "rpy2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
