"""The Bottle application: the guard (security.py) and every page group (pages/), wired together."""

from __future__ import annotations

import bottle

from .pages import catalogue, config, devicetest, login, logs, scans, settings, status
from .security import install
from .web import Ctx

PAGE_GROUPS = (status, login, config, devicetest, scans, logs, settings, catalogue)


def make_app(ctx: Ctx) -> bottle.Bottle:
    app = bottle.Bottle()
    app.config["ctx"] = ctx
    install(app, ctx)
    for group in PAGE_GROUPS:
        group.register(app, ctx)
    return app
