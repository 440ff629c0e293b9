"""The configuration pages: the running config, upload, restore, edit or add one device."""

from __future__ import annotations

import logging

import bottle
from bottle import request, response

from ...core import configdoor, jsontext, keys, paths, yamltext
from ...core.configdoor import Verdict
from ...core.problems import ConfigUnusable, Problem
from .. import configedit
from ..security import see_other
from ..web import Ctx, bad_request, drivers, form, query, render

log = logging.getLogger(__name__)


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    def say(text: str) -> None:  # a refusal goes to u/log/msg too, as from every door that can say it
        state.publish(keys.LOG_TOPIC, text)

    def keep_chosen(f) -> bool:
        """The engineer chose to keep this edit until the cloud sends a new config (offered only when the
        AMMP cloud manages the node)."""
        return f.get("cloud") == "keep" and configdoor.managed(state.store)

    def config_page(result=None, applied=None, text: str = "", code: int = 200, notice: str | None = None):
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
            notice=notice,
            source=configdoor.state(state.store, config.config_id if config else None),
            check_interval=paths.config_check_interval(),
            has_previous=state.store.get_raw(keys.WEBUI_PREVIOUS_CONFIG) is not None,
        )

    @app.get("/config")
    def config_view():
        q = request.query
        notice = (
            "Control handed back to the AMMP cloud: the node checks its config now." if q.get("handed_back") else None
        )
        return config_page(applied=True if q.get("applied") else None, notice=notice)

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
            raw = upload.file.read()  # bounded by the request body limit (webui.security); the door checks the size
        else:
            raw = (f.get("text") or "").encode()
        if not raw.strip():
            return config_page(
                Verdict(configdoor.REFUSED, "no config given", [Problem("$", "no config given")]), False, "", 400
            )
        as_yaml = yamltext.yaml_name(upload.filename) if upload is not None and upload.filename else None
        if as_yaml is None:
            as_yaml = f.get("format") == "yaml"
        try:  # YAML: the door takes the JSON text of its value (core.yamltext)
            doc = yamltext.to_json(raw) if as_yaml else raw
        except ConfigUnusable as exc:
            result = configdoor.refuse("webui", exc.problems, say)
        else:
            result = configedit.apply(
                state.store, doc, state.builtin, anyway=f.get("anyway") == "on", keep_local=keep_chosen(f), say=say
            )
        if result.accepted:
            log.info("web UI: %s", result.message)
        text = "" if result.accepted else raw[: jsontext.MAX_BYTES].decode("utf-8", "replace")[:200000]
        return config_page(result, result.accepted, text, 200 if result.accepted else 400)

    @app.post("/config/restore")
    def config_restore():
        f = form()
        raw = state.store.get_raw(keys.WEBUI_PREVIOUS_CONFIG)
        if raw is None:
            return config_page(
                Verdict(configdoor.REFUSED, "no previous config kept", [Problem("$", "no previous config kept")]),
                False,
                "",
                400,
            )
        result = configedit.apply(
            state.store, raw, state.builtin, keep_local=keep_chosen(f), say=say, detail="(restore)"
        )
        return config_page(result, result.accepted, "", 200 if result.accepted else 400)

    @app.post("/config/cloud")
    def config_hand_back():
        configdoor.hand_back(state.store)
        return see_other("/config?handed_back=1")

    def device_page(key: str | None, values: dict, errors: list, code: int = 200, add: bool = False):
        response.status = code
        return render(
            "device",
            ctx,
            key=key,
            v=values,
            errors=errors,
            add=add,
            drivers=sorted(drivers(state)),
            managed=configdoor.managed(state.store),
            check_interval=paths.config_check_interval(),
        )

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

    def apply_doc(doc: dict, f, on_error):
        result = configedit.apply(state.store, configedit.dumps(doc), state.builtin, keep_local=keep_chosen(f), say=say)
        if not result.accepted:
            return on_error([str(p) for p in result.errors] or [result.message])
        return see_other("/config?applied=1")

    @app.post("/config/device/<key>")
    def device_save(key):
        f = form()
        try:
            doc = configedit.edit_device(configedit.current_doc(state.store), key, f, drivers(state))
        except ValueError as exc:
            return device_page(key, dict(f), [str(exc)], 400)
        return apply_doc(doc, f, lambda errs: device_page(key, dict(f), errs, 400))

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
        return apply_doc(doc, f, lambda errs: device_page(key, dict(f), errs, 400, add=True))
