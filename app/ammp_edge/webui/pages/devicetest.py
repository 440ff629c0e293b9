"""Test a device: read it once, or one register in every word order (probe.py does the reading)."""

from __future__ import annotations

import bottle

from .. import configedit, probe
from ..web import Ctx, as_json, drivers, json_body, query, render


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    @app.get("/test")
    def test_page():
        config, _ = state.config()
        return render(
            "test",
            ctx,
            devices=sorted(config.devices) if config else [],
            drivers=sorted(drivers(state)),
            chosen=query().get("device", ""),
        )

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
            if rt not in probe.TESTABLE_TYPES:
                raise probe.ProbeError(f"reading_type must be one of {', '.join(probe.TESTABLE_TYPES)}")
            try:
                address = configedit.address_from_form(rt, body)
            except ValueError as exc:
                raise probe.ProbeError(str(exc)) from None
            dev_doc = {
                "driver": str(body.get("driver") or ""),
                "reading_type": rt,
                "vendor_id": "test",
                "address": address,
                "timeout": 2,
            }
        return probe.build_device(dev_doc, extra if isinstance(extra, dict) else {}, state.builtin)

    @app.post("/api/test/read")
    def api_test_read():
        body = json_body()
        try:
            return as_json(probe.read_device(probe_device(body)))
        except probe.ProbeError as exc:
            return as_json({"error": str(exc)}, 400)

    @app.post("/api/test/register")
    def api_test_register():
        body = json_body()
        try:
            device = probe_device(body)
            if device.reading_type not in ("modbustcp", "modbusrtu"):
                raise probe.ProbeError(f"a {device.reading_type} device has no registers")
            return as_json(probe.inspect_register(device, int(body.get("register", -1)), int(body.get("fncode", 3))))
        except (probe.ProbeError, ValueError, TypeError) as exc:
            return as_json({"error": str(exc)}, 400)
