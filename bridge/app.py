"""The HTTP gateway: routes, authentication, validation, errors, health and metrics.

`create_app(settings, pool, ...)` builds the Flask app around an injected pool (the real one
in `server.py`, a fake in the gateway's unit tests). The way of one POST /predict:
    predict() -> authenticate -> parse JSON (orjson) -> Schema.encode (validate.py)
    -> pool.predict (pool.py: queue, worker, R) -> render predictions -> JSON.
Every error is a BridgeError rendered by one handler as {"error": {"code", "message"}}.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from . import protocol
from .auth import Authenticator, require_role
from .errors import BadRequest, BridgeError, NotFound, TooLarge, Unavailable
from .validate import Schema

log = logging.getLogger("bridge.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_JSON = orjson.OPT_SERIALIZE_NUMPY
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


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
        if full:
            out.update({
                "description": entry.description, "sha256": entry.spec.sha256 if entry.spec else None,
                "size": entry.size, "packages": info.packages if info else None,
                "scoring": "score() in " + f"{name}.R" if entry.spec and entry.spec.script else "default",
                "predict_args": entry.spec.predict_args if entry.spec else None,
                "timeout": self.pool.timeout_for(name),
                "schema": {"columns": info.schema if info else None,
                           "source": info.schema_source if info else None}})
        return out


def create_app(settings, pool, authenticator: Authenticator) -> Flask:
    app = Flask("rbridge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    models = Models(pool, settings.default_model)
    metrics = pool.metrics
    app.extensions["rbridge"] = {"pool": pool, "models": models, "auth": authenticator}

    def user(role: str = "scorer"):
        u = authenticator.authenticate(request.headers.get("Authorization"))
        require_role(u, role)
        g.user = u.name
        return u

    @app.before_request
    def start_request():
        g.started = time.perf_counter()
        rid = request.headers.get("X-Request-ID", "")
        g.request_id = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        g.user = g.model = g.version = g.worker = None
        g.rows = 0

    @app.after_request
    def finish_request(response: Response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if g.get("model"):
            seconds = time.perf_counter() - g.started
            metrics.request(g.model, response.status_code, seconds, g.rows)
            log.info("%s %s %s", request.method, request.path, response.status_code, extra={"fields": {
                "request_id": g.request_id, "user": g.user, "model": g.model, "version": g.version,
                "rows": g.rows, "status": response.status_code, "latency_ms": round(seconds * 1000, 3),
                "worker": g.worker}})
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
        return json_response({"error": {"code": slug, "message": exc.description}}, exc.code or 500)

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
        u = authenticator.login(body["username"], body["password"])
        return json_response(authenticator.issue(u))

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
        u = user()
        info = models.info(name)
        g.model = name if name in pool.entries else None
        if info is None or not info.ok:
            raise _unknown(name) if name not in pool.entries else Unavailable(
                f"model '{name}' is not loaded: {models.describe(name)['error'] or 'still loading'}",
                code="model_not_loaded")
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

    @app.get("/metrics")
    def metrics_endpoint():
        user("admin")
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    return app


def _json_body():
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest("the request has no body; send JSON")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def _unknown(name: str) -> NotFound:
    return NotFound(f"no model named '{name}' (GET /models lists the models)", code="unknown_model")


def render(output: protocol.Output):
    """Worker output -> JSON-ready predictions: a list of values, or a list of row objects."""
    if output.kind == "vector":
        return output.values[0]
    cols = [v.tolist() if hasattr(v, "tolist") else v for v in output.values]
    names = output.names
    return [dict(zip(names, row)) for row in zip(*cols)]
