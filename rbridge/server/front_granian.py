"""The granian front (the default): HTTP/1.1, HTTP/2 and TLS handled in Rust, the app in one
gateway process.

granian runs a WSGI app only in a worker process it starts itself (its embedded mode has no
WSGI), so there are two processes, as with gunicorn:
    main     `rbridge serve`: builds the parts (`build()`: users file, signing keys, registry,
             app, an unstarted pool), so configuration errors show at once, then runs granian's
             supervisor. It starts no threads of its own before the fork.
    gateway  granian's one worker, forked from main. `_gateway_app` (granian's target) scrubs
             the settings' variables from its environment (granian copies the environment into
             every request's environ), starts the pool and the reloader in the background, and
             returns the app: FastPath for scoring in front of Flask, counted by InFlight.
             The R workers are its children.
Drain. SIGTERM or SIGINT reach main; its handler only records them (granian's own would stop
the listener at once). Main's drain thread then asks the gateway to drain (SIGUSR1): /readyz
answers 503 at once, every response says `Connection: close` (keep-alive clients move to
another replica), in-flight and queued requests finish; when it is quiet, or the graceful
timeout is near, the gateway stops the pool and tells main (SIGUSR2). Main then lets granian
shut down: the listener closes (new connections are refused), idle connections are closed,
the gateway exits, and so does main, with 0.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time

from granian.constants import Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.server.mp import MPServer

from rbridge import settings as settings_mod
from rbridge.server import lifecycle

log = logging.getLogger("bridge.server")

_SERVICE = None            # set in main before the fork; the gateway process inherits it
STOP_MARGIN = 2.0          # seconds of the graceful timeout kept for stopping the pool and granian


def serve(service) -> int:
    global _SERVICE
    _SERVICE = service
    s = service.settings
    threads = lifecycle.http_threads(s)
    multiprocessing.set_start_method("fork", force=True)   # the gateway inherits the built parts
    server = _Server(
        "rbridge.server.front_granian:_gateway_app", address=s.host, port=s.port,
        interface=Interfaces.WSGI, workers=1, blocking_threads=threads, backpressure=threads,
        backlog=2048, runtime_threads=1, http1_settings=HTTP1Settings(keep_alive=True),
        log_enabled=False, log_access=False, ssl_cert=s.certfile, ssl_key=s.keyfile,
        ssl_protocol_min=SSLProtocols.tls12, workers_kill_timeout=max(1, int(STOP_MARGIN)),
        respawn_failed_workers=False)
    log.info("listening on %s://%s:%s (granian, %s HTTP threads); models: %s",
             "https" if s.certfile else "http", s.host, s.port, threads,
             ", ".join(service.registry.names()) or "none")
    server.serve(target_loader=_gateway_app, wrap_loader=False)
    return 0


class _Server(MPServer):
    """granian's supervisor, with SIGTERM/SIGINT turned into a drain of the gateway first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._signals: queue.SimpleQueue = queue.SimpleQueue()

    def signal_handler_interrupt(self, signum=None, frame=None):   # granian installs it
        self._signals.put(signum)

    def startup(self, spawn_target, target_loader):
        super().startup(spawn_target, target_loader)
        signal.signal(signal.SIGUSR2, lambda signum, frame: self._signals.put(signum))
        threading.Thread(target=self._drain_when_asked, name="drain", daemon=True).start()

    def _drain_when_asked(self) -> None:
        signum = self._signals.get()
        graceful = _SERVICE.settings.graceful_timeout
        log.info("received %s: draining (up to %g s)", signal.Signals(signum).name, graceful)
        for worker in list(self.wrks):
            try:
                os.kill(worker.inner.pid, signal.SIGUSR1)
            except (ProcessLookupError, TypeError):
                pass
        deadline = time.monotonic() + graceful
        while time.monotonic() < deadline:      # until the gateway says it drained (SIGUSR2)
            try:
                if self._signals.get(timeout=max(0.01, deadline - time.monotonic())) == signal.SIGUSR2:
                    break
            except queue.Empty:
                break
        else:
            log.warning("the gateway did not finish draining within the graceful timeout")
        super().signal_handler_interrupt()      # granian: close the listener, stop the gateway


def _gateway_app():
    """granian's target in the gateway process: the WSGI app, with the pool starting."""
    service = _SERVICE
    s = service.settings
    for f in settings_mod.FIELDS:               # granian copies os.environ into every environ
        os.environ.pop(settings_mod.env_name(f.name), None)
    counted = lifecycle.InFlight(service.app, closing=lambda: service.pool.draining,
                                 headers=(("Server", "rbridge"),))
    asked: queue.SimpleQueue = queue.SimpleQueue()
    signal.signal(signal.SIGUSR1, lambda signum, frame: asked.put(signum))
    threading.Thread(target=_drain, args=(service, counted, asked), name="drain", daemon=True).start()
    lifecycle.start_background(service)
    log.info("gateway process %s serving (granian)", os.getpid())
    return counted


def _drain(service, counted, asked: queue.SimpleQueue) -> None:
    asked.get()
    pool, graceful = service.pool, service.settings.graceful_timeout
    pool.drain()
    deadline = time.monotonic() + max(graceful - STOP_MARGIN, graceful * 0.5)
    busy = lambda: counted.count or len(pool.queue)   # noqa: E731
    if not lifecycle.wait_until_quiet(busy, deadline):
        log.warning("graceful timeout reached with %s request(s) still in flight", counted.count)
    pool.stop(timeout=max(0.5, min(5.0, deadline + STOP_MARGIN / 2 - time.monotonic())))
    log.info("stopped")
    os.kill(os.getppid(), signal.SIGUSR2)
