"""The fast path: scoring requests answered by a small WSGI handler in front of the Flask app.

POST /models/<name>/predict, POST /predict and POST /v2/models/<name>[/versions/<v>]/infer
(views_v2.scored) are the hot path; Flask's per-request machinery
(request and response objects, routing, hooks, context locals) costs more there than every
other step of the gateway together. This handler does the same steps with the same code
(access.py: request id, headers, access log, metrics; context.authenticate; views_predict.score)
and passes every other request, and any it does not recognise, to Flask unchanged. The
contract is byte-for-byte the same: the gateway tests run against both paths.

Runs in the gateway process, on the HTTP server's threads.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from werkzeug.http import parse_options_header

from rbridge.errors import BridgeError, TooLarge
from rbridge.gateway import access, views_v2
from rbridge.gateway.access import HSTS, SECURITY_HEADERS, Call
from rbridge.gateway.context import authenticate
from rbridge.gateway.views_predict import default_model, score

log = logging.getLogger("bridge.access")
_JSON = orjson.OPT_SERIALIZE_NUMPY
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}
_FIXED = list(SECURITY_HEADERS.items())


class FastPath:
    def __init__(self, app, parts):
        self.app, self.parts = app, parts
        self.max_body = parts.settings.max_body

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST":
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        v2 = None
        if path == "/predict":
            name = None
        elif path.startswith("/models/") and path.endswith("/predict") and "/" not in path[8:-8] and path[8:-8]:
            name = path[8:-8]
        elif (v2 := views_v2.target(path)) is None:
            return self.app(environ, start_response)
        p, call = self.parts, Call(environ.get("HTTP_X_REQUEST_ID"))
        try:
            authenticate(p, call, environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"),
                         environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"))
            if v2 is not None:
                payload, extra = views_v2.scored(p, call, *v2, self._body(environ),
                                                 environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
            else:
                if name is None:
                    name = default_model(p)
                mimetype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
                body, extra = score(p, call, name, self._body(environ), mimetype.lower(), options.get("charset"),
                                    environ.get("HTTP_X_MODEL_VERSION"))
                payload = orjson.dumps(body, option=_JSON)
            status = 200
        except BridgeError as exc:
            status, extra = exc.status, exc.headers
            payload = orjson.dumps(access.error_body(exc, path), option=_JSON)
        except Exception:
            log.exception("internal error on POST %s", path)
            status, extra = 500, {}
            payload = orjson.dumps(access.internal_error_body(call, path), option=_JSON)
        headers = [*_FIXED, ("Content-Type", extra.get("Content-Type", "application/json")),
                   ("Content-Length", str(len(payload))), ("X-Request-ID", call.request_id),
                   *((k, v) for k, v in extra.items() if k != "Content-Type")]
        if environ.get("wsgi.url_scheme") == "https":
            headers.append(("Strict-Transport-Security", HSTS))
        start_response(_STATUS[status], headers)
        access.finish(p.pool.metrics, call, "POST", path, status)
        return [payload]

    def _body(self, environ) -> bytes:
        """The body, at most --max-body bytes (as Flask reads it with MAX_CONTENT_LENGTH)."""
        stream, length = environ["wsgi.input"], environ.get("CONTENT_LENGTH")
        if length:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n > self.max_body:
                raise self._too_large()
            return stream.read(n) if n > 0 else b""
        if not environ.get("wsgi.input_terminated"):
            return b""
        data = stream.read(self.max_body)
        if len(data) >= self.max_body:       # a chunked body that reaches the limit
            raise self._too_large()
        return data

    def _too_large(self) -> TooLarge:
        return TooLarge(f"the request body is larger than {self.max_body} bytes (--max-body)")
