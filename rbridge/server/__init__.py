"""`rbridge serve`: put the parts together, run the HTTP server, drain on SIGTERM.

Order of start: logging -> users file (an initial admin when empty) -> signing keys -> the
model catalogue -> pool -> app -> HTTP server. The HTTP server listens at once (so /healthz
answers and /readyz says "starting") while the pool starts its workers in the background.

Signals: the handlers only record the signal on a queue; the main thread acts on it (drain:
/readyz turns 503, no new connections, in-flight requests finish within --graceful-timeout,
workers stop, exit 0), so Kubernetes rolling updates lose no request.
"""

from __future__ import annotations

import atexit
import logging
import queue
import shutil
import tempfile
import signal
import sys
import threading
import time
from pathlib import Path

import waitress
from prometheus_client import start_http_server

from rbridge.gateway import users
from rbridge.models import catalog
from rbridge.gateway.app import create_app
from rbridge.gateway.auth import Authenticator, install_log_redaction, load_signing_keys
from rbridge.errors import ConfigError
from rbridge.logs import setup_logging
from rbridge.metrics import Metrics
from rbridge.pool.pool import Pool
from rbridge.models.reload import Reloader

log = logging.getLogger("bridge.server")


class InFlight:
    """WSGI middleware counting requests being handled, so a drain knows when it is done."""

    def __init__(self, app):
        self.app, self.count, self._lock = app, 0, threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.count += 1
        try:
            return list(self.app(environ, start_response))
        finally:
            with self._lock:
                self.count -= 1


def build(settings):
    """Everything but the HTTP server: returns (app, pool)."""
    password = users.ensure_initial_admin(settings.users)
    if password is not None:
        secret = settings.users.parent / users.INITIAL_PASSWORD_FILE
        log.warning("no users existed: created user 'admin' with a random password, written to %s "
                    "(mode 0600). Add users with: rbridge user add NAME --users %s", secret, settings.users)
        if sys.stdout.isatty():
            print(f"\n  admin password: {password}\n", flush=True)
    store = users.UserStore(settings.users)
    keys, persistent = load_signing_keys(settings)
    if not persistent:
        log.warning("no signing key configured (--signing-key-file or RBRIDGE_SIGNING_KEY): made a "
                    "random one; tokens will not survive a restart or work across replicas")
    fetch_error = None
    if settings.fetch_manifest:
        from rbridge.models.fetch import FetchError, fetch_models
        try:
            fetch_models(settings.fetch_manifest, settings.models, allow_http=settings.allow_http_fetch)
        except FetchError as exc:
            fetch_error = f"fetching models failed: {exc}"
            log.error(fetch_error)
    snapshots = Path(tempfile.mkdtemp(prefix="rbridge-models-"))   # the versions workers load
    atexit.register(shutil.rmtree, snapshots, True)
    entries = catalog.scan(settings.models, snapshots)
    if settings.default_model and settings.default_model not in entries:
        raise ConfigError(f"--default-model {settings.default_model}: no {settings.default_model}.rds "
                          f"in {settings.models}")
    if not entries:
        log.warning("no models in %s: add <name>.rds files", settings.models)
    metrics = Metrics()
    pool = Pool(settings, entries, metrics)
    pool.failed_reason = fetch_error
    pool.snapshots = snapshots
    pool.reloader = Reloader(pool, settings.reload_interval)
    metrics.attach(pool)
    app = create_app(settings, pool, Authenticator(store, keys, settings.token_ttl,
                                                   max(settings.refresh_token_ttl, settings.token_ttl)))
    return settings, app, pool


def http_threads(settings) -> int:
    """HTTP threads: one per request that may be queued or scored at once, plus a few."""
    return settings.threads or min(settings.queue_size + settings.workers + 8, 512)


def serve(settings) -> int:
    setup_logging(settings.log_format)
    install_log_redaction()
    settings, app, pool = build(settings)
    if settings.certfile or settings.http_server == "gunicorn":   # one gunicorn gateway process (tls.py)
        from rbridge.server.front_gunicorn import serve_tls
        return serve_tls(settings, app, pool)
    signals: queue.Queue = queue.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: signals.put(signum))

    counted = InFlight(app)
    threads = http_threads(settings)
    # Without --trusted-proxies waitress drops X-Forwarded-* itself; with them the app decides
    # (throttle.client_address). waitress buffers a body before the app sees it, so it refuses
    # (in plain text) bodies over twice --max-body; the app answers the rest with a JSON 413.
    server = waitress.create_server(counted, host=settings.host, port=settings.port, threads=threads,
                                    connection_limit=max(1000, threads * 4), backlog=2048,
                                    ident="rbridge", clear_untrusted_proxy_headers=not settings.trusted_proxies,
                                    max_request_body_size=2 * settings.max_body, channel_timeout=120)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=pool.metrics.registry)
    log.info("listening on http://%s:%s (%s HTTP threads); models: %s", settings.host, settings.port,
             threads, ", ".join(sorted(pool.entries)) or "none")
    started = time.monotonic()
    if pool.failed_reason is None:
        threading.Thread(target=_start_pool, args=(pool, started), name="pool-start", daemon=True).start()

    return _drain(settings, server, counted, pool, _wait_for_signal(signals))


def _wait_for_signal(signals: queue.Queue) -> int:
    """Block until a handler records a signal. The wait has a timeout because the kernel may
    deliver the signal to another thread, and Python runs handlers only when the main thread
    runs bytecode: an untimed wait could sleep through SIGTERM."""
    while True:
        try:
            return signals.get(timeout=0.1)
        except queue.Empty:
            continue


def _start_pool(pool, started: float) -> None:
    try:
        pool.start()
    except Exception as exc:  # recorded in pool.failed_reason: /readyz shows it
        log.error("the pool could not start: %s", exc)
        return
    log.info("pool started in %.2f s", time.monotonic() - started)
    pool.reloader.start()


def _drain(settings, server, counted: InFlight, pool, signum) -> int:
    log.info("received %s: draining (up to %g s)", signal.Signals(signum).name, settings.graceful_timeout)
    pool.draining = True   # /readyz answers 503 from now on; connections are still accepted
    deadline = time.monotonic() + settings.graceful_timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = counted.count or len(server.task_dispatcher.queue) or len(pool.queue)
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 0.2:
            break
        time.sleep(0.02)
    else:
        log.warning("graceful timeout reached with %s request(s) still in flight", counted.count)
    pool.stop(timeout=5)
    server.close()
    server.task_dispatcher.shutdown(timeout=1)
    log.info("stopped")
    return 0
