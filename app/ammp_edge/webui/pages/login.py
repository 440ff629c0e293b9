"""Login and logout: the password form with its own CSRF token (tied to a pre-session cookie), the
login limits (auth.LoginLimiter), a signed session cookie, and back to a path of this UI only."""

from __future__ import annotations

import logging
import secrets

import bottle
from bottle import request, response

from ...core import credentials, keys, paths
from .. import auth
from ..security import local_path, see_other
from ..web import Ctx, client_ip, form, render

log = logging.getLogger(__name__)


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    def pre_token() -> tuple[str, str]:
        pre = request.get_cookie(auth.PRE_COOKIE)
        if not pre or len(pre) != 32 or not pre.isalnum():
            pre = secrets.token_hex(16)
        return pre, ctx.sessions.csrf_token("pre:" + pre)

    @app.get("/login")
    def login_page(error: str = "", code: int = 200, target: str | None = None) -> str:
        pre, token = pre_token()
        response.set_cookie(auth.PRE_COOKIE, pre, httponly=True, samesite="strict", path="/login", max_age=3600)
        response.status = code
        if target is None:
            target = request.query.getunicode("next", "/")
        return render(
            "login",
            ctx,
            login_csrf=token,
            error=error,
            next=local_path(target),
            initial_hint=paths.webui_initial_password_path(),
        )

    @app.post("/login")
    def login() -> object:
        f = form()
        target = f.get("next")
        pre = request.get_cookie(auth.PRE_COOKIE) or ""
        if not pre or not ctx.sessions.csrf_ok("pre:" + pre, f.get("csrf")):
            return login_page("The form expired; please try again.", 403, target)
        known = ctx.sessions.known(request.get_cookie(auth.KNOWN_COOKIE))
        slot, wait = ctx.limiter.begin(client_ip(), known)
        if slot is None:
            response.set_header("Retry-After", str(wait))
            return login_page(f"Too many failed attempts. Try again in {wait} s.", 429, target)
        ok = False
        try:
            ok = credentials.verify_password(f.get("password", "")[:256], ctx.state.store.get(keys.WEBUI_PASSWORD))
        finally:
            ctx.limiter.end(slot, ok)
        if not ok:
            log.warning("web UI: failed login from %s", client_ip())
            return login_page("Wrong password.", 401, target)
        log.info("web UI: login from %s", client_ip())
        cookies = {
            auth.SESSION_COOKIE: (ctx.sessions.issue(), "/", auth.SESSION_LIFETIME_S),
            auth.KNOWN_COOKIE: (ctx.sessions.issue_known(known), "/login", auth.KNOWN_LIFETIME_S),
        }
        redirect = see_other(target or "/")
        for name, (value, path, age) in cookies.items():
            redirect.set_cookie(name, value, httponly=True, samesite="strict", path=path, max_age=age)
        redirect.delete_cookie(auth.PRE_COOKIE, path="/login")
        return redirect

    @app.post("/logout")
    def logout() -> object:
        ctx.sessions.revoke(request.environ["ae.sid"])
        redirect = see_other("/login")
        redirect.delete_cookie(auth.SESSION_COOKIE, path="/")
        return redirect
