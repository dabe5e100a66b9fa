"""The OpenAPI 3.1 document of a running bridge, built from the models' input schemas.

Pure functions: `build_spec(models, ...)` takes the models as `Models.describe(name, full=True)`
gives them (name, version, description, state, schema columns) and returns the document as a
dict; `model_spec(model, ...)` is the document of one model. Nothing here talks to the pool.

Each model gets its own literal path, /models/<name>/predict, whose request body is either shape
the bridge reads ({"data": [rows]} or {"columns": {name: [values]}}) with one property per
column: numbers for numeric (and difftime, in its units), integers in R's range, factor levels as
enums, dates and date-times as strings of format date / date-time, and null allowed unless the
column says "na": false. Its example is built from the schema (validate.example_rows), so it
scores. A model without a schema (types inferred per request) takes any scalar per column.
"""

from __future__ import annotations

import copy

from rbridge import __version__
from rbridge.schema import example_rows

ERRORS = {
    400: ("BadRequest", "the body is not JSON (or CSV), or not in a shape the bridge reads"),
    401: ("Unauthorized", "no credentials, wrong ones, or an expired or revoked token"),
    403: ("Forbidden", "the user's role does not allow this (a publisher or an admin needed)"),
    404: ("NotFound", "no such model, or no default model"),
    409: ("Conflict", "the models folder is mounted read-only: models cannot be managed through the API"),
    413: ("TooLarge", "the body is larger than --max-body, or has more rows than --max-rows"),
    422: ("InvalidInput", "the rows do not fit the model's schema (the message names column, row and value), "
                          "or R raised an error while scoring"),
    429: ("Overloaded", "too many requests are waiting, or too many failed sign-ins: retry later"),
    503: ("Unavailable", "no worker can take the request: the model is not loaded, the server is "
                         "starting or stopping, or a worker died holding the request"),
    504: ("Timeout", "the request took longer than its timeout"),
}
PREDICT_ERRORS = (400, 401, 404, 413, 422, 429, 503, 504)
READ_ERRORS = (401, 429)              # 429: HTTP Basic attempts are throttled after failures
ADMIN_ERRORS = (401, 403, 429)
MANAGE_ERRORS = (401, 403, 404, 409, 429, 503)
_R_INT_MAX = 2147483647
_SCALAR = {"type": ["number", "string", "boolean", "null"]}

SECURITY_SCHEMES = {
    "basicAuth": {"type": "http", "scheme": "basic",
                  "description": "a user from the users file (rbridge user add)"},
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "the access_token from POST /login"},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "a key from rbridge key create"},
}
SECURITY = [{"basicAuth": []}, {"bearerAuth": []}, {"apiKeyAuth": []}]


def build_spec(models: list[dict], *, max_rows: int = 100_000, default_model: str | None = None,
               routes=(), title: str = "R Bridge") -> dict:
    """The whole server's document: every model's predict path and the other endpoints.

    `routes` are the URL rules the app has; optional endpoints (/login/refresh, /logout,
    /admin/reload) are documented only when present.
    """
    spec = _skeleton(title, "Serves R models (.rds) over REST. Sign in with HTTP Basic, a bearer token "
                            "from POST /login, or an X-API-Key header.")
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    paths.update(_auth_paths(set(routes)))
    paths["/models"] = {"get": _op("List the models", "models", _ref("ModelList"), READ_ERRORS)}
    paths["/models/{name}"] = {"get": _op(
        "Describe one model: version, state, schema, hash, R class and packages", "models",
        _ref("ModelDetail"), READ_ERRORS + (404,), parameters=[_name_param(models)])}
    paths["/models/{name}/openapi.json"] = {"get": _op(
        "The OpenAPI document of one model", "models", {"type": "object"}, READ_ERRORS + (404,),
        parameters=[_name_param(models)])}
    paths["/openapi.json"] = {"get": _op("This document", "models", {"type": "object"}, READ_ERRORS)}
    for model in models:
        _add_model(paths, schemas, model, max_rows)
    default = next((m for m in models if m["name"] == default_model), None)
    if default is not None:
        op = copy.deepcopy(paths[f"/models/{default['name']}/predict"]["post"])
        op["operationId"] = "predict_default"
        op["summary"] = f"Score rows with the default model ({default['name']})"
        paths["/predict"] = {"post": op}
    paths.update(_operator_paths(set(routes)))
    if "/v2/models/<name>/infer" in routes:
        paths.update(_v2_paths(models))
        schemas.update(_v2_schemas())
    if "/models/<name>/versions" in set(routes):
        _add_manage_paths(paths, models)
    return spec


