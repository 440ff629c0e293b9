"""Scans in the background (network, RS-485, the whole environment), sensor addressing, and config
generation from a finished environment scan."""

from __future__ import annotations

import bottle

from ...core import keys
from .. import jobs, settings
from ..web import Ctx, as_json, json_body, render


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    @app.get("/scans")
    def scans_page():
        return render(
            "scans",
            ctx,
            available=ctx.jobs.available(),
            jobs=[j.view() for j in ctx.jobs.recent()],
            serial_ports=settings.serial_ports(),
            sensor_port=settings.sensor_port(state.store),
            actions=list(jobs.ACTIONS),
        )

    @app.post("/api/scans")
    def api_scan_start():
        body = json_body()
        try:
            if body.get("kind") in jobs.ACTIONS:
                kind, args = body["kind"], {"port": settings.sensor_port(state.store)}
            else:
                kind, args = settings.scan_args(body)
            job = ctx.jobs.start(kind, args)
        except ValueError as exc:
            return as_json({"error": str(exc)}, 400)
        return as_json(job.view())

    @app.get("/api/scans")
    def api_scans():
        return as_json([j.view() for j in ctx.jobs.recent()])

    @app.get("/api/scans/<job_id>")
    def api_scan(job_id):
        job = ctx.jobs.get(job_id)
        return as_json(job.view()) if job else as_json({"error": "no such scan"}, 404)

    @app.post("/api/scans/<job_id>/cancel")
    def api_scan_cancel(job_id):
        return as_json({"cancelled": ctx.jobs.cancel(job_id)})

    @app.post("/api/scans/<job_id>/generate")
    def api_scan_generate(job_id):
        job = ctx.jobs.get(job_id)
        if job is None or job.state != "done" or job.kind != "env":
            return as_json({"error": "only a finished environment scan can be used"}, 400)
        body = json_body()
        try:
            dims = settings.tank_dims_from(body)
        except ValueError as exc:
            return as_json({"ok": False, "message": str(exc)}, 400)
        state.cache.set(keys.LAST_ENV_SCAN, job.result)
        return as_json(settings.request_config_generation(job.result, dims, state.publish))
