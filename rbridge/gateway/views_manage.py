"""Model management (publisher or admin): publish, list versions, activate, delete.

    PUT    /models/<name>                          multipart: model (.rds), script (.R), config (.json)
    GET    /models/<name>/versions
    POST   /models/<name>/versions/<v>/activate    rollback or roll forward
    DELETE /models/<name>

An upload is streamed into a folder of the versions store (inside the models folder, so the
final move is a rename), capped at --max-model-bytes (--max-body does not apply here). Then it
takes the reloader's way (`Reloader.publish`): a candidate worker loads and warms it up beside
the served models; only if that works do its files become a version and go live, and the pool
rolls over without failing a request. Otherwise 422 with R's message, and nothing changed.
Every call is one audit line (logger bridge.audit): user, action, model, version, sha256.
"""

from __future__ import annotations

import logging
import os
import tempfile

from flask import Blueprint, g, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import parse_form_data

from rbridge.errors import BadRequest, Conflict, InvalidInput, NotFound, TooLarge, Unavailable
from rbridge.gateway.context import caller, json_response, parts
from rbridge.models.reload import Rejected
from rbridge.models.versions import label_of
from rbridge.settings import NAME_RE

bp = Blueprint("manage", __name__)
audit = logging.getLogger("bridge.audit")
UPLOAD_FIELDS = {"model": ".rds", "script": ".R", "config": ".json"}
MAX_FORM_FIELD = 64 << 10          # form fields that are not files (none are used) stay small


@bp.put("/models/<name>")
def publish(name: str):
    audited("publish", name)
    user = caller("publisher")
    store, reloader = writable()
    if not NAME_RE.match(name):
        raise BadRequest(f"a model name may hold only letters, digits, '_', '.' and '-', not {name!r}")
    folder = store.incoming()
    try:
        _receive(folder, name)
        label = label_of(folder / f"{name}.json")
        kept = {}

        def commit():
            kept.update(store.add(name, folder, user.name, "upload", label))
            store.make_live(name, kept["version"])

        info = _load(reloader, name, folder, commit, "publish")
    finally:
        store.discard(folder)           # moved into the store on success; leftovers otherwise
    g.audit = kept
    return json_response({"name": name, "version": kept["version"], "label": kept["label"],
                          "sha256": kept["sha256"], "published_by": kept["published_by"],
                          "published_at": kept["published_at"], "r_class": info.r_class,
                          "schema": {"columns": info.schema, "source": info.schema_source}}, 201)


@bp.get("/models/<name>/versions")
def list_versions(name: str):
    caller("publisher")
    versions = parts().reloader.versions.list(name) if parts().reloader else []
    if not versions and name not in parts().registry.entries:
        raise NotFound(f"no model or versions named '{name}'", code="unknown_model")
    return json_response({"name": name, "versions": versions, "keep": parts().settings.keep_versions})


@bp.post("/models/<name>/versions/<int:number>/activate")
def activate(name: str, number: int):
    audited("activate", name, {"version": number})
    caller("publisher")
    store, reloader = writable()
    folder = store.folder(name, number)
    if folder is None:
        raise NotFound(f"model '{name}' has no version {number} (GET /models/{name}/versions lists them)",
                       code="unknown_version")
    meta = next(m for m in store.list(name) if m["version"] == number)
    info = _load(reloader, name, folder, lambda: store.make_live(name, number), "activate")
    g.audit = meta
    return json_response({"name": name, "version": number, "label": meta["label"], "sha256": meta["sha256"],
                          "r_class": info.r_class})


@bp.delete("/models/<name>")
def delete(name: str):
    audited("delete", name)
    caller("publisher")
    store, reloader = writable()
    if name not in parts().registry.entries:
        raise NotFound(f"no model named '{name}' is served", code="unknown_model")
    served = {}

    def retire():       # the version served until now (hand-dropped files become one here)
        store.retire(name)
        served.update(next((m for m in store.list(name) if m["files"] == retiring), {}))

    retiring = store.live_files(name)
    try:
        reloader.remove(name, retire, f"DELETE /models/{name}")
    except RuntimeError as exc:
        raise Unavailable(str(exc), code="reload_failed") from None
    g.audit = served
    return json_response({"name": name, "deleted": True, "versions": len(store.list(name))})


# -- inside ----------------------------------------------------------------------------------
def writable():
    """The versions store and reloader, or 409/503 saying why models cannot be managed here."""
    reloader = parts().reloader
    if reloader is None or reloader.versions is None:
        raise Unavailable("model management is not available in this server", code="no_reload")
    why = reloader.versions.read_only()
    if why:
        raise Conflict(f"{why}: models cannot be published, activated or deleted through the API; "
                       "change the files where the folder is written", code="read_only")
    return reloader.versions, reloader


def _receive(folder, name: str) -> None:
    """Stream the multipart body's files into `folder` as <name>.rds, <name>.R, <name>.json."""
    if request.mimetype != "multipart/form-data":
        raise BadRequest("send the model as multipart/form-data: a file field 'model' (the .rds), "
                         "optional 'script' (.R) and 'config' (.json)", code="not_multipart")
    limit = parts().settings.max_model_bytes

    def to_disk(total_content_length, content_type, filename, content_length=None):
        return tempfile.NamedTemporaryFile("wb+", dir=folder, prefix=".part-", delete=False)

    try:
        _, form, files = parse_form_data(request.environ, stream_factory=to_disk, silent=False,
                                         max_content_length=limit, max_form_memory_size=MAX_FORM_FIELD)
    except RequestEntityTooLarge:
        raise TooLarge(f"the upload is larger than {limit} bytes (--max-model-bytes)") from None
    except ValueError as exc:
        raise BadRequest(f"the multipart body is malformed: {exc}") from None
    unknown = sorted((set(files) | set(form)) - set(UPLOAD_FIELDS))
    if unknown:
        raise BadRequest(f"unknown form field(s) {', '.join(unknown)}; send model, script, config")
    if "model" not in files:
        raise BadRequest("the form has no file field 'model' (the .rds)", code="no_model")
    for field, ext in UPLOAD_FIELDS.items():
        if field in files:
            stream = files[field].stream
            stream.close()
            os.replace(stream.name, folder / f"{name}{ext}")


def _load(reloader, name: str, folder, commit, action: str):
    try:
        return reloader.publish(name, folder, commit, f"{action} {name}")
    except Rejected as exc:
        raise InvalidInput(f"model '{name}' was not published, the served version is unchanged: {exc}",
                           code="model_rejected") from None
    except RuntimeError as exc:
        raise Unavailable(str(exc), code="reload_failed") from None


def audited(action: str, name: str, meta: dict | None = None) -> None:
    """This call writes one audit line when it is answered, whatever the answer (see `audit_line`)."""
    g.audit_action, g.audit_model, g.audit = action, name, meta or {}


@bp.after_request
def audit_line(response):
    if g.get("audit_action"):
        meta = g.audit
        audit.info("%s %s %s version %s: %s", g.call.user, g.audit_action, g.audit_model, meta.get("version"),
                   response.status_code, extra={"fields": {
                       "event": "audit", "user": g.call.user, "action": g.audit_action,
                       "model": g.audit_model, "version": meta.get("version"), "sha256": meta.get("sha256"),
                       "status": response.status_code}})
    return response
