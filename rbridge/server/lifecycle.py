"""What every HTTP front shares (gateway process): counting requests in flight, starting the
pool in the background, waiting for a signal, and the drain's wait for quiet.

Signals: handlers only record the signal on a queue; the main thread acts on it (drain:
/readyz turns 503, in-flight requests finish within --graceful-timeout, workers stop, exit 0),
so Kubernetes rolling updates lose no request.

A server with models to serve whose R cannot start at all (rpy2, R or the bridge's R code
missing: the first worker says which) logs one line saying what to install and exits
EXIT_NO_R, instead of staying up unready: the pool-start thread calls the front's boot_failed.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import ssl
import threading
import time

from prometheus_client import start_http_server

from rbridge import logs
from rbridge.errors import ConfigError
from rbridge.pool.pool import RCannotStart

log = logging.getLogger("bridge.server")

EXIT_NO_R = 3   # R cannot start: as gunicorn's WORKER_BOOT_ERROR, so every front exits with it


class InFlight:
    """WSGI middleware counting requests being handled, so a drain knows when it is done.

    `headers` are added to every response (granian's own Server banner is replaced by ours);
    while `closing()` is true (a drain), every response also asks the client to close the
    connection, so keep-alive clients move to another replica.
    """

    def __init__(self, app, closing=lambda: False, headers: tuple = ()):
        self.app, self.closing, self.headers = app, closing, list(headers)
        self.count, self._lock = 0, threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.count += 1
        try:
            extra = self.headers + [("Connection", "close")] if self.closing() else self.headers
            if not extra:
                return list(self.app(environ, start_response))
            return list(self.app(environ, lambda status, headers, exc_info=None: start_response(
                status, headers + extra, exc_info)))
        finally:
            with self._lock:
                self.count -= 1


def check_certificate(settings) -> None:
    """An unreadable certificate or key is a configuration error at start, on every front."""
    if not settings.certfile:
        return
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile=str(settings.certfile), keyfile=str(settings.keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {settings.certfile} with key "
                          f"{settings.keyfile}: {exc}") from None


def http_threads(settings) -> int:
    """HTTP threads: one per request that may be queued or scored at once, plus a few."""
    return settings.threads or min(settings.queue_size + settings.workers + 8, 512)


def start_background(service, boot_failed) -> None:
    """The metrics port (if any) now; the pool and then the reloader in a thread of their own,
    so the front listens at once (/healthz answers, /readyz says "starting"). That thread calls
    boot_failed() when R cannot start and there are models to serve."""
    settings, pool = service.settings, service.pool
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=pool.metrics.registry)
    if pool.failed_reason is None:
        threading.Thread(target=_start_pool, args=(service, time.monotonic(), boot_failed),
                         name="pool-start", daemon=True).start()


def _start_pool(service, started: float, boot_failed) -> None:
    try:
        service.pool.start()
    except RCannotStart as exc:
        if service.registry.names():
            log.critical("%s", exc)
            boot_failed()
        else:   # nothing to serve yet: stay up, /readyz says why
            log.error("%s", exc)
        return
    except Exception as exc:  # recorded in pool.failed_reason: /readyz shows it
        log.error("the pool could not start: %s", exc)
        return
    log.info("pool started in %.2f s", time.monotonic() - started)
    service.reloader.start()


def end_forked_gateway() -> None:
    """boot_failed for a front whose gateway is a forked process (granian, gunicorn): from the
    pool-start thread, write the queued log lines, then end the process with EXIT_NO_R; the
    front's main process exits with that code (gunicorn: its WORKER_BOOT_ERROR)."""
    logs.flush()
    os._exit(EXIT_NO_R)


def record_signals(*signums) -> queue.Queue:
    signals: queue.Queue = queue.Queue()
    for sig in signums:
        signal.signal(sig, lambda signum, frame: signals.put(signum))
    return signals


def wait_for_signal(signals: queue.Queue) -> int:
    """Block until a handler records a signal. The wait has a timeout because the kernel may
    deliver the signal to another thread, and Python runs handlers only when the main thread
    runs bytecode: an untimed wait could sleep through SIGTERM."""
    while True:
        try:
            return signals.get(timeout=0.1)
        except queue.Empty:
            continue


def wait_until_quiet(busy, deadline: float, quiet: float = 0.2) -> bool:
    """Wait until `busy()` has been false for `quiet` seconds; False if the deadline came first."""
    quiet_since = None
    while time.monotonic() < deadline:
        if busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            return True
        time.sleep(0.02)
    return False
