"""Scoring: POST /models/<name>/predict and POST /predict (the default model).

The way of one request: authenticate -> the model must be loaded -> body (JSON or CSV) ->
Schema.encode (rbridge/schema.py: rows to typed columns, 422s) -> pool.predict (queue, worker,
R; rbridge/pool/) -> render the worker's output -> JSON with the version in X-Model-Version.
"""

from __future__ import annotations

from flask import Blueprint, g, request

from rbridge.errors import NotFound, Unavailable
from rbridge.gateway import csvbody
from rbridge.gateway.bodies import json_body
from rbridge.gateway.context import caller, json_response, parts, unknown_model
from rbridge.pool import protocol

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict_default():
    default = parts().registry.default
    if default is None:
        caller()
        raise NotFound("several models are served and none is the default: use "
                       "POST /models/<name>/predict (GET /models lists them)", code="no_default_model")
    return predict(default)


@bp.post("/models/<name>/predict")
def predict(name: str):
    caller()
    p = parts()
    registry = p.registry
    info = registry.info(name)
    g.model = name if name in registry.entries else None
    if info is None or not info.ok:
        raise unknown_model(name) if name not in registry.entries else Unavailable(
            f"model '{name}' is not loaded: {registry.describe(name)['error'] or 'still loading'}",
            code="model_not_loaded")
    if request.mimetype == "text/csv":
        body = csvbody.parse(request.get_data(cache=False), info.schema, request.mimetype_params.get("charset"))
    else:
        body = json_body()
    columns, nrows = registry.schema(info).encode(body, p.settings.max_rows)
    g.rows = nrows
    job = p.pool.predict(name, protocol.Part(g.request_id, nrows, columns), registry.timeout_for(name))
    g.version, g.worker = job.version, job.slot
    return json_response({"model": name, "version": job.version, "predictions": render(job.output)},
                         headers={"X-Model-Version": job.version or ""})


def render(output: protocol.Output):
    """Worker output -> JSON-ready predictions: a list of values, or a list of row objects."""
    if output.kind == "vector":
        return output.values[0]
    cols = [v.tolist() if hasattr(v, "tolist") else v for v in output.values]
    names = output.names
    return [dict(zip(names, row)) for row in zip(*cols)]
