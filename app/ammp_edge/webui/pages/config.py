"""The configuration pages: the running config, upload, restore, edit or add one device."""

from __future__ import annotations

import logging

import bottle
from bottle import request, response

from ...core import keys
from .. import configedit
from ..security import see_other
from ..web import Ctx, bad_request, drivers, form, query, render

log = logging.getLogger(__name__)


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    def config_page(result=None, applied=None, text: str = "", code: int = 200):
        config, unusable = state.config()
        response.status = code
        return render(
            "config",
            ctx,
            config=config,
            unusable=unusable,
            raw=state.config_raw(),
            result=result,
            applied=applied,
            text=text,
            has_previous=state.store.get_raw(keys.WEBUI_PREVIOUS_CONFIG) is not None,
        )

    @app.get("/config")
    def config_view():
        return config_page()

    @app.get("/config/download")
    def config_download():
        raw = state.config_raw() or b"{}"
        return bottle.HTTPResponse(
            raw,
            headers={"Content-Type": "application/json", "Content-Disposition": 'attachment; filename="config.json"'},
        )

    @app.post("/config")
    def config_upload():
        f = form()
        upload = request.files.get("file")
        if upload is not None and upload.filename:
            raw = upload.file.read(configedit.MAX_CONFIG_BYTES + 1)
        else:
            raw = (f.get("text") or "").encode()
        if not raw.strip():
            return config_page(configedit.Check([configedit.Problem("$", "no config given")]), False, "", 400)
        ok, result = configedit.apply(state.store, raw, state.builtin, anyway=f.get("anyway") == "on")
        if ok:
            log.info("web UI: config applied (%d bytes, %d problems)", len(raw), len(result.problems))
        return config_page(result, ok, "" if ok else raw.decode("utf-8", "replace")[:200000], 200 if ok else 400)

    @app.post("/config/restore")
    def config_restore():
        raw = state.store.get_raw(keys.WEBUI_PREVIOUS_CONFIG)
        if raw is None:
            return config_page(configedit.Check([configedit.Problem("$", "no previous config kept")]), False, "", 400)
        ok, result = configedit.apply(state.store, raw, state.builtin)
        return config_page(result, ok, "", 200 if ok else 400)

    def device_page(key: str | None, values: dict, errors: list, code: int = 200, add: bool = False):
        response.status = code
        return render("device", ctx, key=key, v=values, errors=errors, add=add, drivers=sorted(drivers(state)))

    @app.get("/config/device/<key>")
    def device_edit(key):
        try:
            doc = configedit.current_doc(state.store)
        except ValueError as exc:
            return device_page(key, {}, [str(exc)], 409)
        dev = doc["devices"].get(key)
        if not isinstance(dev, dict):
            return bad_request(f"no device {key!r} in the config", 404)
        v = {
            **(dev.get("address") or {}),
            **{k: dev.get(k) for k in ("driver", "name", "reading_type")},
            "enabled": dev.get("enabled", True) is not False,
        }
        return device_page(key, v, [])

    def apply_doc(doc: dict, on_error):
        ok, result = configedit.apply(state.store, configedit.dumps(doc), state.builtin)
        if not ok:
            return on_error([str(p) for p in result.errors] or ["the config would not be usable"])
        return see_other("/config?applied=1")

    @app.post("/config/device/<key>")
    def device_save(key):
        f = form()
        try:
            doc = configedit.edit_device(configedit.current_doc(state.store), key, f, drivers(state))
        except ValueError as exc:
            return device_page(key, dict(f), [str(exc)], 400)
        return apply_doc(doc, lambda errs: device_page(key, dict(f), errs, 400))

    @app.get("/config/add")
    def device_add_form():
        q = query()
        v = {
            k: q.get(k)
            for k in ("host", "port", "unit_id", "device", "slaveaddr", "baudrate", "driver", "name")
            if q.get(k)
        }
        v.setdefault("reading_type", q.get("reading_type") or ("modbusrtu" if v.get("device") else "modbustcp"))
        return device_page(q.get("key") or "", v, [], add=True)

    @app.post("/config/add")
    def device_add():
        f = form()
        key = (f.get("key") or "").strip()
        try:
            doc = configedit.add_device(configedit.current_doc(state.store), key, f, drivers(state))
        except ValueError as exc:
            return device_page(key, dict(f), [str(exc)], 400, add=True)
        return apply_doc(doc, lambda errs: device_page(key, dict(f), errs, 400, add=True))
