"""The served models: GET /models, GET /models/<name>, and their OpenAPI documents."""

from __future__ import annotations

from flask import Blueprint, current_app

from rbridge.gateway import openapi
from rbridge.gateway.context import caller, json_response, known_model, parts

bp = Blueprint("models", __name__)


@bp.get("/models")
def list_models():
    caller()
    registry = parts().registry
    return json_response({"models": [registry.describe(n) for n in registry.names()],
                          "default": registry.default})


@bp.get("/models/<name>")
def show_model(name: str):
    caller()
    return json_response(parts().registry.describe(known_model(name), full=True))


@bp.get("/openapi.json")
def openapi_document():
    caller()
    p = parts()
    return json_response(openapi.build_spec(
        [p.registry.describe(n, full=True) for n in p.registry.names()], max_rows=p.settings.max_rows,
        default_model=p.registry.default, routes=[r.rule for r in current_app.url_map.iter_rules()]))


@bp.get("/models/<name>/openapi.json")
def model_openapi_document(name: str):
    caller()
    p = parts()
    return json_response(openapi.model_spec(p.registry.describe(known_model(name), full=True),
                                            max_rows=p.settings.max_rows))
