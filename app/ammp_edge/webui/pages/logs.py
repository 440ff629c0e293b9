"""The log of each program, tailed from supervisord."""

from __future__ import annotations

import re
import xmlrpc.client

import bottle
from bottle import request

from ...core import supervisor as supervisord
from ..web import Ctx, as_json, query, render

PROGRAM = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
LOG_TAIL_BYTES = 32 * 1024


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    @app.get("/logs")
    def logs_page():
        progs, err = supervisord.programs()
        return render("logs", ctx, programs=progs, error=err, chosen=query().get("program", ""))

    @app.get("/api/logs/<name>")
    def api_log(name):
        if not PROGRAM.match(name):
            return as_json({"error": "bad program name"}, 400)
        try:
            offset = max(0, int(request.query.get("offset") or 0))
            text, new_offset, overflow = supervisord.connect(timeout=10).supervisor.tailProcessStdoutLog(
                name, offset, LOG_TAIL_BYTES
            )
        except (OSError, xmlrpc.client.Error, ValueError) as exc:
            return as_json({"error": f"cannot read the log of {name}: {exc}"}, 404)
        return as_json({"program": name, "text": text, "offset": new_offset, "overflow": overflow})