def model_spec(model: dict, *, max_rows: int = 100_000, title: str | None = None) -> dict:
    """One model's document (what ML Server gave per service): sign-in, describe and predict."""
    name = model["name"]
    spec = _skeleton(title or f"R Bridge: {name}", model.get("description") or f"The model {name}.")
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    paths.update(_auth_paths(set()))
    paths[f"/models/{name}"] = {"get": _op(f"Describe {name}", "models", _ref("ModelDetail"),
                                           READ_ERRORS + (404,), operation_id=f"describe_{_ident(name)}")}
    _add_model(paths, schemas, model, max_rows)
    return spec


# -- per model -----------------------------------------------------------------------------
def _add_model(paths: dict, schemas: dict, model: dict, max_rows: int) -> None:
    name = model["name"]
    columns = (model.get("schema") or {}).get("columns")
    row, values, required = _row_schema(columns)
    schemas[f"{name}.Row"] = row
    schemas[f"{name}.Rows"] = {
        "type": "object", "required": ["data"],
        "properties": {"data": _array(_ref(f"{name}.Row"), max_rows)}}
    columns_obj = {"type": "object", "minProperties": 1, "required": required,
                   "description": "every column holds the same number of values",
                   "properties": {n: _array(v, max_rows) for n, v in values.items()},
                   "additionalProperties": _array(_SCALAR, max_rows)}     # columns the model ignores
    schemas[f"{name}.Columns"] = {
        "type": "object", "required": ["columns"], "properties": {"columns": columns_obj}}
    schemas[f"{name}.Request"] = {"oneOf": [_ref(f"{name}.Rows"), _ref(f"{name}.Columns")]}
    schemas[f"{name}.Response"] = {
        "type": "object", "required": ["model", "version", "predictions"],
        "properties": {"model": {"const": name}, "version": {"type": ["string", "null"]},
                       "predictions": _ref("Predictions")}}

    rows = example_rows(columns, 2)
    content = {"application/json": {"schema": _ref(f"{name}.Request")}}
    if rows:
        content["application/json"]["examples"] = {
            "rows": {"summary": "rows", "value": {"data": rows}},
            "columns": {"summary": "columns", "value": {"columns": {k: [r[k] for r in rows] for k in rows[0]}}}}
    content["text/csv"] = {"schema": {"type": "string", "description": "a header line of column names, "
                                      "then one line per row; empty or NA is a missing value"}}
    if rows:
        content["text/csv"]["example"] = _csv_example(rows)
    describe = model.get("description") or ""
    state = model.get("state")
    if state and state != "loaded":
        describe += f" (state now: {state})"
    paths[f"/models/{name}/predict"] = {"post": _op(
        f"Score rows with {name}", "predict", _ref(f"{name}.Response"), PREDICT_ERRORS,
        operation_id=f"predict_{_ident(name)}", description=describe.strip() or None,
        body={"required": True, "content": content},
        headers={"X-Model-Version": {"description": "the version that scored the request",
                                     "schema": {"type": "string"}}})}


