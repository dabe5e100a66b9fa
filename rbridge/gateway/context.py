"""What every view uses: the app's parts, who is calling, and JSON responses.

`Parts` is built once by `create_app` from what the server (or a test) injected and stored on
the Flask app; views reach it with `parts()`. Per request, `flask.g.call` is the request's
`access.Call` (request id, user, model, version, worker, rows for the access log).
"""

from __future__ import annotations

import dataclasses

import orjson
from flask import Response, current_app, g, request

from rbridge.errors import NotFound
from rbridge.gateway import throttle
from rbridge.gateway.auth import Authenticator, require_role

_JSON = orjson.OPT_SERIALIZE_NUMPY


@dataclasses.dataclass(frozen=True)
class Parts:
    settings: object
    registry: object          # rbridge.models.registry.Registry
    pool: object              # rbridge.pool.pool.Pool (a fake in the gateway's unit tests)
    auth: Authenticator
    reloader: object | None   # rbridge.models.reload.Reloader; None where hot reload is off
    board: object             # rbridge.gateway.dashboard.Board
    trusted_proxies: tuple
    cors_origins: frozenset
    traffic: object           # rbridge.gateway.traffic.Traffic: canary, pinning, shadow, capture


def parts() -> Parts:
    return current_app.extensions["rbridge"]


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=_JSON), status=status, headers=headers,
                    mimetype="application/json")


def client() -> str:
    """The caller's address (X-Forwarded-For counts only from --trusted-proxies)."""
    return throttle.client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                   parts().trusted_proxies)


def authenticate(p: Parts, call, authorization: str | None, api_key: str | None, remote_addr: str | None,
                 forwarded_for: str | None, role: str = "scorer"):
    """The user behind the credentials, who must hold `role` (401/403 otherwise); both paths."""
    address = throttle.client_address(remote_addr, forwarded_for, p.trusted_proxies)
    u = p.auth.authenticate(authorization, api_key, address)
    require_role(u, role)
    call.user = u.name
    return u


def caller(role: str = "scorer"):
    """The authenticated user of this Flask request, who must hold `role`."""
    h = request.headers
    return authenticate(parts(), g.call, h.get("Authorization"), h.get("X-API-Key"), request.remote_addr,
                        h.get("X-Forwarded-For"), role)


def unknown_model(name: str) -> NotFound:
    return NotFound(f"no model named '{name}' (GET /models lists the models)", code="unknown_model")


def known_model(name: str) -> str:
    """`name` if the registry serves it, else a 404."""
    if name not in parts().registry.entries:
        raise unknown_model(name)
    return name
