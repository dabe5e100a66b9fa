"""HTTPS without a proxy: `rbridge serve --certfile F --keyfile F` runs the gateway in gunicorn.

(`--http-server gunicorn` runs the same gunicorn set-up over plain HTTP: the benchmark compares
it with waitress, the default.)

waitress has no TLS, so this path uses gunicorn (a `BaseApplication` configured here, never from
argv, a config file or GUNICORN_CMD_ARGS) with exactly one gateway process: the gateway holds
per-process state (the R pool, the HTTP Basic cache, the throttle, token revocations, metrics),
so a second process would split it. Its gthread worker has as many threads as waitress would
(lifecycle.http_threads). Behind an ingress or load balancer that terminates TLS, use plain
`rbridge serve` instead.

Lifecycle of the two processes:
    master  `build()` runs here, before the fork: users file, signing keys, registry, app, and an
            unstarted pool, so configuration errors show at once and nothing is forked twice. It
            starts no threads (a fork copies only the thread that forks). SIGTTIN is ignored: one
            gateway process only. gunicorn's control socket is off.
    worker  forked once. `post_worker_init` starts the R pool (its workers are spawned processes,
            children of this one) and the metrics port, and wraps gunicorn's SIGTERM handler: the
            wrapper records the drain (pool.drain(), so /readyz answers 503 at once) and hands
            over to gunicorn, which stops accepting and lets in-flight requests finish within
            --graceful-timeout. `worker_exit` then stops the pool. Should the worker die, the
            master forks a new one from the same unstarted state; the old R workers exit when
            their socket closes.
Responses carry `Server: rbridge`, as under waitress: no product or version banner. gunicorn's
own messages go through the bridge's logging (JSON, redacted); it writes no access log (the
app logs predictions itself). The TLS context (TLS 1.2 at least) is built once and rebuilt only
when the certificate or key file changes, so a renewed certificate applies to new connections
without a restart.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import ssl
import threading

import gunicorn.http.wsgi
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from rbridge.server import lifecycle

log = logging.getLogger("bridge.tls")

# gunicorn's Response sends "Server: gunicorn" (from this module global, read per response).
gunicorn.http.wsgi.SERVER = "rbridge"
gunicorn.http.wsgi.SERVER_SOFTWARE = "rbridge"


class TlsContext:
    """gunicorn asks for an SSLContext per connection: hand out one, rebuilt when the files change."""

    def __init__(self, certfile, keyfile):
        self.certfile, self.keyfile = str(certfile), str(keyfile)
        self._stamp = None
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def _files_stamp(self):
        return tuple((st.st_mtime_ns, st.st_size, st.st_ino)
                     for st in (os.stat(self.certfile), os.stat(self.keyfile)))

    def build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=self.certfile, keyfile=self.keyfile)
        return context

    def get(self, conf=None, default_factory=None) -> ssl.SSLContext:
        try:
            stamp = self._files_stamp()
        except OSError:
            stamp = self._stamp          # files briefly missing while being replaced: keep the old ones
        with self._lock:
            if self._context is None or stamp != self._stamp:
                try:
                    self._context, self._stamp = self.build(), stamp
                except (OSError, ssl.SSLError) as exc:
                    if self._context is None:
                        raise
                    log.error("cannot reload the TLS certificate (%s); still using the previous one", exc)
                    self._stamp = stamp
            return self._context


class _Logger(glogging.Logger):
    """gunicorn's messages through the root logger (the bridge's format and redaction)."""

    def setup(self, cfg):
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


class _Arbiter(Arbiter):
    def handle_ttin(self):
        self.log.warning("SIGTTIN ignored: rbridge runs exactly one gateway process")


class GatewayServer(BaseApplication):
    """gunicorn, configured in code for the one gateway process."""

    def __init__(self, service, threads: int):
        self.service, self.threads = service, threads
        self.settings, self.app, self.pool = service.settings, service.app, service.pool
        self.tls = TlsContext(self.settings.certfile, self.settings.keyfile) if self.settings.certfile else None
        super().__init__(prog="rbridge")

    def load_config(self):
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        options = {
            "bind": [f"{host}:{s.port}"], "workers": 1, "worker_class": "gthread",
            "threads": self.threads, "worker_connections": max(1000, self.threads * 4),
            "backlog": 2048, "keepalive": 5, "timeout": 60, "graceful_timeout": math.ceil(s.graceful_timeout),
            "max_requests": 0, "preload_app": False, "reload": False,
            "forwarded_allow_ips": ",".join(s.trusted_proxies),
            "accesslog": None, "errorlog": "-", "loglevel": "info", "capture_output": False,
            "logger_class": _Logger, "proc_name": "rbridge", "control_socket_disable": True,
            "post_worker_init": self._post_worker_init, "worker_int": self._worker_int,
            "worker_exit": self._worker_exit,
        }
        if self.tls is not None:
            options.update({"certfile": str(s.certfile), "keyfile": str(s.keyfile),
                            "ssl_context": self._ssl_context})
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.app

    def run(self):
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            log.error("the HTTPS server could not start: %s", exc)
            raise SystemExit(1) from None

    # -- hooks (gunicorn calls them in the worker process) -----------------------------------
    def _ssl_context(self, conf, default_factory):
        return self.tls.get()

    def _post_worker_init(self, worker):
        pool, previous = self.pool, signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):        # record only; gunicorn's handler does the rest
            pool.drain()
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        signal.siginterrupt(signal.SIGTERM, False)
        lifecycle.start_background(self.service, lifecycle.end_forked_gateway)
        log.info("gateway process %s serving %s://%s:%s (%s threads); models: %s", os.getpid(),
                 "https" if self.tls else "http", self.settings.host, self.settings.port, self.threads,
                 ", ".join(self.service.registry.names()) or "none")

    def _worker_int(self, worker):
        self.pool.drain()

    def _worker_exit(self, server, worker):
        log.info("gateway process %s exiting: stopping the R workers", os.getpid())
        self.pool.drain()
        self.pool.stop(timeout=5)


def serve(service) -> int:
    """Run HTTP(S) until SIGTERM (drain) or SIGINT (quick stop); returns the exit code."""
    settings = service.settings
    lifecycle.check_certificate(settings)
    GatewayServer(service, lifecycle.http_threads(settings)).run()   # exits through SystemExit
    return 0
