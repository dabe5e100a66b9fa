"""For operators: probes (open), /status, /admin/reload and /metrics (admin), and the pages.

Pages and their assets (/docs, /dashboard, /static/...) are open; the data they show is not
(/dashboard/data needs an admin, /openapi.json a user).
"""

from __future__ import annotations

from flask import Blueprint, Response

from rbridge.errors import Unavailable
from rbridge.gateway import dashboard
from rbridge.gateway.context import caller, json_response, parts

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


# The kinds of not-ready the open probe may name; which model, file or error stays behind auth.
READY_KINDS = ("draining", "starting", "no live worker", "model(s) failed to load")


@bp.get("/readyz")
def readyz():
    """Open (the kubelet has no credentials): ready or not, and only a generic kind of reason.
    The details are in GET /status (admin) and GET /models."""
    ok, reason = parts().pool.ready()
    kind = "ready" if ok else next((k for k in READY_KINDS if reason.startswith(k)), "not ready")
    return json_response({"ready": ok, "reason": kind}, 200 if ok else 503)


@bp.get("/status")
def status():
    caller("admin")
    pool = parts().pool
    ok, reason = pool.ready()
    registry = parts().registry
    return json_response({**pool.status(), "ready": {"ready": ok, "reason": reason},
                          "rollouts": {n: p.describe() for n, p in registry.plans.items()},
                          "rollout_versions": sorted(registry.extras)})


@bp.post("/admin/reload")
def admin_reload():
    caller("admin")
    reloader = parts().reloader
    if reloader is None:
        raise Unavailable("hot reload is not available in this server", code="no_reload")
    try:
        return json_response(reloader.reload("POST /admin/reload"))
    except RuntimeError as exc:
        raise Unavailable(str(exc), code="reload_failed") from None


@bp.get("/metrics")
def metrics_endpoint():
    caller("admin")
    return Response(parts().pool.metrics.render(), mimetype="text/plain; version=0.0.4")


@bp.get("/docs")
def docs_page():
    return dashboard.page("docs.html")


@bp.get("/dashboard")
def dashboard_page():
    return dashboard.page("dashboard.html")


@bp.get("/dashboard/data")
def dashboard_data():
    caller("admin")
    p = parts()
    return json_response({**p.board.snapshot(), "models": [p.registry.describe(n) for n in p.registry.names()]})


@bp.get("/static/<path:filename>")
def static_file(filename: str):
    return dashboard.static_file(filename)
