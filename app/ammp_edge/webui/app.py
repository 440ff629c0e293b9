"""The Bottle application: security hooks, login, health, status and live readings. The other pages
(configuration, device test, scans, logs, settings) are in pages.py.

Every route but /health, /login and /static needs a session; a page redirects to /login, an /api/ route
answers 401. Every POST needs the CSRF token of its session (form field `csrf` or header X-CSRF-Token)
and, when the browser sends one, an Origin equal to the Host. Responses carry a strict CSP (no inline
script or style), no-store caching and frame denial.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote, urlsplit

import bottle
from bottle import HTTPResponse, request, response

from . import auth, status
from .jobs import Jobs
from .state import WebState

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = [str(HERE / "templates")]
STATIC = HERE / "static"
PUBLIC = ("/health", "/login", "/static/")
MAX_BODY = 5 * 1024 * 1024
bottle.BaseRequest.MEMFILE_MAX = MAX_BODY
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


class Ctx:
    """Per-app state the routes share."""

    def __init__(self, state: WebState, jobs: Jobs | None = None):
        self.state = state
        self.sessions = auth.Sessions(state.store)
        self.limiter = auth.RateLimiter()
        self.jobs = jobs or Jobs()


def render(name: str, ctx: Ctx, **kw) -> str:
    sid = request.environ.get("ae.sid")
    return bottle.template(name, template_lookup=TEMPLATES, csrf=ctx.sessions.csrf_token(sid) if sid else "",
                           page=name, path=request.path, **kw)


def as_json(data, status_code: int = 200) -> HTTPResponse:
    return HTTPResponse(json.dumps(data, default=str), status=status_code, headers={"Content-Type": "application/json"})


def client_ip() -> str:
    return request.environ.get("REMOTE_ADDR") or "?"


def form() -> bottle.FormsDict:
    return request.forms.decode()


def make_app(ctx: Ctx) -> bottle.Bottle:
    app = bottle.Bottle()
    app.config["ctx"] = ctx

    @app.hook("before_request")
    def guard():
        path = request.path
        if int(request.environ.get("CONTENT_LENGTH") or 0) > MAX_BODY:
            raise HTTPResponse("request too large", status=413)
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
                raise HTTPResponse(json.dumps({"error": "login required"}), status=401,
                                   headers={"Content-Type": "application/json"})
            raise HTTPResponse(status=303, headers={"Location": "/login?next=" + quote(request.fullpath, safe="/")})
        request.environ["ae.sid"] = sid
        if request.method == "POST":
            token = request.headers.get("X-CSRF-Token") or request.forms.get("csrf")
            if not ctx.sessions.csrf_ok(sid, token):
                raise HTTPResponse(json.dumps({"error": "missing or wrong CSRF token"}), status=403,
                                   headers={"Content-Type": "application/json"})

    @app.hook("after_request")
    def headers():
        response.set_header("Content-Security-Policy", CSP)
        response.set_header("X-Content-Type-Options", "nosniff")
        response.set_header("X-Frame-Options", "DENY")
        response.set_header("Referrer-Policy", "same-origin")
        if not request.path.startswith("/static/"):
            response.set_header("Cache-Control", "no-store")

    @app.get("/static/<name:path>")
    def static(name):
        return bottle.static_file(name, root=str(STATIC), headers={"Cache-Control": "max-age=3600"})

    @app.get("/health")
    def health():
        code, body = status.health(ctx.state)
        return as_json(body, code)

    # -- login -------------------------------------------------------------------------------------
    def pre_token() -> tuple[str, str]:
        pre = request.get_cookie(auth.PRE_COOKIE)
        if not pre or len(pre) != 32 or not pre.isalnum():
            import secrets

            pre = secrets.token_hex(16)
        return pre, ctx.sessions.csrf_token("pre:" + pre)

    def safe_next(target: str | None) -> str:
        target = target or "/"
        return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"

    @app.get("/login")
    def login_page(error: str = "", code: int = 200):
        pre, token = pre_token()
        response.set_cookie(auth.PRE_COOKIE, pre, httponly=True, samesite="strict", path="/login", max_age=3600)
        response.status = code
        target = request.forms.get("next") if request.method == "POST" else request.query.get("next")
        return render("login", ctx, login_csrf=token, error=error, next=safe_next(target),
                      initial_hint=auth.initial_password_path())

    @app.post("/login")
    def login():
        f = form()
        pre = request.get_cookie(auth.PRE_COOKIE) or ""
        if not pre or not ctx.sessions.csrf_ok("pre:" + pre, f.get("csrf")):
            return login_page("The form expired; please try again.", 403)
        wait = ctx.limiter.retry_after(client_ip())
        if wait:
            response.set_header("Retry-After", str(wait))
            return login_page(f"Too many failed attempts. Try again in {wait} s.", 429)
        if not auth.verify_password(f.get("password", "")[:256], ctx.state.store.get(auth.PASSWORD_KEY)):
            ctx.limiter.failed(client_ip())
            log.warning("web UI: failed login from %s", client_ip())
            return login_page("Wrong password.", 401)
        ctx.limiter.succeeded(client_ip())
        log.info("web UI: login from %s", client_ip())
        response.set_cookie(auth.SESSION_COOKIE, ctx.sessions.issue(), httponly=True, samesite="strict", path="/",
                            max_age=auth.SESSION_LIFETIME_S)
        response.delete_cookie(auth.PRE_COOKIE, path="/login")
        return bottle.redirect(safe_next(f.get("next")), 303)

    @app.post("/logout")
    def logout():
        ctx.sessions.revoke(request.environ["ae.sid"])
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return bottle.redirect("/login", 303)

    # -- status and live readings ------------------------------------------------------------------
    @app.get("/")
    def status_page():
        return render("status", ctx, s=status.summary(ctx.state),
                      initial=auth.initial_password_path().exists())

    @app.get("/api/status")
    def api_status():
        return as_json(status.summary(ctx.state))

    @app.get("/live")
    def live_page():
        return render("live", ctx, live=ctx.state.live())

    @app.get("/api/live")
    def api_live():
        return as_json(ctx.state.live())

    @app.get("/api/history")
    def api_history():
        device, name = request.query.getunicode("device", ""), request.query.getunicode("field", "")
        return as_json({"device": device, "field": name, "points": ctx.state.series(device, name)})

    from . import pages

    pages.register(app, ctx)
    return app
