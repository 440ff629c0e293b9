"""What every page of the web UI shares: its context, template rendering, JSON answers, form access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bottle
from bottle import HTTPResponse, request

from . import auth
from .jobs import Jobs
from .state import WebState

HERE = Path(__file__).resolve().parent
TEMPLATES = [str(HERE / "templates")]
STATIC = HERE / "static"


class Ctx:
    """Per-app state the routes share."""

    def __init__(self, state: WebState, jobs: Jobs | None = None):
        self.state = state
        self.sessions = auth.Sessions(state.store)
        self.limiter = auth.RateLimiter()
        self.jobs = jobs or Jobs()


def render(name: str, ctx: Ctx, **kw: Any) -> str:
    sid = request.environ.get("ae.sid")
    return bottle.template(
        name,
        template_lookup=TEMPLATES,
        csrf=ctx.sessions.csrf_token(sid) if sid else "",
        page=name,
        path=request.path,
        **kw,
    )


def as_json(data: Any, status_code: int = 200) -> HTTPResponse:
    return HTTPResponse(json.dumps(data, default=str), status=status_code, headers={"Content-Type": "application/json"})


def client_ip() -> str:
    return request.environ.get("REMOTE_ADDR") or "?"


def form() -> bottle.FormsDict:
    return request.forms.decode()


def json_body() -> dict:
    """The request's JSON object ({} for anything else)."""
    return request.json if isinstance(request.json, dict) else {}


def drivers(state: WebState) -> dict:
    """The built-in drivers and those of the current config (which win)."""
    config, _ = state.config()
    extra = (config.raw.get("drivers") or {}) if config else {}
    return {**state.builtin, **(extra if isinstance(extra, dict) else {})}
