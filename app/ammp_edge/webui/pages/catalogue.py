"""The driver catalogue (core.catalogue) for the web UI: search it when adding a device, look at one
driver's fields; and a local config for the SunSpec devices a scan found (node.configgen)."""

from __future__ import annotations

import bottle

from ...core import catalogue, keys
from ...node import configgen
from .. import configedit
from ..web import Ctx, as_json, drivers, json_body, query

MAX_RESULTS = 50


def register(app: bottle.Bottle, ctx: Ctx) -> None:
    state = ctx.state

    def entries() -> list[catalogue.Entry]:
        config, _ = state.config()
        extra = (config.raw.get("drivers") or {}) if config else {}
        return catalogue.catalogue(state.builtin, extra if isinstance(extra, dict) else {})

    @app.get("/api/drivers")
    def api_drivers():
        q = str(query().get("q") or "")[:200]
        found = catalogue.search(entries(), q)
        return as_json(
            {
                "query": q,
                "count": len(found),
                "drivers": [{k: v for k, v in e.as_dict().items() if k != "field_names"} for e in found[:MAX_RESULTS]],
            }
        )

    @app.get("/api/drivers/<name>")
    def api_driver(name):
        found = next((e for e in entries() if e.name == name), None)
        if found is None:
            return as_json({"error": f"no driver {name!r}"}, 404)
        return as_json({**found.as_dict(), "field_rows": catalogue.field_rows(drivers(state)[name])})

    @app.post("/api/scans/<job_id>/sunspec")
    def api_scan_sunspec(job_id):
        """The SunSpec devices of a finished scan as config: {"apply": false} shows it, true adds them
        to the running config through the one door."""
        job = ctx.jobs.get(job_id)
        if job is None or job.state != "done" or job.kind not in ("env", "network"):
            return as_json({"error": "only a finished network or environment scan can be used"}, 400)
        body = json_body()
        scan = job.result if isinstance(job.result, dict) else {"hosts": job.result}
        generated, problems = configgen.sunspec_config(scan)
        out = {
            "devices": sorted(generated["devices"]),
            "problems": [str(p) for p in problems],
            "config": generated,
        }
        if not generated["devices"]:
            return as_json({**out, "ok": False, "message": "no usable SunSpec device in this scan"})
        if body.get("apply") is not True:
            return as_json({**out, "ok": True, "message": f"{len(generated['devices'])} SunSpec device(s) found"})
        try:
            doc = configedit.current_doc(state.store)
        except ValueError as exc:
            return as_json({**out, "ok": False, "message": str(exc)}, 400)
        for key in ("devices", "readings"):
            doc.setdefault(key, {}).update(generated[key])
        if not isinstance(doc.get("drivers"), dict):
            doc["drivers"] = {}
        doc["drivers"].update(generated["drivers"])
        say = lambda text: state.publish(keys.LOG_TOPIC, text)  # a refusal to u/log/msg, as every door
        verdict = configedit.apply(state.store, configedit.dumps(doc), state.builtin, say=say)
        return as_json({**out, "ok": verdict.accepted, "message": verdict.message})
