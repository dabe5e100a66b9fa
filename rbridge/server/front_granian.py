"""The granian front (the default): HTTP/1.1, HTTP/2 and TLS handled in Rust, the app in one
gateway process.

granian runs a WSGI app only in a worker process it starts itself (its embedded mode has no
WSGI), so there are two processes, as with gunicorn:
    main     `rbridge serve`: builds the parts (`build()`: users file, signing keys, registry,
             app, an unstarted pool), so configuration errors show at once, then runs granian's
             supervisor. It starts no threads of its own before the fork.
    gateway  granian's one worker, forked from main. `_gateway_app` (granian's target) scrubs
             the settings' variables from its environment (granian copies the environment into
             every request's environ), starts the pool and the reloader in the background and
             the connection cap's sweeper (conncap.py: it needs this process's sockets), and
             returns the app: FastPath for scoring in front of Flask, counted by InFlight.
             The R workers are its children.
Drain. SIGTERM or SIGINT reach main; its handler only records them (granian's own would stop
the listener at once). Main's drain thread asks the gateway to drain (SIGUSR1): /readyz answers
503 at once and every response says `Connection: close`, so probes and keep-alive clients learn
it. When it is quiet, or after ANNOUNCE seconds at most, the gateway tells main (SIGUSR2) and
main lets granian shut down: the listener closes (new connections are refused), idle
connections are closed, requests already received finish (granian waits for them); the gateway
then stops the pool, exits, and so does main, with 0, within --graceful-timeout.
Boot failure. When R cannot start (lifecycle.EXIT_NO_R) the gateway sets a shared flag and ends;
granian stops, and main returns EXIT_NO_R.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
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
from rbridge.server.conncap import ConnectionSweeper
from rbridge.server.guard import ClientGuard, TrustedPeers

log = logging.getLogger("bridge.server")

_SERVICE = None            # set in main before the fork; the gateway process inherits it
ANNOUNCE = 1.0             # seconds at most between the drain's start and closing the listener
# granian's backpressure caps the connections a worker holds, idle ones included: at the HTTP
# threads' count, a few dozen idle connections starved /healthz. Python's concurrency is capped
# by the blocking threads instead; a connection waiting for a thread costs a Rust task, not one.
CONNECTIONS = 16384
HEADER_TIMEOUT_MS = 10_000 # time to send a request's headers
_R_CANNOT_START = None     # a shared flag, made in main before the fork: the gateway sets it


def serve(service) -> int:
    global _SERVICE, _R_CANNOT_START
    _SERVICE = service
    _R_CANNOT_START = multiprocessing.Value("b", 0)
    s = service.settings
    lifecycle.check_certificate(s)
    threads = lifecycle.http_threads(s)
    multiprocessing.set_start_method("fork", force=True)   # the gateway inherits the built parts
    server = _Server(
        "rbridge.server.front_granian:_gateway_app", address=s.host, port=s.port,
        interface=Interfaces.WSGI, workers=1, blocking_threads=threads, backpressure=CONNECTIONS,
        backlog=2048, runtime_threads=1,
        http1_settings=HTTP1Settings(keep_alive=True, header_read_timeout=HEADER_TIMEOUT_MS),
        log_enabled=False, log_access=False, ssl_cert=s.certfile, ssl_key=s.keyfile,
        ssl_protocol_min=SSLProtocols.tls12, workers_kill_timeout=max(1, int(s.graceful_timeout - ANNOUNCE)),
        respawn_failed_workers=False)
    log.info("listening on %s://%s:%s (granian, %s HTTP threads); models: %s",
             "https" if s.certfile else "http", s.host, s.port, threads,
             ", ".join(service.registry.names()) or "none")
    try:
        server.serve(target_loader=_gateway_app, wrap_loader=False)
    except SystemExit:
        # The gateway ended at boot because R cannot start: granian exits 1, rbridge serve with
        # EXIT_NO_R.
        if _R_CANNOT_START.value:
            return lifecycle.EXIT_NO_R
        raise
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
        deadline = time.monotonic() + min(ANNOUNCE, graceful / 4) + 1
        while time.monotonic() < deadline:      # until the gateway says to close the listener (SIGUSR2)
            try:
                if self._signals.get(timeout=max(0.01, deadline - time.monotonic())) == signal.SIGUSR2:
                    break
            except queue.Empty:
                break
        super().signal_handler_interrupt()      # granian: close the listener, stop the gateway


def _gateway_app():
    """granian's target in the gateway process: the WSGI app, with the pool starting."""
    service = _SERVICE
    for f in settings_mod.FIELDS:               # granian copies os.environ into every environ
        os.environ.pop(settings_mod.env_name(f.name), None)
    s = service.settings
    guarded = ClientGuard(service.app, s.max_inflight_per_client, s.trusted_proxies)
    # The accepted sockets are this process's: the per-address connection cap must run here.
    ConnectionSweeper(s.port, s.max_connections_per_client, TrustedPeers(s.trusted_proxies),
                      closed=service.pool.metrics.connections_closed).start()
    counted = lifecycle.InFlight(guarded, closing=lambda: service.pool.draining,
                                 headers=(("Server", "rbridge"),))
    asked: queue.SimpleQueue = queue.SimpleQueue()
    signal.signal(signal.SIGUSR1, lambda signum, frame: asked.put(signum))
    threading.Thread(target=_drain, args=(service, counted, asked), name="drain", daemon=True).start()
    # granian ends this process once it has answered what it received; multiprocessing runs its
    # finalizers first, so the R workers are stopped (not left to notice their socket closing).
    multiprocessing.util.Finalize(None, service.pool.stop, kwargs={"timeout": 2}, exitpriority=10)
    lifecycle.start_background(service, _boot_failed)
    log.info("gateway process %s serving (granian)", os.getpid())
    return counted


def _boot_failed() -> None:
    _R_CANNOT_START.value = 1
    lifecycle.end_forked_gateway()


def _drain(service, counted, asked: queue.SimpleQueue) -> None:
    asked.get()
    pool, graceful = service.pool, service.settings.graceful_timeout
    started = time.monotonic()
    pool.drain()
    busy = lambda: counted.count or len(pool.queue)   # noqa: E731
    lifecycle.wait_until_quiet(busy, started + min(ANNOUNCE, graceful / 4), quiet=0.1)
    os.kill(os.getppid(), signal.SIGUSR2)             # main: close the listener now
    if not lifecycle.wait_until_quiet(busy, started + graceful - 0.5):
        log.warning("graceful timeout reached with %s request(s) still in flight", counted.count)
    pool.stop(timeout=max(0.2, min(5.0, started + graceful - time.monotonic())))
    log.info("stopped")
