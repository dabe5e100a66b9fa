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


@bp.get("/readyz")
def readyz():
    p = parts()
    ok, reason = p.pool.ready()
    body = {"ready": ok, "reason": reason,
            "models": {n: {k: v for k, v in p.registry.describe(n).items() if k in ("state", "error", "version")}
                       for n in p.registry.names()}}
    return json_response(body, 200 if ok else 503)


@bp.get("/status")
def status():
    caller("admin")
    return json_response(parts().pool.status())


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
