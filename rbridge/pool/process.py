"""A worker process as the gateway sees it: started fresh, its socket, its Ready, its end.

Workers are started with subprocess (a fresh interpreter, never a fork of a process with R in
it); the worker's end of a socketpair is passed as an inherited file descriptor.
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time

from . import protocol

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
        self.loaded: frozenset = frozenset()   # models this process loaded, set when Ready arrives
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd = [sys.executable, "-m", "rbridge.worker", "--fd", str(theirs.fileno()),
               "--slot", str(slot), "--log-format", worker_log_format(settings.log_format)]
        if settings.r_dir is not None:
            cmd += ["--r-dir", str(settings.r_dir)]
        if settings.worker_memory_limit:
            cmd += ["--memory-limit", str(settings.worker_memory_limit)]
        self.popen = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], close_fds=True, stderr=stderr)
        theirs.close()
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
        proc.loaded = frozenset(m.name for m in proc.ready.models if m.ok)
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
