"""The web UI's guard: every route but /health, /login and /static needs a session; a page redirects to
/login, an /api/ route answers 401. Every POST needs the CSRF token of its session (form field `csrf` or
header X-CSRF-Token) and, when the browser sends one, an Origin equal to the Host. Responses carry a
strict CSP (no inline script or style), no-store caching and frame denial."""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

import bottle
from bottle import HTTPResponse, request, response

from ..core import jsontext
from . import auth
from .web import Ctx

PUBLIC = ("/health", "/login", "/static/")
MAX_BODY = jsontext.MAX_BYTES + 1024 * 1024  # a config at the limit, uploaded as a form
bottle.BaseRequest.MEMFILE_MAX = MAX_BODY
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


def _refuse_json(message: str, status: int) -> HTTPResponse:
    return HTTPResponse(json.dumps({"error": message}), status=status, headers={"Content-Type": "application/json"})


def install(app: bottle.Bottle, ctx: Ctx) -> None:
    @app.hook("before_request")
    def guard() -> None:
        path = request.path
        if int(request.environ.get("CONTENT_LENGTH") or 0) > MAX_BODY:
            raise HTTPResponse(
                f"request too large: the limit is {MAX_BODY:,} bytes (a config at most {jsontext.MAX_BYTES:,})",
                status=413,
            )
        if request.method not in ("GET", "HEAD", "POST"):
            raise HTTPResponse("method not allowed", status=405)
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("Host"):
                raise HTTPResponse("cross-origin request refused", status=403)
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC):
            return
        sid = ctx.sessions.check(request.get_cookie(auth.SESSION_COOKIE))
        if sid is None:
            if path.startswith("/api/") or request.method == "POST":
                raise _refuse_json("login required", 401)
            raise HTTPResponse(status=303, headers={"Location": "/login?next=" + quote(request.fullpath, safe="/")})
        request.environ["ae.sid"] = sid
        if request.method == "POST":
            token = request.headers.get("X-CSRF-Token") or request.forms.get("csrf")
            if not ctx.sessions.csrf_ok(sid, token):
                raise _refuse_json("missing or wrong CSRF token", 403)

    @app.hook("after_request")
    def headers() -> None:
        response.set_header("Content-Security-Policy", CSP)
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("X-Frame-Options", "DENY")
        response.set_header("Referrer-Policy", "same-origin")
        if not request.path.startswith("/static/"):
            response.set_header("Cache-Control", "no-store")
