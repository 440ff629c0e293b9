"""The status page, /health, and the live readings with their history."""

from __future__ import annotations

import bottle
from bottle import HTTPResponse

from ...core import paths
from .. import status
from ..web import STATIC, Ctx, as_json, query, render


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    @app.get("/static/<name:path>")
    def static(name: str) -> HTTPResponse:
        return bottle.static_file(name, root=str(STATIC), headers={"Cache-Control": "max-age=3600"})

    @app.get("/health")
    def health() -> HTTPResponse:
        code, body = status.health(ctx.state)
        return as_json(body, code)

    @app.get("/")
    def status_page() -> str:
        return render("status", ctx, s=status.summary(ctx.state), initial=paths.webui_initial_password_path().exists())

    @app.get("/api/status")
    def api_status() -> HTTPResponse:
        return as_json(status.summary(ctx.state))

    @app.get("/live")
    def live_page() -> str:
        return render("live", ctx, live=ctx.state.live())

    @app.get("/api/live")
    def api_live() -> HTTPResponse:
        return as_json(ctx.state.live())

    @app.get("/api/history")
    def api_history() -> HTTPResponse:
        q = query()
        device, name = q.get("device", ""), q.get("field", "")
        return as_json({"device": device, "field": name, "points": ctx.state.series(device, name)})
