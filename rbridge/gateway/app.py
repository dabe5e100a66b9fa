"""The HTTP gateway: routes, authentication, validation, errors, health and metrics.

`create_app(settings, pool, ...)` builds the Flask app around an injected pool (the real one
in `server.py`, a fake in the gateway's unit tests). The way of one POST /predict:
    predict() -> authenticate -> parse JSON (orjson) -> Schema.encode (validate.py)
    -> pool.predict (pool.py: queue, worker, R) -> render predictions -> JSON.
Every error is a BridgeError rendered by one handler as {"error": {"code", "message"}}.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid

import numpy as np
import orjson
from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from rbridge.gateway import csvbody, dashboard, openapi, throttle
from rbridge.pool import protocol
from rbridge.gateway.auth import Authenticator, require_role
from rbridge.errors import BadRequest, BridgeError, NotFound, TooLarge, Unavailable
from rbridge.schema import Schema

log = logging.getLogger("bridge.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_JSON = orjson.OPT_SERIALIZE_NUMPY
PROBES = ("/healthz", "/readyz")
_ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:12], itertools.count(1)   # unique ids without a syscall each
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}
HSTS = "max-age=31536000"                # only on responses served over HTTPS
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
CORS_EXPOSE_HEADERS = "X-Request-ID, X-Model-Version, Retry-After"
MAX_JSON_DEPTH = 6       # {"data": [{col: value}]} is 3 levels; a row value may nest 3 more


class LimitedRequest(Request):
    """A chunked body (no Content-Length) that reaches --max-body is refused with 413.

    werkzeug stops reading such a body at MAX_CONTENT_LENGTH but returns what it read, cut
    short, without an error; waitress de-chunks bodies itself, gunicorn does not.
    """

    def get_data(self, *args, **kwargs):
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        if limit is not None and self.content_length is None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return data


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=_JSON), status=status, headers=headers,
                    mimetype="application/json")


class Models:
    """The models the app serves: catalogue entries joined with what the workers learned."""

    def __init__(self, pool, default_model: str | None):
        self.pool = pool
        self._schemas: dict[tuple, Schema] = {}
        names = sorted(pool.entries)
        if default_model:
            self.default = default_model
        else:
            self.default = names[0] if len(names) == 1 else None

    def info(self, name: str) -> protocol.ModelInfo | None:
        return self.pool.infos.get(name)

    def schema(self, info: protocol.ModelInfo) -> Schema:
        key = (info.name, info.version)
        schema = self._schemas.get(key)
        if schema is None:
            schema = self._schemas[key] = Schema(info.schema)
        return schema

    def describe(self, name: str, full: bool = False) -> dict:
        entry, info = self.pool.entries[name], self.info(name)
        if entry.spec is None:
            state, error = "failed", entry.error
        elif info is None:
            state, error = "loading", None
        else:
            state, error = ("loaded", None) if info.ok else ("failed", info.error)
        out = {"name": name, "version": entry.spec.version if entry.spec else None, "state": state,
               "error": error, "r_class": info.r_class if info else None}
        reloader = getattr(self.pool, "reloader", None)
        if reloader is not None and name in reloader.rejected:
            out["reload_error"] = reloader.rejected[name]   # newer files refused; this version serves
        if full:
            out.update({
                "description": entry.description, "sha256": entry.spec.sha256 if entry.spec else None,
                "size": entry.size, "packages": info.packages if info else None,
                "scoring": "score() in " + f"{name}.R" if entry.spec and entry.spec.script else "default",
                "predict_args": entry.spec.predict_args if entry.spec else None,
                "timeout": self.pool.timeout_for(name),
                "load_seconds": round(info.load_seconds, 3) if info else None,
                "loaded_at": _iso(self.pool.loaded_at.get(name)) if hasattr(self.pool, "loaded_at") else None,
                "schema": {"columns": info.schema if info else None,
                           "source": info.schema_source if info else None}})
        return out


def create_app(settings, pool, authenticator: Authenticator) -> Flask:
    app = Flask("rbridge", static_folder=None)   # rbridge/gateway/static is served by a route below
    app.request_class = LimitedRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    models = Models(pool, settings.default_model)
    metrics = pool.metrics
    board = dashboard.Board(pool, metrics)
    app.extensions["rbridge"] = {"pool": pool, "models": models, "auth": authenticator}
    trusted_proxies = throttle.parse_networks(settings.trusted_proxies)
    cors_origins = frozenset(settings.cors_origins)

    def client() -> str:
        """The caller's address (X-Forwarded-For counts only from --trusted-proxies)."""
        return throttle.client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                       trusted_proxies)

    def user(role: str = "scorer"):
        u = authenticator.authenticate(request.headers.get("Authorization"),
                                       request.headers.get("X-API-Key"), client())
        require_role(u, role)
        g.user = u.name
        return u

    def cors_origin() -> str | None:
        origin = request.headers.get("Origin")
        if not cors_origins or not origin:
            return None
        if origin in cors_origins:
            return origin
        return "*" if "*" in cors_origins else None

    @app.before_request
    def cors_preflight():
        if request.method == "OPTIONS" and cors_origins and "Access-Control-Request-Method" in request.headers:
            if cors_origin():
                return Response(status=204)
            return json_response({"error": {"code": "cors_origin_not_allowed", "message":
                                            "this origin is not in --cors-origins"}}, 403)
        return None

    @app.before_request
    def start_request():
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if _REQUEST_ID.match(rid) else f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"
        g.user = g.model = g.version = g.worker = None
        g.rows = 0

    @app.after_request
    def finish_request(response: Response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if request.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        origin = cors_origin()
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        if cors_origins:
            response.vary.add("Origin")
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        if g.get("model"):
            metrics.request(g.model, response.status_code, seconds, g.rows)
        if request.path not in PROBES:    # one line per request; probes would drown the log
            log.info("%s %s %s", request.method, request.path, response.status_code, extra={"fields": {
                "request_id": g.get("request_id"), "user": g.get("user"), "model": g.get("model"),
                "version": g.get("version"), "rows": g.get("rows", 0), "status": response.status_code,
                "latency_ms": round(seconds * 1000, 3), "worker": g.get("worker")}})
        return response

    @app.errorhandler(BridgeError)
    def bridge_error(exc: BridgeError):
        return json_response({"error": {"code": exc.code, "message": exc.message, **exc.details}},
                             exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            exc = TooLarge(f"the request body is larger than {settings.max_body} bytes (--max-body)")
            return bridge_error(exc)
        slug = re.sub(r"[^a-z]+", "_", (exc.name or "error").lower()).strip("_")
        allow = getattr(exc, "valid_methods", None)     # 405 must say what is allowed (RFC 9110)
        return json_response({"error": {"code": slug, "message": exc.description}}, exc.code or 500,
                             {"Allow": ", ".join(allow)} if allow else None)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        return json_response({"error": {"code": "internal_error",
                                        "message": "the bridge failed; the server log has the details "
                                                   f"(request id {g.get('request_id')})"}}, 500)

    # -- health ----------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        ok, reason = pool.ready()
        body = {"ready": ok, "reason": reason,
                "models": {n: {k: v for k, v in models.describe(n).items() if k in ("state", "error", "version")}
                           for n in sorted(pool.entries)}}
        return json_response(body, 200 if ok else 503)

    # -- sign in ---------------------------------------------------------------------------
    @app.post("/login")
    def login():
        body = _json_body()
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
                or not isinstance(body.get("password"), str):
            raise BadRequest('send {"username": "...", "password": "..."}')
        u = authenticator.login(body["username"], body["password"], client())
        return json_response(authenticator.issue(u))

    @app.post("/login/refresh")
    def login_refresh():
        return json_response(authenticator.refresh(_refresh_token()))

    @app.post("/logout")
    def logout():
        """Revokes the refresh token (and a bearer access token sent along) on this replica."""
        scheme, _, access = (request.headers.get("Authorization") or "").partition(" ")
        authenticator.logout(_refresh_token(), access.strip() if scheme.lower() == "bearer" else None)
        return json_response({"revoked": True})

    # -- models ----------------------------------------------------------------------------
    @app.get("/models")
    def list_models():
        user()
        return json_response({"models": [models.describe(n) for n in sorted(pool.entries)],
                              "default": models.default})

    @app.get("/models/<name>")
    def show_model(name: str):
        user()
        if name not in pool.entries:
            raise _unknown(name)
        return json_response(models.describe(name, full=True))

    @app.post("/predict")
    def predict_default():
        if models.default is None:
            user()
            raise NotFound("several models are served and none is the default: use "
                           "POST /models/<name>/predict (GET /models lists them)", code="no_default_model")
        return predict(models.default)

    @app.post("/models/<name>/predict")
    def predict(name: str):
        user()
        info = models.info(name)
        g.model = name if name in pool.entries else None
        if info is None or not info.ok:
            raise _unknown(name) if name not in pool.entries else Unavailable(
                f"model '{name}' is not loaded: {models.describe(name)['error'] or 'still loading'}",
                code="model_not_loaded")
        if request.mimetype == "text/csv":
            body = csvbody.parse(request.get_data(cache=False), info.schema,
                                 request.mimetype_params.get("charset"))
        else:
            body = _json_body()
        columns, nrows = models.schema(info).encode(body, settings.max_rows)
        g.rows = nrows
        job = pool.predict(name, protocol.Part(g.request_id, nrows, columns), pool.timeout_for(name))
        g.version, g.worker = job.version, job.slot
        return json_response({"model": name, "version": job.version,
                              "predictions": render(job.output)},
                             headers={"X-Model-Version": job.version or ""})

    # -- operators -------------------------------------------------------------------------
    @app.get("/status")
    def status():
        user("admin")
        return json_response(pool.status())

    @app.post("/admin/reload")
    def admin_reload():
        user("admin")
        if getattr(pool, "reloader", None) is None:
            raise Unavailable("hot reload is not available in this server", code="no_reload")
        try:
            return json_response(pool.reloader.reload("POST /admin/reload"))
        except RuntimeError as exc:
            raise Unavailable(str(exc), code="reload_failed") from None

    @app.get("/metrics")
    def metrics_endpoint():
        user("admin")
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    # -- documents and pages (openapi.py, dashboard.py): pages and assets are open, data is not --
    @app.get("/openapi.json")
    def openapi_document():
        user()
        return json_response(openapi.build_spec(
            [models.describe(n, full=True) for n in sorted(pool.entries)], max_rows=settings.max_rows,
            default_model=models.default, routes=[r.rule for r in app.url_map.iter_rules()]))

    @app.get("/models/<name>/openapi.json")
    def model_openapi_document(name: str):
        user()
        if name not in pool.entries:
            raise _unknown(name)
        return json_response(openapi.model_spec(models.describe(name, full=True), max_rows=settings.max_rows))

    @app.get("/docs")
    def docs_page():
        return dashboard.page("docs.html")

    @app.get("/dashboard")
    def dashboard_page():
        return dashboard.page("dashboard.html")

    @app.get("/dashboard/data")
    def dashboard_data():
        user("admin")
        return json_response({**board.snapshot(),
                              "models": [models.describe(n) for n in sorted(pool.entries)]})

    @app.get("/static/<path:filename>")
    def static_file(filename: str):
        return dashboard.static_file(filename)

    return app


def _json_body():
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest("the request has no body; send JSON")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels; row values are "
                         "numbers, strings, booleans or null", code="too_deep")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _refresh_token() -> str:
    body = _json_body()
    token = body.get("refresh_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise BadRequest('send {"refresh_token": "..."} (from POST /login)')
    return token


_NOT_MARKS = bytes(range(256)).translate(None, b'"[]{}')
_STEP = np.zeros(256, np.int32)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_depth(data: bytes) -> int:
    """How deep a JSON text nests, without parsing it (brackets inside strings do not count).

    Costs about 3 µs for a small body and 10 ms a megabyte; orjson alone would accept 1024 levels.
    """
    if b"\\" in data:   # drop escaped backslashes and quotes, so that every '"' left is real
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _NOT_MARKS)
    if len(marks) < 256:
        depth = deepest = 0
        inside = False
        for c in marks:
            if c == 34:
                inside = not inside
            elif not inside:
                depth += 1 if c in (91, 123) else -1
                deepest = max(deepest, depth)
        return deepest
    a = np.frombuffer(marks, np.uint8)
    outside = (np.cumsum(a == 34, dtype=np.int32) & 1) == 0
    return int(np.cumsum(_STEP[a] * outside).max())


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _unknown(name: str) -> NotFound:
    return NotFound(f"no model named '{name}' (GET /models lists the models)", code="unknown_model")


def render(output: protocol.Output):
    """Worker output -> JSON-ready predictions: a list of values, or a list of row objects."""
    if output.kind == "vector":
        return output.values[0]
    cols = [v.tolist() if hasattr(v, "tolist") else v for v in output.values]
    names = output.names
    return [dict(zip(names, row)) for row in zip(*cols)]
