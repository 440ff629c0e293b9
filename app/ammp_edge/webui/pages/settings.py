"""Settings: the password, the AMMP bridges, a custom broker, the API base URL, the log level."""

from __future__ import annotations

import logging

import bottle
from bottle import response

from ...core import credentials, keys, paths
from .. import auth, settings
from ..security import see_other
from ..web import Ctx, client_ip, form, render

log = logging.getLogger(__name__)


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    def settings_page(message: str = "", errors: list | None = None, code: int = 200):
        response.status = code
        return render(
            "settings",
            ctx,
            kv=settings.current(state.store),
            message=message,
            errors=errors or [],
            bridges=state.bridge_view(),
            min_len=credentials.MIN_PASSWORD_LEN,
            initial=paths.webui_initial_password_path().exists(),
        )

    @app.get("/settings")
    def settings_view():
        return settings_page()

    @app.post("/settings/password")
    def settings_password():
        f = form()
        slot, wait = ctx.limiter.begin(client_ip())  # the current password is guessed no faster than at login
        if slot is None:
            response.set_header("Retry-After", str(wait))
            return settings_page(errors=[f"too many wrong passwords; try again in {wait} s"], code=429)
        ok = False
        try:
            ok = credentials.verify_password(f.get("current", "")[:256], state.store.get(keys.WEBUI_PASSWORD))
        finally:
            ctx.limiter.end(slot, ok)
        if not ok:
            return settings_page(errors=["the current password is wrong"], code=400)
        err = credentials.check_new_password(f.get("new", ""), f.get("repeat", ""))
        if err:
            return settings_page(errors=[err], code=400)
        credentials.change_password(state.store, f.get("new"))
        log.info("web UI: password changed; every session ended")
        redirect = see_other("/login")
        redirect.delete_cookie(auth.SESSION_COOKIE, path="/")
        return redirect

    @app.post("/settings/<section:re:bridges|custom|api|loglevel>")
    def settings_save(section):
        errors = settings.save(state.store, section, form())
        if errors:
            return settings_page(errors=errors, code=400)
        return settings_page(message=f"Saved ({section}). " + settings.APPLIES[section])
