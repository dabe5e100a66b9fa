"""`rbridge serve`: build the parts in order, run an HTTP front, drain on SIGTERM.
Runs in the gateway process; may import every gateway-side package (gateway, pool, models), never rbridge.worker or rpy2.

    parts.py           build(settings): users, signing keys, registry, pool, reloader, app (in that order)
    lifecycle.py       what every front shares: in-flight count, pool start, signals, drain
    front_waitress.py  the default front (plain HTTP)
    front_gunicorn.py  HTTPS (--certfile) or --http-server gunicorn
"""

from __future__ import annotations

from rbridge.gateway.auth import install_log_redaction
from rbridge.logs import setup_logging
from rbridge.server.parts import build


def serve(settings) -> int:
    setup_logging(settings.log_format)
    install_log_redaction()
    service = build(settings)
    if settings.certfile or settings.http_server == "gunicorn":   # one gunicorn gateway process
        from rbridge.server import front_gunicorn
        return front_gunicorn.serve(service)
    from rbridge.server import front_waitress
    return front_waitress.serve(service)