def _row_schema(columns: list | None) -> tuple[dict, dict, list]:
    """(row object schema, {column: value schema}, required names)."""
    if columns is None:
        return ({"type": "object", "minProperties": 1, "additionalProperties": _SCALAR,
                 "description": "this model has no schema: each column holds one type"}, {}, [])
    props = {c["name"]: _value_schema(c) for c in columns}
    required = [c["name"] for c in columns]
    return ({"type": "object", "properties": props, "required": required, "additionalProperties": _SCALAR},
            props, required)


def _array(items: dict, max_rows: int) -> dict:
    return {"type": "array", "minItems": 1, "maxItems": max_rows, "items": items}


def _value_schema(col: dict) -> dict:
    kind, levels = col["type"], col.get("levels")
    na = bool(col.get("na", True)) and not col.get("na_reason")
    if kind == "numeric":
        out = {"type": "number"}
    elif kind == "difftime":
        out = {"type": "number", "description": f"a time difference in {col.get('units', 'secs')}"}
    elif kind == "date":
        out = {"type": "string", "format": "date"}
    elif kind == "datetime":
        out = {"type": "string", "format": "date-time",
               "description": f"ISO 8601; without an offset, a time in {col.get('tz') or 'UTC'}"}
    elif kind == "integer":
        out = {"type": "integer", "minimum": -_R_INT_MAX, "maximum": _R_INT_MAX}
    elif kind in ("factor", "character"):
        out = {"type": "string"}
        if levels:
            out["enum"] = list(levels) + ([None] if na else [])
    elif kind == "logical":
        out = {"type": "boolean"}
    else:
        out = {}
    if na and "type" in out:
        out["type"] = [out["type"], "null"]
    if kind == "factor" and col.get("ordered"):
        out["description"] = "ordered factor: " + " < ".join(levels or [])
    if col.get("na_reason"):
        out["description"] = (out.get("description", "") + "; " if "description" in out else "") + \
            f"no null: {col['na_reason']}"
    return out


def _csv_example(rows: list) -> str:
    names = list(rows[0])

    def text(v):
        return "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    return "\n".join([",".join(names)] + [",".join(text(r[n]) for n in names) for r in rows]) + "\n"


# -- the rest of the server -----------------------------------------------------------------
def _auth_paths(routes: set) -> dict:
    paths = {"/login": {"post": _op(
        "Sign in: exchange a username and password for a bearer token", "sign-in", _ref("Token"),
        (400, 401, 429), security=[], operation_id="login",
        body={"required": True, "content": {"application/json": {"schema": _ref("Login")}}})}}
    if "/login/refresh" in routes:
        paths["/login/refresh"] = {"post": _op(
            "Exchange a refresh token for a new pair", "sign-in", _ref("Token"), (400, 401, 429),
            security=[], operation_id="login_refresh",
            body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["refresh_token"],
                "properties": {"refresh_token": {"type": "string"}}}}}})}
    if "/logout" in routes:
        paths["/logout"] = {"post": _op(
            "Revoke a refresh token", "sign-in", {"type": "object"}, (400, 401), security=[],
            operation_id="logout", body={"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["refresh_token"],
                "properties": {"refresh_token": {"type": "string"}}}}}})}
    return paths


def _operator_paths(routes: set) -> dict:
    paths = {
        "/healthz": {"get": _op("Liveness: 200 while the process is alive", "health", {"type": "object"},
                                (), security=[])},
        "/readyz": {"get": _op("Readiness: 200 when workers are up and every model loaded, else 503",
                               "health", _ref("Ready"), (), security=[],
                               extra={"503": {"description": "not ready (starting, draining, or a model "
                                              "failed)", "content": {"application/json": {
                                                  "schema": _ref("Ready")}}}})},
        "/status": {"get": _op("Workers, queue and memory (admin)", "operators", {"type": "object"},
                               ADMIN_ERRORS)},
        "/metrics": {"get": _op("Prometheus metrics (admin)", "operators", {"type": "string"},
                                ADMIN_ERRORS, media="text/plain")},
    }
    if "/admin/reload" in routes:
        paths["/admin/reload"] = {"post": _op("Scan the models folder now (admin)", "operators",
                                              {"type": "object"}, ADMIN_ERRORS)}
    return paths


