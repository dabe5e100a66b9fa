"""What every view uses: the app's parts, who is calling, and JSON responses.

`Parts` is built once by `create_app` from what the server (or a test) injected and stored on
the Flask app; views reach it with `parts()`. Per request, `flask.g` carries the request id,
the user, the model, version, worker and rows for the access log (app.py's hooks).
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


def parts() -> Parts:
    return current_app.extensions["rbridge"]


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=_JSON), status=status, headers=headers,
                    mimetype="application/json")


def client() -> str:
    """The caller's address (X-Forwarded-For counts only from --trusted-proxies)."""
    return throttle.client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                                   parts().trusted_proxies)


def caller(role: str = "scorer"):
    """The authenticated user, who must hold `role` (401/403 otherwise)."""
    u = parts().auth.authenticate(request.headers.get("Authorization"), request.headers.get("X-API-Key"),
                                  client())
    require_role(u, role)
    g.user = u.name
    return u


def unknown_model(name: str) -> NotFound:
    return NotFound(f"no model named '{name}' (GET /models lists the models)", code="unknown_model")


def known_model(name: str) -> str:
    """`name` if the registry serves it, else a 404."""
    if name not in parts().registry.entries:
        raise unknown_model(name)
    return name
