"""Scoring: POST /models/<name>/predict and POST /predict (the default model).

The way of one request: authenticate -> the model must be loaded -> body (JSON or CSV) ->
Schema.encode (rbridge/schema.py: rows to typed columns, 422s), or for a model with an "image"
block in its <name>.json the uploaded files (imagebody.py; the worker decodes them) ->
pool.predict (queue, worker, R; rbridge/pool/) -> render the worker's output -> JSON with the
version in X-Model-Version.
`score` is that way for either path: the Flask views below, and fastpath.py in front of Flask;
its core, `run`, is shared with the Open Inference Protocol's route (views_v2.py).
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, g, request

from rbridge.errors import NotFound, Unavailable, UnsupportedMediaType
from rbridge.gateway import csvbody, imagebody
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


def score(p, call, name: str, data: bytes, mimetype: str, options: dict) -> tuple[dict, dict]:
    """Score an authenticated request's body with model `name`: (response body, headers).
    `options` are the Content-Type's parameters (charset, boundary)."""
    def read(info: protocol.ModelInfo, schema):
        image = p.registry.image_config(name)
        if image is not None or imagebody.is_image_request(mimetype):
            return read_images(name, image, data, mimetype, options)
        body = (csvbody.parse(data, info.schema, options.get("charset")) if mimetype == "text/csv"
                else parse_json(data))
        return schema.encode(body, p.settings.max_rows, p.settings.max_columns)
    job = run(p, call, name, read)
    return ({"model": name, "version": job.version,
             "predictions": render(job.output, p.registry.top_k(name))},
            {"X-Model-Version": job.version or ""})


def run(p, call, name: str, read):
    """What every scoring route does, whatever its wire format (this one; /v2 in views_v2.py):
    the model must be loaded (404, 503), `read(info, schema)` turns the request into typed
    columns and their row count (raising its 4xx), the pool scores them; `call` (the access log,
    the metrics) learns the model, rows, version and worker. Returns the pool's job."""
    registry = p.registry
    call.model = name if name in registry.entries else None
    info = loaded(p, name)
    columns, nrows = read(info, registry.schema(info))
    call.rows = nrows
    job = p.pool.predict(name, protocol.Part(call.request_id, nrows, columns), registry.timeout_for(name),
                         info.version)
    call.version, call.worker = job.version, job.slot
    return job


def read_images(name: str, image: dict | None, data: bytes, mimetype: str, options: dict) -> tuple[dict, int]:
    """An image model's body as one column of files (the worker decodes them), or a 415 when
    the model and the Content-Type do not go together."""
    if image is None:
        raise UnsupportedMediaType(f"model '{name}' does not take images; send rows as JSON "
                                   "(application/json) or CSV (text/csv)")
    if not imagebody.is_image_request(mimetype):
        sent = mimetype or "without a Content-Type"
        raise UnsupportedMediaType(f"model '{name}' takes images: send one as image/png or image/jpeg, "
                                   f"or several as multipart/form-data (this request is {sent})")
    files = imagebody.parse(data, mimetype, options, image)
    return {"image": ("image", files)}, len(files)


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
                          request.mimetype_params)
    return json_response(body, headers=headers)


def render(output: protocol.Output, top_k: int | None = None):
    """Worker output -> JSON-ready predictions: a list of values, or a list of row objects;
    with `top_k` (a table of class scores, the worker checked), each row's k best classes."""
    if top_k:
        return ranked(output, top_k)
    if output.kind == "vector":
        return output.values[0]
    cols = [v.tolist() if hasattr(v, "tolist") else v for v in output.values]
    names = output.names
    return [dict(zip(names, row)) for row in zip(*cols)]


def ranked(output: protocol.Output, k: int) -> list:
    """Per row, [{"label": class, "score": score}, ...] for the k highest scores, best first
    (equal scores keep the classes' order)."""
    scores = np.column_stack([np.asarray(v, np.float64) for v in output.values])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    labels = output.names
    return [[{"label": labels[j], "score": float(row[j])} for j in best] for row, best in zip(scores, order)]
