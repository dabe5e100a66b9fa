"""`rbridge serve`: build the parts in order, run an HTTP front, drain on SIGTERM.
Runs in the gateway process; may import every gateway-side package (gateway, pool, models), never rbridge.worker or rpy2.

    parts.py           build(settings): users, signing keys, registry, pool, reloader, app (in that order)
    lifecycle.py       what every front shares: in-flight count, pool start, signals, drain
    front_granian.py   the default front (HTTP/1.1, HTTP/2, TLS in Rust): --http-server granian or auto
    guard.py           granian front: the cap on one client address's requests in flight
    conncap.py         granian front (Linux): the cap on one client address's connections
    front_waitress.py  --http-server waitress (plain HTTP; kept for comparison)
    front_gunicorn.py  --http-server gunicorn (HTTP or HTTPS; kept for comparison)
"""

from __future__ import annotations

from rbridge.gateway.auth import install_log_redaction
from rbridge.logs import setup_logging
from rbridge.server.parts import build


def serve(settings) -> int:
    setup_logging(settings.log_format)
    install_log_redaction()
    service = build(settings)
    if settings.http_server == "gunicorn":
        from rbridge.server import front_gunicorn
        return front_gunicorn.serve(service)
    if settings.http_server == "waitress":
        from rbridge.server import front_waitress
        return front_waitress.serve(service)
    from rbridge.server import front_granian           # auto: granian, for HTTP and HTTPS
    return front_granian.serve(service)
