"""Signing in: POST /login (password -> tokens), /login/refresh (rotate), /logout (revoke)."""

from __future__ import annotations

from flask import Blueprint, request

from rbridge.errors import BadRequest
from rbridge.gateway.bodies import SIGN_IN_MAX_BODY, json_body
from rbridge.gateway.context import client, json_response, parts

bp = Blueprint("signin", __name__)


@bp.post("/login")
def login():
    body = json_body(SIGN_IN_MAX_BODY)
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
            or not isinstance(body.get("password"), str):
        raise BadRequest('send {"username": "...", "password": "..."}')
    auth = parts().auth
    return json_response(auth.issue(auth.login(body["username"], body["password"], client())))


@bp.post("/login/refresh")
def login_refresh():
    return json_response(parts().auth.refresh(_refresh_token()))


@bp.post("/logout")
def logout():
    """Revokes the refresh token (and a bearer access token sent along) on this replica."""
    scheme, _, access = (request.headers.get("Authorization") or "").partition(" ")
    parts().auth.logout(_refresh_token(), access.strip() if scheme.lower() == "bearer" else None)
    return json_response({"revoked": True})


def _refresh_token() -> str:
    body = json_body(SIGN_IN_MAX_BODY)
    token = body.get("refresh_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise BadRequest('send {"refresh_token": "..."} (from POST /login)')
    return token
