"""The waitress front: plain HTTP, threads in the gateway process.

Drain on SIGTERM: /readyz answers 503 at once while connections are still accepted, in-flight
and queued requests finish (up to --graceful-timeout), then the pool and the server stop.
When R cannot start (lifecycle.EXIT_NO_R) the server closes and `rbridge serve` exits 3.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import waitress

from rbridge.server.lifecycle import (EXIT_NO_R, InFlight, http_threads, record_signals,
                                      start_background, wait_for_signal, wait_until_quiet)

log = logging.getLogger("bridge.server")

BOOT_FAILED = "boot-failed"   # put on the signal queue by the pool-start thread: R cannot start


def serve(service) -> int:
    settings, pool = service.settings, service.pool
    signals = record_signals(signal.SIGTERM, signal.SIGINT)
    counted = InFlight(service.app)
    threads = http_threads(settings)
    # Without --trusted-proxies waitress drops X-Forwarded-* itself; with them the app decides
    # (throttle.client_address). waitress buffers a body before the app sees it, so it refuses
    # (in plain text) bodies over twice --max-body (or, for uploads, --max-model-bytes: it spools
    # them to a temporary file, not memory); the app answers the rest with a JSON 413.
    server = waitress.create_server(counted, host=settings.host, port=settings.port, threads=threads,
                                    connection_limit=max(1000, threads * 4), backlog=2048,
                                    ident="rbridge", clear_untrusted_proxy_headers=not settings.trusted_proxies,
                                    max_request_body_size=max(2 * settings.max_body, settings.max_model_bytes + (1 << 20)),
                                    channel_timeout=120)
    threading.Thread(target=server.run, name="http", daemon=True).start()
    log.info("listening on http://%s:%s (%s HTTP threads); models: %s", settings.host, settings.port,
             threads, ", ".join(service.registry.names()) or "none")
    start_background(service, lambda: signals.put(BOOT_FAILED))

    signum = wait_for_signal(signals)
    if signum == BOOT_FAILED:
        server.close()
        return EXIT_NO_R
    log.info("received %s: draining (up to %g s)", signal.Signals(signum).name, settings.graceful_timeout)
    pool.drain()
    busy = lambda: counted.count or len(server.task_dispatcher.queue) or len(pool.queue)  # noqa: E731
    if not wait_until_quiet(busy, time.monotonic() + settings.graceful_timeout):
        log.warning("graceful timeout reached with %s request(s) still in flight", counted.count)
    pool.stop(timeout=5)
    server.close()
    server.task_dispatcher.shutdown(timeout=1)
    log.info("stopped")
    return 0
