"""Scoring: POST /models/<name>/predict and POST /predict (the default model).

The way of one request: authenticate -> the model must be loaded -> body (JSON or CSV) ->
Schema.encode (rbridge/schema.py: rows to typed columns, 422s), or for a model with an "image"
block in its <name>.json the uploaded files (imagebody.py; the worker decodes them) ->
pool.predict (queue, worker, R; rbridge/pool/) -> render the worker's output -> JSON with the
version in X-Model-Version. Which version scores (the active one, a canary's share, one the
request pins) is chosen by traffic.py before the body is read; after the answer it counts,
captures and shadows (rows only: image requests are neither captured nor shadowed).
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


def score(p, call, name: str, data: bytes, mimetype: str, options: dict,
          pin: str | None = None) -> tuple[dict, dict]:
    """Score an authenticated request's body with model `name` (or its version `pin`):
    (response body, headers). `options` are the Content-Type's parameters (charset, boundary)."""
    seen = {}

    def read(info: protocol.ModelInfo, schema):   # also called by a shadow scoring, later
        image = p.registry.image_config(name)
        if image is not None or imagebody.is_image_request(mimetype):
            seen.setdefault("body", None)
            return read_images(name, image, data, mimetype, options)
        body = (csvbody.parse(data, info.schema, options.get("charset")) if mimetype == "text/csv"
                else parse_json(data))
        seen.setdefault("body", body)
        return schema.encode(body, p.settings.max_rows, p.settings.max_columns)

    def answered(job):
        seen["predictions"] = render(job.output, p.registry.top_k(name))
        return seen["body"], seen["predictions"]
    job = run(p, call, name, read, pin, answered)
    return ({"model": name, "version": job.version, "predictions": seen["predictions"]},
            {"X-Model-Version": job.version or ""})


def run(p, call, name: str, read, pin: str | None = None, after=None):
    """What every scoring route does, whatever its wire format (this one; /v2 in views_v2.py):
    the model must be loaded (404, 503), traffic chooses the version (`pin`: one the request
    names), `read(info, schema)` turns the request into typed columns and their row count
    (raising its 4xx), the pool scores them; `call` (the access log, the metrics) learns the
    model, rows, version and worker. `after(job)` -> (parsed body, predictions) to capture.
    Returns the pool's job."""
    registry = p.registry
    if name not in registry.entries:              # an extra version's name@n is no public name
        raise unknown_model(name)
    call.model = name
    for attempt in (1, 2):
        loaded(p, name)
        target = p.traffic.choose(name, call.user, pin)
        info = loaded(p, target)
        call.version = info.version
        columns, nrows = read(info, registry.schema(info))
        call.rows = nrows
        try:
            job = p.pool.predict(target, protocol.Part(call.request_id, nrows, columns),
                                 registry.timeout_for(name), registry.encoding(info))
            break
        except Unavailable as exc:
            # Encoded for a version that was swapped out before a worker took it: choose and
            # read the rows again for what is served now (its 422s are then the answer), once.
            if exc.code != "model_changed" or attempt == 2:
                raise
    call.version, call.worker = job.version, job.slot
    body, predictions = after(job) if after is not None else (None, None)
    p.traffic.after(name, target, job, read, call.request_id, body, predictions)
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
        raise unknown_model(name) if name not in registry.entries and name not in registry.extras else Unavailable(
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


def _scored(name: str, pin: str | None = None):
    body, headers = score(parts(), g.call, name, request.get_data(cache=False), request.mimetype,
                          request.mimetype_params, pin or request.headers.get("X-Model-Version"))
    return json_response(body, headers=headers)


@bp.post("/models/<name>/versions/<int:number>/predict")
def predict_version(name: str, number: int):
    """Score with retained version `number` (for comparisons): 404 not retained, 409 not loaded."""
    caller()
    return _scored(name, str(number))


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
