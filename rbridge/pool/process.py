"""A worker process as the gateway sees it: started fresh, its socket, its Ready, its end.

Workers are started with subprocess (a fresh interpreter, never a fork of a process with R in
it); the worker's end of a socketpair is passed as an inherited file descriptor. Its stderr is a
pipe that one thread per worker relays to the gateway's stderr (`relay_stderr`).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import orjson

from . import protocol

log = logging.getLogger("bridge.worker")
MAX_RELAYED_LINE = 64 << 10      # a longer line is relayed in pieces

START_TIMEOUT = 120.0     # seconds a worker may take to load every model
KILL_GRACE = 1.0          # seconds between SIGTERM and SIGKILL


def worker_log_format(fmt: str) -> str:
    """Workers write to the gateway's stderr, so they follow the gateway's resolved format."""
    if fmt == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return fmt


class Process:
    """A started worker process and the gateway's end of its socket."""

    def __init__(self, slot: int, settings, specs: list, generation: int = 0, stderr=None,
                 warmup_timeouts: dict | None = None):
        self.generation = generation
        self.loaded: dict = {}   # model -> protocol.encoding_key of what it loaded, set at Ready
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_format = worker_log_format(settings.log_format)
        cmd = [sys.executable, "-m", "rbridge.worker", "--fd", str(theirs.fileno()),
               "--slot", str(slot), "--log-format", log_format]
        if settings.r_dir is not None:
            cmd += ["--r-dir", str(settings.r_dir)]
        if settings.worker_memory_limit:
            cmd += ["--memory-limit", str(settings.worker_memory_limit)]
        relay = stderr is None          # the server's workers: relayed; `rbridge check` passes a file
        self.popen = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], close_fds=True,
                                      stderr=subprocess.PIPE if relay else stderr)
        theirs.close()
        if relay:
            threading.Thread(target=relay_stderr, args=(self.popen.stderr, slot, log_format == "json"),
                             name=f"worker-{slot}-stderr", daemon=True).start()
        self.sock, self.pid, self.started = ours, self.popen.pid, time.monotonic()
        self.ready: protocol.Ready | None = None
        self.start_failed: protocol.StartFailed | None = None   # instead of Ready: R cannot start
        protocol.send(self.sock, protocol.Load(specs, warmup_timeouts or {}))

    def kill(self, grace: float = KILL_GRACE) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.sock.close()
        return self.popen.wait()

    def close(self, grace: float = 5.0) -> int | None:
        """Ask it to exit by closing its socket (it finishes nothing: it is idle)."""
        self.sock.close()
        try:
            return self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            return self.kill()


def relay_stderr(stream, slot: int, json_lines: bool) -> None:
    """Copy a worker's stderr to the gateway's, until the worker is gone.

    The worker's own log lines pass as they are. Anything else (a Python traceback of a dying
    worker, R's or a native library's own writes to stderr) becomes a JSON record of its own in a
    JSON log, so every line of the log parses, and goes through the gateway's redaction.
    """
    out = sys.stderr.fileno()
    for line in iter(lambda: stream.readline(MAX_RELAYED_LINE), b""):
        if not json_lines or line.startswith(b"{") and _is_json_object(line):
            _write_all(out, line if line.endswith(b"\n") else line + b"\n")
        elif line.strip():
            text = line.decode("utf-8", "replace").rstrip("\n")
            log.warning("%s", text, extra={"fields": {"worker": slot, "stream": "stderr"}})
    stream.close()


def _write_all(fd: int, data: bytes) -> None:
    """Write it all; a gateway stderr that is gone drops the line (the relay must keep reading,
    or a worker writing to a full pipe would hang)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def await_ready(proc: Process) -> str | None:
    """Wait for a new process's Ready; None when it came, else why not."""
    try:
        if not select.select([proc.sock], [], [], START_TIMEOUT)[0]:
            return f"not ready after {START_TIMEOUT:g} s"
        message = protocol.recv(proc.sock)
        if isinstance(message, protocol.StartFailed):
            proc.start_failed = message
            return message.line()
        proc.ready = message
        proc.loaded = {m.name: protocol.encoding_key(m) for m in proc.ready.models if m.ok}
        return None
    except (EOFError, OSError) as exc:
        return str(exc)


def describe_exit(code) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == protocol.EXIT_R_FAILED:
        return "exit code 3: R could not start"
    return f"exit code {code}"
