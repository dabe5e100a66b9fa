"""What every request passes on its way in and out, on either path (the Flask app, or the
fast path in front of it for scoring): its request id, the security headers, one access-log
line and the request metrics, and the JSON rendering of errors.

`Call` holds one request's facts as they become known (user, model, version, worker, rows).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid

from rbridge.errors import BridgeError

log = logging.getLogger("bridge.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:12], itertools.count(1)   # unique ids without a syscall each
PROBES = ("/healthz", "/readyz")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}
HSTS = "max-age=31536000"                # only on responses served over HTTPS


class Call:
    __slots__ = ("request_id", "started", "user", "model", "version", "worker", "rows")

    def __init__(self, request_id_header: str | None):
        self.started = time.perf_counter()
        rid = request_id_header or ""
        self.request_id = rid if _REQUEST_ID.match(rid) else f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"
        self.user = self.model = self.version = self.worker = None
        self.rows = 0


def error_body(exc: BridgeError, path: str) -> dict:
    """The one rendering of every error: {"error": {"code", "message", ...details}}, or on the
    Open Inference Protocol's routes (/v2...) the protocol's {"error": "message"}."""
    if path.startswith("/v2/") or path == "/v2":
        return {"error": exc.message}
    return {"error": {"code": exc.code, "message": exc.message, **exc.details}}


def internal_error_body(call: Call, path: str) -> dict:
    return error_body(BridgeError("the bridge failed; the server log has the details (request id "
                                  f"{call.request_id})"), path)


def finish(metrics, call: Call, method: str, path: str, status: int) -> None:
    """Count the request and write its one access-log line (probes are counted, not logged)."""
    seconds = time.perf_counter() - call.started
    if call.model:
        metrics.request(call.model, status, seconds, call.rows, call.version)
    if path not in PROBES:
        log.info("%s %s %s", method, path, status, extra={"fields": {
            "request_id": call.request_id, "user": call.user, "model": call.model,
            "version": call.version, "rows": call.rows, "status": status,
            "latency_ms": round(seconds * 1000, 3), "worker": call.worker}})