def _v2_paths(models: list[dict]) -> dict:
    """The Open Inference Protocol (views_v2.py): its errors are {"error": "message"}."""
    name = [_name_param(models)]
    version = name + [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "the version being served (any other is a 404)"}]
    binary = {"schema": {"type": "string", "format": "binary", "description": "the binary tensor data extension: "
                         "Inference-Header-Content-Length bytes of JSON, then the tensors"}}
    infer_ok = {"application/json": {"schema": _ref("V2InferResponse")}, "application/octet-stream": binary}
    infer_body = {"required": True, "description": "JSON, or with the Inference-Header-Content-Length header that "
                  "many bytes of JSON followed by the binary tensors (binary_data_size in their parameters)",
                  "content": {"application/json": {"schema": _ref("V2InferRequest")}}}

    def op(summary, schema, errors, **kw):
        out = _op(summary, "open inference protocol", schema, errors, **kw)
        for status in errors:
            out["responses"][str(status)] = {"description": ERRORS[status][1],
                                             "content": {"application/json": {"schema": _ref("V2Error")}}}
        return out

    paths = {
        "/v2": {"get": op("Server metadata", _ref("V2Server"), READ_ERRORS, operation_id="v2_server")},
        "/v2/health/live": {"get": op("Liveness, as /healthz", {"type": "object"}, (), security=[],
                                      operation_id="v2_live")},
        "/v2/health/ready": {"get": op("Readiness, as /readyz (503 when not ready)", _ref("Ready"), (),
                                       security=[], operation_id="v2_ready", extra={"503": {
                                           "description": "not ready", "content": {"application/json": {
                                               "schema": _ref("Ready")}}}})},
    }
    for suffix, params, tag in (("", name, ""), ("/versions/{version}", version, "_version")):
        base = "/v2/models/{name}" + suffix
        paths[base] = {"get": op("Model metadata: inputs and outputs, named and typed", _ref("V2Model"),
                                 READ_ERRORS + (404, 503), parameters=params, operation_id=f"v2_model{tag}")}
        paths[base + "/ready"] = {"get": op("Model readiness (200 loaded, 503 not)", {"type": "object"},
                                            READ_ERRORS + (404, 503), parameters=params,
                                            operation_id=f"v2_model_ready{tag}")}
        paths[base + "/infer"] = {"post": op(
            "Score one tensor per input column", _ref("V2InferResponse"), PREDICT_ERRORS, parameters=params,
            operation_id=f"v2_infer{tag}", body=infer_body)}
        paths[base + "/infer"]["post"]["responses"]["200"]["content"] = infer_ok
    return paths


