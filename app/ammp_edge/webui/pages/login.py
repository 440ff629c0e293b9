"""Login and logout: the password form with its own CSRF token (tied to a pre-session cookie), a rate
limit per client address, a signed session cookie."""

from __future__ import annotations

import logging
import secrets

import bottle
from bottle import request, response

from ...core import credentials, keys, paths
from .. import auth
from ..web import Ctx, client_ip, form, render

log = logging.getLogger(__name__)


def safe_next(target: str | None) -> str:
    target = target or "/"
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    def pre_token() -> tuple[str, str]:
        pre = request.get_cookie(auth.PRE_COOKIE)
        if not pre or len(pre) != 32 or not pre.isalnum():
            pre = secrets.token_hex(16)
        return pre, ctx.sessions.csrf_token("pre:" + pre)

    @app.get("/login")
    def login_page(error: str = "", code: int = 200) -> str:
        pre, token = pre_token()
        response.set_cookie(auth.PRE_COOKIE, pre, httponly=True, samesite="strict", path="/login", max_age=3600)
        response.status = code
        target = request.forms.get("next") if request.method == "POST" else request.query.get("next")
        return render(
            "login",
            ctx,
            login_csrf=token,
            error=error,
            next=safe_next(target),
            initial_hint=paths.webui_initial_password_path(),
        )

    @app.post("/login")
    def login() -> str:
        f = form()
        pre = request.get_cookie(auth.PRE_COOKIE) or ""
        if not pre or not ctx.sessions.csrf_ok("pre:" + pre, f.get("csrf")):
            return login_page("The form expired; please try again.", 403)
        wait = ctx.limiter.retry_after(client_ip())
        if wait:
            response.set_header("Retry-After", str(wait))
            return login_page(f"Too many failed attempts. Try again in {wait} s.", 429)
        if not credentials.verify_password(f.get("password", "")[:256], ctx.state.store.get(keys.WEBUI_PASSWORD)):
            ctx.limiter.failed(client_ip())
            log.warning("web UI: failed login from %s", client_ip())
            return login_page("Wrong password.", 401)
        ctx.limiter.succeeded(client_ip())
        log.info("web UI: login from %s", client_ip())
        response.set_cookie(
            auth.SESSION_COOKIE,
            ctx.sessions.issue(),
            httponly=True,
            samesite="strict",
            path="/",
            max_age=auth.SESSION_LIFETIME_S,
        )
        response.delete_cookie(auth.PRE_COOKIE, path="/login")
        return bottle.redirect(safe_next(f.get("next")), 303)

    @app.post("/logout")
    def logout() -> str:
        ctx.sessions.revoke(request.environ["ae.sid"])
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return bottle.redirect("/login", 303)
