"""Scoring: POST /models/<name>/predict and POST /predict (the default model).

The way of one request: authenticate -> the model must be loaded -> body (JSON or CSV) ->
Schema.encode (rbridge/schema.py: rows to typed columns, 422s) -> pool.predict (queue, worker,
R; rbridge/pool/) -> render the worker's output -> JSON with the version in X-Model-Version.
`score` is that way for either path: the Flask views below, and fastpath.py in front of Flask;
its core, `run`, is shared with the Open Inference Protocol's route (views_v2.py).
"""

from __future__ import annotations

from flask import Blueprint, g, request

from rbridge.errors import NotFound, Unavailable
from rbridge.gateway import csvbody
from rbridge.gateway.bodies import parse_json
from rbridge.gateway.context import caller, json_response, parts, unknown_model
from rbridge.pool import protocol

bp = Blueprint("predict", __name__)


def default_model(p) -> str:
    """The model POST /predict scores, or a 404 saying what to call instead."""
    if p.registry.default is None:
        raise NotFound("several models are served and none is the default: use "
                       "POST /models/<name>/predict (GET /models lists them)", code="no_default_model")
    return p.registry.default


def score(p, call, name: str, data: bytes, mimetype: str, charset: str | None) -> tuple[dict, dict]:
    """Score an authenticated request's body with model `name`: (response body, headers)."""
    def read(info: protocol.ModelInfo, schema):
        body = csvbody.parse(data, info.schema, charset) if mimetype == "text/csv" else parse_json(data)
        return schema.encode(body, p.settings.max_rows, p.settings.max_columns)
    job = run(p, call, name, read)
    return ({"model": name, "version": job.version, "predictions": render(job.output)},
            {"X-Model-Version": job.version or ""})


def run(p, call, name: str, read):
    """What every scoring route does, whatever its wire format (this one; /v2 in views_v2.py):
    the model must be loaded (404, 503), `read(info, schema)` turns the request into typed
    columns and their row count (raising its 4xx), the pool scores them; `call` (the access log,
    the metrics) learns the model, rows, version and worker. Returns the pool's job."""
    registry = p.registry
    call.model = name if name in registry.entries else None
    for attempt in (1, 2):
        info = loaded(p, name)
        columns, nrows = read(info, registry.schema(info))
        call.rows = nrows
        try:
            job = p.pool.predict(name, protocol.Part(call.request_id, nrows, columns),
                                 registry.timeout_for(name), info.version)
            break
        except Unavailable as exc:
            # Encoded for a version that was swapped out before a worker took it: read the rows
            # again for the version served now (its 422s are then the caller's answer), once.
            if exc.code != "model_changed" or attempt == 2:
                raise
    call.version, call.worker = job.version, job.slot
    return job


def loaded(p, name: str) -> protocol.ModelInfo:
    """What the model's workers reported, when it is loaded (404 unknown, 503 not loaded)."""
    registry = p.registry
    info = registry.info(name)
    if info is None or not info.ok:
        raise unknown_model(name) if name not in registry.entries else Unavailable(
            f"model '{name}' is not loaded: {registry.describe(name)['error'] or 'still loading'}",
            code="model_not_loaded")
    return info


@bp.post("/predict")
def predict_default():
    caller()
    return _scored(default_model(parts()))


@bp.post("/models/<name>/predict")
def predict(name: str):
    caller()
    return _scored(name)


def _scored(name: str):
    body, headers = score(parts(), g.call, name, request.get_data(cache=False), request.mimetype,
                          request.mimetype_params.get("charset"))
    return json_response(body, headers=headers)


def render(output: protocol.Output):
    """Worker output -> JSON-ready predictions: a list of values, or a list of row objects."""
    if output.kind == "vector":
        return output.values[0]
    cols = [v.tolist() if hasattr(v, "tolist") else v for v in output.values]
    names = output.names
    return [dict(zip(names, row)) for row in zip(*cols)]
