"""The Open Inference Protocol (KServe V2 REST) beside the native API: the same pipeline.

    GET  /v2                                   server metadata (a user)
    GET  /v2/health/live, /v2/health/ready     open, as /healthz and /readyz
    GET  /v2/models/<name>[/versions/<v>]      model metadata: inputs and outputs, named and typed
    GET  /v2/models/<name>[/versions/<v>]/ready
    POST /v2/models/<name>[/versions/<v>]/infer

A versioned path answers only for the version being served (404 for any other). Inference takes
the native route's way (views_predict.run: the loaded model, Schema.encode's checks, the pool,
the access log and metrics); only the wire format differs (oip.py). Errors are rendered by
app.py as the protocol's {"error": "message"} with the native route's status.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from rbridge import __version__
from rbridge.errors import NotFound
from rbridge.gateway import oip, views_ops
from rbridge.gateway.context import caller, json_response, parts
from rbridge.gateway.views_predict import loaded, run

bp = Blueprint("v2", __name__, url_prefix="/v2")
EXTENSIONS = ["binary_tensor_data"]


@bp.get("")
def server_metadata():
    caller()
    return json_response({"name": "rbridge", "version": __version__, "extensions": EXTENSIONS})


@bp.get("/health/live")
def live():
    return views_ops.healthz()


@bp.get("/health/ready")
def ready():
    return views_ops.readyz()


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    caller()
    return json_response(oip.model_metadata(name, _loaded(name, version)))


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    caller()
    info = _loaded(name, version)
    return json_response({"name": name, "version": info.version, "ready": True})


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    caller()
    body, headers = scored(parts(), g.call, name, version, request.get_data(cache=False),
                           request.headers.get(oip.HEADER))
    return Response(body, headers=headers)


def scored(p, call, name: str, version: str | None, data: bytes, header_length: str | None) -> tuple[bytes, dict]:
    """Score an authenticated inference request (this view, and fastpath.py): (body, headers)."""
    req = None

    def read(info, schema):
        nonlocal req
        _check_version(name, info, version)
        req = oip.read_infer(data, header_length)
        return schema.encode(oip.columns_body(req, info.schema), p.settings.max_rows, p.settings.max_columns)
    if version is not None and name in p.registry.entries and not p.traffic.serves(name, version):
        _check_version(name, loaded(p, name), version)     # the 404 saying which version serves
    job = run(p, call, name, read, version)      # a versioned path pins that version
    body, headers = oip.infer_response(req, name, job.version, job.output)
    headers["X-Model-Version"] = job.version or ""
    return body, headers


def target(path: str) -> tuple[str, str | None] | None:
    """(name, version) of an infer path, /v2/models/<name>[/versions/<v>]/infer, else None."""
    parts_ = path[11:-6].split("/") if path.startswith("/v2/models/") and path.endswith("/infer") else ()
    if len(parts_) == 1 and parts_[0]:
        return parts_[0], None
    if len(parts_) == 3 and parts_[0] and parts_[1] == "versions" and parts_[2]:
        return parts_[0], parts_[2]
    return None


def _loaded(name: str, version: str | None):
    info = loaded(parts(), name)
    _check_version(name, info, version)
    return info


def _check_version(name: str, info, version: str | None) -> None:
    if version is not None and version != info.version:
        raise NotFound(f"model '{name}' serves version '{info.version}', not '{version}' (a versioned path "
                       "answers only for the version being served)", code="unknown_version")
