"""Pages that change or probe the appliance: configuration, device test, scans, logs, settings."""

from __future__ import annotations

import logging
import re
import xmlrpc.client

import bottle
from bottle import request, response

from ..device import supervise
from . import auth, configedit, jobs, probe, settings
from .app import as_json, form, render

log = logging.getLogger(__name__)

PROGRAM = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
LOG_TAIL_BYTES = 32 * 1024


def register(app: bottle.Bottle, ctx) -> None:
    state = ctx.state

    def drivers() -> dict:
        config, _ = state.config()
        extra = (config.raw.get("drivers") or {}) if config else {}
        return {**state.builtin, **(extra if isinstance(extra, dict) else {})}

    # -- configuration -------------------------------------------------------------------------------
    def config_page(result=None, applied=None, text: str = "", code: int = 200):
        config, unusable = state.config()
        response.status = code
        return render("config", ctx, config=config, unusable=unusable, raw=state.config_raw(), result=result,
                      applied=applied, text=text, has_previous=state.store.get_raw(configedit.PREVIOUS_KEY) is not None)

    @app.get("/config")
    def config_view():
        return config_page()

    @app.get("/config/download")
    def config_download():
        raw = state.config_raw() or b"{}"
        return bottle.HTTPResponse(raw, headers={"Content-Type": "application/json",
                                                 "Content-Disposition": 'attachment; filename="config.json"'})

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
        raw = state.store.get_raw(configedit.PREVIOUS_KEY)
        if raw is None:
            return config_page(configedit.Check([configedit.Problem("$", "no previous config kept")]), False, "", 400)
        ok, result = configedit.apply(state.store, raw, state.builtin)
        return config_page(result, ok, "", 200 if ok else 400)

    def device_page(key: str | None, values: dict, errors: list, code: int = 200, add: bool = False):
        response.status = code
        return render("device", ctx, key=key, v=values, errors=errors, add=add, drivers=sorted(drivers()))

    @app.get("/config/device/<key>")
    def device_edit(key):
        try:
            doc = configedit.current_doc(state.store)
        except ValueError as exc:
            return device_page(key, {}, [str(exc)], 409)
        dev = doc["devices"].get(key)
        if not isinstance(dev, dict):
            return bottle.HTTPResponse(f"no device {key!r}", status=404)
        v = {**(dev.get("address") or {}), **{k: dev.get(k) for k in ("driver", "name", "reading_type")},
             "enabled": dev.get("enabled", True) is not False}
        return device_page(key, v, [])

    def apply_doc(doc: dict, on_error):
        ok, result = configedit.apply(state.store, configedit.dumps(doc), state.builtin)
        if not ok:
            return on_error([str(p) for p in result.errors] or ["the config would not be usable"])
        return bottle.redirect("/config?applied=1", 303)

    @app.post("/config/device/<key>")
    def device_save(key):
        f = form()
        try:
            doc = configedit.edit_device(configedit.current_doc(state.store), key, f, drivers())
        except ValueError as exc:
            return device_page(key, dict(f), [str(exc)], 400)
        return apply_doc(doc, lambda errs: device_page(key, dict(f), errs, 400))

    @app.get("/config/add")
    def device_add_form():
        q = request.query.decode()
        v = {k: q.get(k) for k in ("host", "port", "unit_id", "device", "slaveaddr", "baudrate", "driver", "name")
             if q.get(k)}
        v.setdefault("reading_type", q.get("reading_type") or ("modbusrtu" if v.get("device") else "modbustcp"))
        return device_page(q.get("key") or "", v, [], add=True)

    @app.post("/config/add")
    def device_add():
        f = form()
        key = (f.get("key") or "").strip()
        try:
            doc = configedit.add_device(configedit.current_doc(state.store), key, f, drivers())
        except ValueError as exc:
            return device_page(key, dict(f), [str(exc)], 400, add=True)
        return apply_doc(doc, lambda errs: device_page(key, dict(f), errs, 400, add=True))

    # -- test a device -------------------------------------------------------------------------------
    @app.get("/test")
    def test_page():
        config, _ = state.config()
        return render("test", ctx, devices=sorted(config.devices) if config else [], drivers=sorted(drivers()),
                      chosen=request.query.getunicode("device", ""))

    def probe_device(body: dict):
        config, _ = state.config()
        extra = (config.raw.get("drivers") or {}) if config else {}
        if body.get("device"):
            key = str(body["device"])
            if not config or key not in config.raw.get("devices", {}):
                raise probe.ProbeError(f"no device {key!r} in the config")
            dev_doc = dict(config.raw["devices"][key])
        else:
            rt = str(body.get("reading_type") or "modbustcp")
            if rt not in ("modbustcp", "modbusrtu"):
                raise probe.ProbeError("reading_type must be modbustcp or modbusrtu")
            try:
                address = configedit.address_from_form(rt, body)
            except ValueError as exc:
                raise probe.ProbeError(str(exc)) from None
            dev_doc = {"driver": str(body.get("driver") or ""), "reading_type": rt, "vendor_id": "test",
                       "address": address, "timeout": 2}
        return probe.build_device(dev_doc, extra if isinstance(extra, dict) else {}, state.builtin)

    @app.post("/api/test/read")
    def api_test_read():
        body = request.json if isinstance(request.json, dict) else {}
        try:
            return as_json(probe.read_device(probe_device(body)))
        except probe.ProbeError as exc:
            return as_json({"error": str(exc)}, 400)

    @app.post("/api/test/register")
    def api_test_register():
        body = request.json if isinstance(request.json, dict) else {}
        try:
            device = probe_device(body)
            if device.reading_type == "sys":
                raise probe.ProbeError("a sys device has no registers")
            return as_json(probe.inspect_register(device, int(body.get("register", -1)), int(body.get("fncode", 3))))
        except (probe.ProbeError, ValueError, TypeError) as exc:
            return as_json({"error": str(exc)}, 400)

    # -- scans ---------------------------------------------------------------------------------------
    @app.get("/scans")
    def scans_page():
        return render("scans", ctx, available=ctx.jobs.available(), jobs=[j.view() for j in ctx.jobs.recent()],
                      serial_ports=settings.serial_ports(), sensor_port=settings.sensor_port(state.store),
                      actions=list(jobs.ACTIONS))

    @app.post("/api/scans")
    def api_scan_start():
        body = request.json if isinstance(request.json, dict) else {}
        try:
            if body.get("kind") in jobs.ACTIONS:
                kind, args = body["kind"], {"port": settings.sensor_port(state.store)}
            else:
                kind, args = settings.scan_args(body)
            job = ctx.jobs.start(kind, args)
        except ValueError as exc:
            return as_json({"error": str(exc)}, 400)
        return as_json(job.view())

    @app.get("/api/scans")
    def api_scans():
        return as_json([j.view() for j in ctx.jobs.recent()])

    @app.get("/api/scans/<job_id>")
    def api_scan(job_id):
        job = ctx.jobs.get(job_id)
        return as_json(job.view()) if job else as_json({"error": "no such scan"}, 404)

    @app.post("/api/scans/<job_id>/cancel")
    def api_scan_cancel(job_id):
        return as_json({"cancelled": ctx.jobs.cancel(job_id)})

    @app.post("/api/scans/<job_id>/generate")
    def api_scan_generate(job_id):
        job = ctx.jobs.get(job_id)
        if job is None or job.state != "done" or job.kind != "env":
            return as_json({"error": "only a finished environment scan can be used"}, 400)
        body = request.json if isinstance(request.json, dict) else {}
        try:
            dims = settings.tank_dims_from(body)
        except ValueError as exc:
            return as_json({"ok": False, "message": str(exc)}, 400)
        state.cache.set("last_env_scan", job.result)
        return as_json(settings.request_config_generation(job.result, dims, state.publish))

    # -- logs ----------------------------------------------------------------------------------------
    @app.get("/logs")
    def logs_page():
        from . import status

        progs, err = status.programs()
        return render("logs", ctx, programs=progs, error=err, chosen=request.query.getunicode("program", ""))

    @app.get("/api/logs/<name>")
    def api_log(name):
        if not PROGRAM.match(name):
            return as_json({"error": "bad program name"}, 400)
        try:
            offset = max(0, int(request.query.get("offset") or 0))
            text, new_offset, overflow = supervise.connect(timeout=10).supervisor.tailProcessStdoutLog(
                name, offset, LOG_TAIL_BYTES)
        except (OSError, xmlrpc.client.Error, ValueError) as exc:
            return as_json({"error": f"cannot read the log of {name}: {exc}"}, 404)
        return as_json({"program": name, "text": text, "offset": new_offset, "overflow": overflow})

    # -- settings ------------------------------------------------------------------------------------
    def settings_page(message: str = "", errors: list | None = None, code: int = 200):
        response.status = code
        return render("settings", ctx, kv=settings.current(state.store), message=message, errors=errors or [],
                      bridges=state.bridge_view(), min_len=auth.MIN_PASSWORD_LEN,
                      initial=auth.initial_password_path().exists())

    @app.get("/settings")
    def settings_view():
        return settings_page()

    @app.post("/settings/password")
    def settings_password():
        f = form()
        if not auth.verify_password(f.get("current", "")[:256], state.store.get(auth.PASSWORD_KEY)):
            return settings_page(errors=["the current password is wrong"], code=400)
        err = auth.check_new_password(f.get("new", ""), f.get("repeat", ""))
        if err:
            return settings_page(errors=[err], code=400)
        auth.change_password(state.store, f.get("new"))
        log.info("web UI: password changed; every session ended")
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return bottle.redirect("/login", 303)

    @app.post("/settings/<section:re:bridges|custom|api|loglevel>")
    def settings_save(section):
        errors = settings.save(state.store, section, form())
        if errors:
            return settings_page(errors=errors, code=400)
        return settings_page(message=f"Saved ({section}). " + settings.APPLIES[section])