def _v2_schemas() -> dict:
    value = {"type": ["number", "string", "boolean"]}
    params = {"type": "object", "additionalProperties": {"type": ["number", "string", "boolean", "null"]}}
    tensor = {"type": "object", "required": ["name", "shape", "datatype"], "additionalProperties": _SCALAR,
              "properties": {
        "name": {"type": "string"}, "datatype": {"enum": ["FP64", "FP32", "INT32", "INT64", "BOOL", "BYTES"]},
        "shape": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer", "minimum": 1}},
        "parameters": params, "data": {"type": "array", "description": "flat, or [[v], [v], ...] for shape [n, 1]",
                                       "items": {"anyOf": [value, {"type": "array", "items": value}]}}}}
    meta = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}, "parameters": {"type": "object"}}}
    return {
        "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "V2Server": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "V2Model": {"type": "object", "required": ["name", "platform", "inputs", "outputs"], "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"}, "inputs": {"type": "array", "items": meta},
            "outputs": {"type": "array", "items": meta}, "parameters": {"type": "object"}}},
        "V2InferRequest": {"type": "object", "required": ["inputs"], "additionalProperties": _SCALAR, "properties": {
            "id": {"type": "string"}, "parameters": params,
            "inputs": {"type": "array", "minItems": 1, "items": tensor},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"],
                                                   "additionalProperties": _SCALAR, "properties": {
                                                       "name": {"type": "string"}, "parameters": params}}}}},
        "V2InferResponse": {"type": "object", "required": ["model_name", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object"}, "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name", "shape", "datatype"]}}}},
    }


def _add_manage_paths(paths: dict, models: list[dict]) -> None:
    """PUT/DELETE /models/{name}, versions and activate (a publisher or an admin)."""
    name = _name_param(models)
    number = {"name": "v", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
              "description": "a version number (GET /models/{name}/versions lists them)"}
    file = {"type": "string", "contentMediaType": "application/octet-stream"}
    upload = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["model"], "properties": {
            "model": {**file, "description": "the model, saved with saveRDS() (at most --max-model-bytes "
                                             "with the other files)"},
            "script": {**file, "description": "optional <name>.R defining score(model, newdata) and init(model)"},
            "config": {**file, "description": "optional <name>.json: version, description, schema, "
                                              "predict_args, timeout, batch"}}}}}}
    publish = _op("Publish a model (publisher): the server loads it and scores one row with it first; "
                  "a model that fails is 422 with R's message and the served version is unchanged",
                  "manage", _ref("Published"), MANAGE_ERRORS + (400, 413, 422), parameters=[name], body=upload,
                  operation_id="publish_model")
    publish["responses"]["201"] = publish["responses"].pop("200") | {"description": "published and serving"}
    paths["/models/{name}"]["put"] = publish
    paths["/models/{name}"]["delete"] = _op(
        "Stop serving a model (publisher); its files are kept as a version", "manage", {"type": "object"},
        MANAGE_ERRORS, parameters=[name], operation_id="delete_model")
    paths["/models/{name}/versions"] = {"get": _op(
        "The kept versions of a model, oldest first (publisher)", "manage", _ref("Versions"),
        (401, 403, 404, 429), parameters=[name], operation_id="list_versions")}
    paths["/models/{name}/versions/{v}/activate"] = {"post": _op(
        "Serve version v of a model: rollback or roll forward, without failing a request (publisher)",
        "manage", {"type": "object"}, MANAGE_ERRORS + (422,), parameters=[name, number],
        operation_id="activate_version")}
    paths["/models/{name}/versions/{v}/predict"] = {"post": _op(
        "Score with retained version v (scorer): 404 not retained, 409 retained but not loaded (make it "
        "the canary or the shadow), 422 failed to load. Same body as /models/{name}/predict", "predict",
        {"type": "object"}, (400, 401, 403, 404, 409, 413, 422, 429, 503, 504), parameters=[name, number],
        operation_id="predict_version")}
    setting = {"type": ["object", "null"]}
    paths["/models/{name}/rollout"] = {
        "get": _op("The model's rollout: active version, canary, shadow, capture, versions loaded (publisher)",
                   "manage", {"type": "object"}, (401, 403, 404, 429), parameters=[name],
                   operation_id="get_rollout"),
        "post": _op("Set or clear the canary ({version, percent, sticky}) and the shadow ({version, "
                    "tolerance}); a key left out keeps its setting; the versions load first (publisher)",
                    "manage", {"type": "object"}, MANAGE_ERRORS + (400, 422), parameters=[name],
                    body={"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"canary": setting, "shadow": setting}}}}},
                    operation_id="set_rollout")}
    paths["/models/{name}/rollout/promote"] = {"post": _op(
        "The canary becomes the active version, without failing a request (publisher)", "manage",
        {"type": "object"}, MANAGE_ERRORS + (422,), parameters=[name], operation_id="promote_canary")}
    paths["/models/{name}/rollout/abort"] = {"post": _op(
        "Clear the canary: all traffic to the active version (publisher)", "manage", {"type": "object"},
        MANAGE_ERRORS + (422,), parameters=[name], operation_id="abort_canary")}


def _skeleton(title: str, description: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "security": SECURITY,
        "paths": {},
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": _common_schemas(),
                       "responses": {k: {"description": text, "content": {"application/json": {
                           "schema": _ref("Error")}}} for k, text in ERRORS.values()}},
    }


