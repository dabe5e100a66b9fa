"""The Flask app: `create_app` puts the injected parts together with the routes and hooks.

`create_app(settings, registry, pool, authenticator, reloader=None)`: the server passes the real
pool (rbridge/pool/) and reloader; the gateway's unit tests pass a fake pool. Routes live in
blueprint modules, one per concern:
    views_predict.py   POST /models/<name>/predict, POST /predict      (the way of a request)
    views_models.py    GET /models, /models/<name>, OpenAPI documents
    views_manage.py    PUT/DELETE /models/<name>, versions, activate    (publishers)
    views_rollout.py   /models/<name>/rollout (canary, shadow, promote, abort), pinned predict
    views_signin.py    POST /login, /login/refresh, /logout
    views_ops.py       /healthz, /readyz, /status, /admin/reload, /metrics, pages
    views_v2.py        /v2/...: the Open Inference Protocol (KServe V2) over the same pipeline
Here: the hooks every request passes (request id, CORS, security headers, one access-log line,
metrics) and the error handlers: every error is rendered by access.error_body, as
{"error": {"code", "message"}}, or under /v2 as the protocol's {"error": "message"}.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from rbridge.errors import BridgeError, Forbidden, TooLarge
from rbridge.gateway import (access, dashboard, throttle, traffic, views_manage, views_models, views_ops,
                             views_predict, views_rollout, views_signin, views_v2)
from rbridge.gateway.capture import Captures
from rbridge.gateway.access import HSTS, SECURITY_HEADERS, Call
from rbridge.gateway.auth import Authenticator
from rbridge.gateway.bodies import LimitedRequest
from rbridge.gateway.context import Parts, json_response
from rbridge.gateway.fastpath import FastPath

log = logging.getLogger("bridge.access")
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID, X-Model-Version"
CORS_EXPOSE_HEADERS = "X-Request-ID, X-Model-Version, Retry-After"


def create_app(settings, registry, pool, authenticator: Authenticator, reloader=None,
               fast_path: bool = True) -> Flask:
    """`fast_path`: scoring requests are answered by FastPath in front of Flask (same contract;
    the gateway tests run both ways)."""
    app = Flask("rbridge", static_folder=None)   # rbridge/gateway/static is served by views_ops
    app.request_class = LimitedRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    cors_origins = frozenset(settings.cors_origins)
    app.extensions["rbridge"] = parts = Parts(
        settings=settings, registry=registry, pool=pool, auth=authenticator, reloader=reloader,
        board=dashboard.Board(pool, pool.metrics),
        trusted_proxies=throttle.parse_networks(settings.trusted_proxies), cors_origins=cors_origins,
        traffic=traffic.Traffic(registry, pool, Captures(settings.capture_dir or settings.models / ".captures",
                                                         pool.metrics)))
    metrics = pool.metrics

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
            return bridge_error(Forbidden("this origin is not in --cors-origins", code="cors_origin_not_allowed"))
        return None

    @app.before_request
    def start_request():
        g.call = Call(request.headers.get("X-Request-ID"))

    @app.after_request
    def finish_request(response: Response):
        call = g.call if "call" in g else Call(None)     # a 404 before any hook ran
        response.headers["X-Request-ID"] = call.request_id
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if request.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        origin = cors_origin()
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        if cors_origins:
            response.vary.add("Origin")
        access.finish(metrics, call, request.method, request.path, response.status_code)
        return response

    @app.errorhandler(BridgeError)
    def bridge_error(exc: BridgeError):
        return json_response(access.error_body(exc, request.path), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return bridge_error(TooLarge(f"the request body is larger than {settings.max_body} bytes (--max-body)"))
        slug = re.sub(r"[^a-z]+", "_", (exc.name or "error").lower()).strip("_")
        allow = exc.valid_methods if isinstance(exc, MethodNotAllowed) else None   # 405 says what is allowed
        return bridge_error(BridgeError(exc.description, code=slug, status=exc.code or 500,
                                        headers={"Allow": ", ".join(allow)} if allow else None))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        call = g.call if "call" in g else Call(None)
        return json_response(access.internal_error_body(call, request.path), 500)

    for module in (views_ops, views_signin, views_models, views_predict, views_manage, views_rollout, views_v2):
        app.register_blueprint(module.bp)
    if fast_path and not cors_origins:    # with CORS on, every request takes Flask's way
        app.wsgi_app = FastPath(app.wsgi_app, parts)
    return app
