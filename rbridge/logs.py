"""Logging: one JSON object per line (or readable text on a terminal), for the gateway and workers.

`setup_logging` is called once per process. Request logs and pool events go through the
standard `logging` module with their fields in `extra={"fields": {...}}`; the JSON formatter
writes them as top-level keys. Workers tag every line with their slot. Secrets are never passed
to a logger: callers log user names, never passwords, tokens or keys. The text format escapes
control characters in messages and fields (a decoded request path can hold a newline); JSON
escapes them by itself.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
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
        elif record.exc_text:
            entry["traceback"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_control(text: str) -> str:
    """Control characters as escapes: a request path with %0a cannot start a forged log line."""
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match) -> str:
    c = match[0]
    return _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")


class TextFormatter(logging.Formatter):
    """One line per record for people; the message and fields are escaped, a traceback follows."""

    def __init__(self, worker=None):
        prefix = f"worker[{worker}] " if worker is not None else ""
        super().__init__(f"%(asctime)s %(levelname)-5s {prefix}%(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            text += " " + " ".join(f"{k}={escape_control(str(v))}" for k, v in fields.items())
        return text


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the writer thread, formatting nothing but the message in the caller.

    Request threads never wait on a stream or on the handler's lock (which, held by a thread
    waiting for the GIL, made every other request thread queue behind it: half of the gateway's
    time under load went there). Tracebacks are rendered here, since exc_info cannot travel.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _Writer(threading.Thread):
    """The one thread that writes log lines: everything queued so far in one write (one syscall
    per burst instead of one per line)."""

    def __init__(self, records: queue.SimpleQueue, handler: logging.StreamHandler):
        super().__init__(name="log-writer", daemon=True)
        self.records, self.handler = records, handler

    def run(self) -> None:
        while True:
            batch = [self.records.get()]
            while len(batch) < 512:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for record in batch:
                if record is None:
                    self._write(lines)
                    return
                try:
                    lines.append(self.handler.format(record) + "\n")
                except Exception:   # a record that cannot be formatted must not stop logging
                    lines.append(f"(unformattable log record from {record.name})\n")
            self._write(lines)

    def _write(self, lines: list) -> None:
        if lines:
            self.handler.stream.write("".join(lines))
            self.handler.stream.flush()

    def stop(self) -> None:
        self.records.put(None)
        self.join(5)


def setup_logging(fmt: str = "auto", worker=None, level=logging.INFO, stream=None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    records: queue.SimpleQueue = queue.SimpleQueue()
    front = _Enqueue(records)
    front.targets = [handler]       # where lines are written (auth.install_log_redaction wraps these)
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, _Enqueue):
            old.writer.stop()
    front.writer = _Writer(records, handler)
    front.writer.start()
    atexit.register(front.writer.stop)   # write what is queued when the process exits
    root.handlers[:] = [front]
    root.setLevel(level)
    for noisy in ("waitress.queue", "urllib3", "rpy2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def flush() -> None:
    """Write every queued line now and stop the writer: before os._exit, which runs no atexit
    handler (the gunicorn gateway process ending at boot, R being unable to start)."""
    for front in logging.getLogger().handlers:
        if isinstance(front, _Enqueue):
            front.writer.stop()


def _writer_in_child() -> None:
    """A forked child (the gateway process under granian or gunicorn) has no writer thread: give
    it a queue and a writer of its own (the parent's queue may have been locked at the fork)."""
    for front in logging.getLogger().handlers:
        if isinstance(front, _Enqueue):
            front.queue = queue.SimpleQueue()
            front.writer = _Writer(front.queue, front.writer.handler)
            front.writer.start()
            atexit.register(front.writer.stop)


os.register_at_fork(after_in_child=_writer_in_child)