def _common_schemas() -> dict:
    model_summary = {
        "type": "object", "required": ["name", "state"],
        "properties": {"name": {"type": "string"}, "version": {"type": ["string", "null"]},
                       "state": {"type": "string", "examples": ["loaded", "loading", "failed"]},
                       "error": {"type": ["string", "null"]},
                       "r_class": {"type": ["array", "null"], "items": {"type": "string"}}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Login": {"type": "object", "required": ["username", "password"],
                  "properties": {"username": {"type": "string"}, "password": {"type": "string",
                                                                             "format": "password"}}},
        "Token": {"type": "object", "required": ["access_token", "token_type", "expires_in"],
                  "properties": {"access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                                 "expires_in": {"type": "integer"},
                                 "refresh_token": {"type": "string"}, "refresh_expires_in": {"type": "integer"}}},
        "Predictions": {"type": "array", "description": "one per input row: a number or label, or an "
                        "object (class probabilities, several outputs); R's NA is null",
                        "items": {"type": ["number", "string", "boolean", "object", "null"]}},
        "ModelSummary": model_summary,
        "ModelList": {"type": "object", "required": ["models"], "properties": {
            "models": {"type": "array", "items": _ref("ModelSummary")},
            "default": {"type": ["string", "null"]}}},
        "ModelDetail": {"allOf": [_ref("ModelSummary"), {"type": "object", "properties": {
            "description": {"type": ["string", "null"]}, "sha256": {"type": ["string", "null"]},
            "size": {"type": ["integer", "null"]},
            "packages": {"type": ["array", "null"], "items": {"type": "string"}},
            "schema": {"type": "object"}}}]},
        "Version": {"type": "object", "required": ["version", "sha256"], "properties": {
            "version": {"type": "integer", "description": "the server's number: 1, 2, 3, ..."},
            "label": {"type": ["string", "null"], "description": "the version in <name>.json"},
            "sha256": {"type": "string"}, "published_by": {"type": ["string", "null"]},
            "published_at": {"type": "string", "format": "date-time"},
            "how": {"type": "string", "examples": ["upload", "models folder", "deleted"]},
            "active": {"type": "boolean"}}},
        "Versions": {"type": "object", "properties": {"name": {"type": "string"},
                                                      "versions": {"type": "array", "items": _ref("Version")},
                                                      "keep": {"type": "integer"}}},
        "Published": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "integer"}, "label": {"type": ["string", "null"]},
            "sha256": {"type": "string"}, "schema": {"type": "object"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {
            "ready": {"type": "boolean"}, "reason": {"type": "string"}, "models": {"type": "object"}}},
    }


def _op(summary: str, tag: str, schema: dict, errors, *, security=None, operation_id=None,
        description=None, body=None, parameters=None, headers=None, extra=None,
        media="application/json") -> dict:
    ok = {"description": "OK", "content": {media: {"schema": schema}}}
    if headers:
        ok["headers"] = headers
    op = {"summary": summary, "tags": [tag], "responses": {"200": ok}}
    if operation_id:
        op["operationId"] = operation_id
    if description:
        op["description"] = description
    if security is not None:
        op["security"] = security
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    for status in errors:
        op["responses"][str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    op["responses"].update(extra or {})
    return op


def _name_param(models: list[dict]) -> dict:
    schema = {"type": "string"}
    if models:
        schema["examples"] = [m["name"] for m in models]
    return {"name": "name", "in": "path", "required": True, "schema": schema,
            "description": "a model name (GET /models lists them)"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
