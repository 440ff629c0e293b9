"""The web UI's guard: every route but /health, /login and /static needs a session; a page redirects to
/login, an /api/ route answers 401. A body is read only after that, at most 16 KiB without a session
(5 MiB with one). Every POST needs the CSRF token of its session (form field `csrf` or header
X-CSRF-Token) and, when the browser sends one, an Origin equal to the Host. Responses carry a strict
CSP (no inline script or style), no-store caching and frame denial. Where a request may send the
browser next is checked by local_path, the one function for that."""

from __future__ import annotations

import json
import unicodedata
from urllib.parse import quote, urlsplit

import bottle
from bottle import HTTPResponse, request, response

from ..core import jsontext
from . import auth
from .web import Ctx, form

PUBLIC = ("/health", "/login", "/static/")
MAX_BODY = jsontext.MAX_BYTES + 1024 * 1024  # a config at the limit, as a form; cheroot refuses more itself (server.py)
MAX_ANONYMOUS_BODY = 16 * 1024  # without a session only the login form is accepted (well under 1 KiB)
bottle.BaseRequest.MEMFILE_MAX = MAX_BODY
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


MAX_NEXT_LEN = 2000
PATH_SAFE = "/?=&;:@!$'()*+,~-._%#"  # kept as they are; everything else is percent-encoded


def local_path(target: str | None) -> str:
    """`target` when it is a path of this UI (where to go after logging in), else "/". The one check for
    every redirect to a place a request named.

    Strict: exactly one leading '/', no scheme or host, no backslash, no control or format character
    (browsers drop tab, CR and LF inside URLs, so '/<TAB>/evil.example' would become '//evil.example',
    another host), at most 2000 characters. The result is percent-encoded ASCII, safe in a header."""
    if not isinstance(target, str) or not 1 <= len(target) <= MAX_NEXT_LEN:
        return "/"
    if not target.startswith("/") or target.startswith("//"):
        return "/"
    if any(c == "\\" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in target):
        return "/"
    path = quote(target, safe=PATH_SAFE)
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


def see_other(path: str) -> HTTPResponse:
    """A 303 to a path of this UI, relative (no Host header reflected)."""
    return HTTPResponse(status=303, headers={"Location": local_path(path)})


def _refuse_json(message: str, status: int) -> HTTPResponse:
    return HTTPResponse(json.dumps({"error": message}), status=status, headers={"Content-Type": "application/json"})


def _read_body() -> None:
    """Read the body now, under the server's deadline (server.py), so a late one is a 408 here."""
    try:
        request.body  # noqa: B018 - bottle reads and keeps it
    except TimeoutError:
        raise HTTPResponse("request body too slow\n", status=408, headers={"Connection": "close"}) from None


def install(app: bottle.Bottle, ctx: Ctx) -> None:
    @app.hook("before_request")
    def guard() -> None:
        path = request.path
        if request.method not in ("GET", "HEAD", "POST"):
            raise HTTPResponse("method not allowed", status=405)
        length = request.content_length
        if length > MAX_BODY:
            raise HTTPResponse(
                f"request too large: the limit is {MAX_BODY:,} bytes (a config at most {jsontext.MAX_BYTES:,})",
                status=413,
            )
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("Host"):
                raise HTTPResponse("cross-origin request refused", status=403)
        public = any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)
        sid = None if public else ctx.sessions.check(request.get_cookie(auth.SESSION_COOKIE))
        if not public and sid is None:
            if path.startswith("/api/") or request.method == "POST":
                raise _refuse_json("login required", 401)
            target = request.fullpath + ("?" + request.query_string if request.query_string else "")
            raise HTTPResponse(status=303, headers={"Location": "/login?next=" + quote(target, safe="/")})
        if length > (MAX_BODY if sid else MAX_ANONYMOUS_BODY):
            raise HTTPResponse("request too large\n", status=413)
        if length > 0:
            _read_body()
        if public:
            return
        request.environ["ae.sid"] = sid
        if request.method == "POST":
            token = request.headers.get("X-CSRF-Token") or form().get("csrf")
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
