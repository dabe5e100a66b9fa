"""Rollouts (publisher or admin) and scoring a pinned version (scorer).

    GET  /models/<name>/rollout            the plan: active, canary, shadow, capture, loaded versions
    POST /models/<name>/rollout            {"canary": {"version": 3, "percent": 10, "sticky": true} | null,
                                            "shadow": {"version": 3} | null}; a key left out is unchanged
    POST /models/<name>/rollout/promote    the canary becomes the active version (and stops being a canary)
    POST /models/<name>/rollout/abort      the canary is cleared: all traffic to the active version
    POST /models/<name>/versions/<v>/predict   score with retained version v (404 not retained, 409 not loaded)

A rollout is kept in the versions store (rollout.json beside the versions, models/rollout.py),
so a restart keeps it and the other replicas take it up at their next scan of the folder. A
canary or shadow version is loaded and warmed up in a candidate worker before anything changes
(422 with R's message if it fails); the pool then rolls over as a publish does, so neither
setting, promoting nor aborting fails a request. Every call is one audit line.
"""

from __future__ import annotations

from flask import Blueprint, request

from rbridge.errors import BadRequest, Conflict, InvalidInput, NotFound, Unavailable
from rbridge.gateway.bodies import parse_json
from rbridge.gateway.context import caller, json_response, known_model, parts
from rbridge.gateway.views_manage import audited, writable, audit_line
from rbridge.models import rollout
from rbridge.models.reload import Rejected

bp = Blueprint("rollout", __name__)
bp.after_request(audit_line)


@bp.get("/models/<name>/rollout")
def show(name: str):
    caller("publisher")
    return json_response(_describe(known_model(name)))


@bp.post("/models/<name>/rollout")
def set_rollout(name: str):
    audited("rollout", name)
    user = caller("publisher")
    store, reloader = writable()
    known_model(name)
    body = parse_json(request.get_data(cache=False))
    if not isinstance(body, dict) or not body or set(body) - {"canary", "shadow"}:
        raise BadRequest('send {"canary": {"version": 3, "percent": 10} or null, "shadow": {"version": 3} '
                         "or null}; a key left out keeps its setting", code="bad_rollout")
    canary, shadow = _current(name)
    try:
        if "canary" in body:
            canary = rollout.check_canary(body["canary"], "canary")
        if "shadow" in body:
            shadow = rollout.check_shadow(body["shadow"], "shadow")
    except ValueError as exc:
        raise InvalidInput(str(exc), code="bad_rollout") from None
    for config in (canary, shadow):
        if config is not None and store.folder(name, config["version"]) is None:
            raise NotFound(f"model '{name}' has no version {config['version']} (GET /models/{name}/versions "
                           "lists those retained)", code="unknown_version")
    _apply(reloader, store, name, canary, shadow, user.name, "rollout")
    return json_response(_describe(name))


@bp.post("/models/<name>/rollout/promote")
def promote(name: str):
    audited("promote", name)
    user = caller("publisher")
    store, reloader = writable()
    plan = parts().registry.plan(known_model(name))
    if plan is None or plan.canary is None:
        raise Conflict(f"model '{name}' has no canary to promote (POST /models/{name}/rollout sets one)",
                       code="no_canary")
    number = plan.canary.number
    folder = store.folder(name, number)
    if folder is None:
        raise NotFound(f"model '{name}' has no version {number} any more", code="unknown_version")
    _, shadow = _current(name)
    shadow = None if shadow is not None and shadow["version"] == number else shadow

    def commit():
        store.make_live(name, number)
        rollout.write_override(store.root, name, None, shadow, user.name)
    try:
        reloader.publish(name, folder, commit, f"promote {name} version {number}",
                         override={"canary": None, "shadow": shadow})
    except Rejected as exc:
        raise InvalidInput(f"version {number} of model '{name}' was not promoted: {exc}",
                           code="model_rejected") from None
    except RuntimeError as exc:
        raise Unavailable(str(exc), code="reload_failed") from None
    return json_response(_describe(name))


@bp.post("/models/<name>/rollout/abort")
def abort(name: str):
    audited("abort", name)
    user = caller("publisher")
    store, reloader = writable()
    _, shadow = _current(known_model(name))
    _apply(reloader, store, name, None, shadow, user.name, "abort")
    return json_response(_describe(name))


def _apply(reloader, store, name: str, canary, shadow, user: str, action: str) -> None:
    override = {"canary": canary, "shadow": shadow}
    try:
        reloader.rollout(name, override, lambda: rollout.write_override(store.root, name, canary, shadow, user),
                         f"{action} {name}")
    except Rejected as exc:
        raise InvalidInput(f"the rollout of model '{name}' was not changed: {exc}", code="version_rejected") from None
    except RuntimeError as exc:
        raise Unavailable(str(exc), code="reload_failed") from None


def _current(name: str) -> tuple[dict | None, dict | None]:
    """The model's canary and shadow now, as settings (a version not served is left out)."""
    plan = parts().registry.plan(name)
    canary = shadow = None
    if plan is not None and plan.canary is not None:
        c = plan.canary
        canary = {"version": c.number, "percent": c.percent, "sticky": c.sticky}
    if plan is not None and plan.shadow is not None:
        shadow = {"version": plan.shadow.number, "tolerance": plan.shadow.tolerance}
    return canary, shadow


def _describe(name: str) -> dict:
    registry = parts().registry
    plan = registry.plan(name)
    out = {"name": name, **(plan.describe() if plan else rollout.Plan(None).describe())}
    versions = {}
    for number, target in sorted((plan.loaded if plan else {}).items()):
        info = registry.info(target)
        versions[str(number)] = {"version": info.version if info else None,
                                 "state": "loading" if info is None else "loaded" if info.ok else "failed",
                                 "error": info.error if info else None}
    out["versions"] = versions
    return out
