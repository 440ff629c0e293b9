#!/usr/bin/env python3
"""Server-side render time of every web UI page with 50 configured devices (and their last readings and
some history), calling the WSGI app directly: no network, no browser. Prints median and worst per page.

    .venv/bin/python scripts/bench_webui.py [--devices 50] [--rounds 30]

Runs in a temporary AE_DATA_DIR / AE_TEMP_DIR; supervisord is not running, so the program list is the
"not reachable" path (an XML-RPC call to a live supervisord adds about a millisecond).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-webui-")
    os.environ.update(AE_DATA_DIR=f"{tmp}/d", AE_TEMP_DIR=f"{tmp}/t", MQTT_BRIDGE_PORT="1")

    from ammp_edge.core import credentials, drivers, paths
    from ammp_edge.core.kvs import KVStore, cache
    from ammp_edge.webui import auth
    from ammp_edge.webui.app import make_app
    from ammp_edge.webui.state import WebState
    from ammp_edge.webui.web import Ctx

    builtin = drivers.load_builtin_drivers(paths.drivers_dir())
    names = ["sma_stp25000", "eastron_sdm530", "sma_sunny_island", "deepsea_dse8610"]
    names = [n for n in names if n in builtin] or sorted(builtin)[:4]
    devices, readings = {}, {}
    for i in range(args.devices):
        drv = names[i % len(names)]
        key = f"dev{i:02d}"
        devices[key] = {
            "name": f"Device {i}",
            "driver": drv,
            "reading_type": "modbustcp",
            "vendor_id": f"v{i}",
            "address": {"host": f"10.0.{i // 8}.{i % 8 + 10}", "port": 502, "unit_id": 1 + i % 5},
        }
        for var in list(builtin[drv]["fields"])[:20]:
            readings[f"{key}_{var}"] = {"device": key, "var": var}
    store = KVStore()
    store.set("config", {"devices": devices, "readings": readings, "read_interval": 60})
    state = WebState(store, cache(), watch_broker=False)
    credentials.ensure_password(store)
    now = int(time.time())
    for k in range(60):  # an hour of history
        recs = [
            {
                "_d": key,
                "_vid": d["vendor_id"],
                **{r["var"]: 100.0 + k + i for i, r in enumerate(readings.values()) if r["device"] == key},
            }
            for key, d in devices.items()
        ]
        cache().set("last_readings", recs)
        cache().set("last_readings_ts", now - (60 - k) * 60)
        state.sample(bridges=False)
    ctx = Ctx(state)
    app = make_app(ctx)
    cookie = f"{auth.SESSION_COOKIE}={ctx.sessions.issue()}"

    def call(path: str) -> tuple[int, float]:
        from wsgiref.util import setup_testing_defaults

        env = {
            "PATH_INFO": path.split("?")[0],
            "QUERY_STRING": path.partition("?")[2],
            "HTTP_COOKIE": cookie,
            "REQUEST_METHOD": "GET",
            "wsgi.input": io.BytesIO(),
        }
        setup_testing_defaults(env)
        status = []
        started = time.perf_counter()
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        elapsed = time.perf_counter() - started
        assert body is not None
        return int(status[0].split()[0]), elapsed

    pages = [
        "/",
        "/live",
        "/api/live",
        "/api/history?device=dev00&field=P_total",
        "/config",
        "/config/device/dev07",
        "/config/add",
        "/test",
        "/scans",
        "/logs",
        "/settings",
        "/health",
        "/login",
    ]
    print(f"{args.devices} devices, {len(readings)} readings, {args.rounds} rounds; milliseconds per request")
    print(f"{'page':45} {'status':>6} {'median':>8} {'worst':>8}")
    worst_all = 0.0
    for p in pages:
        call(p)  # templates compiled once
        times, code = [], 0
        for _ in range(args.rounds):
            code, t = call(p)
            times.append(t * 1000)
        worst_all = max(worst_all, max(times))
        print(f"{p:45} {code:>6} {statistics.median(times):8.1f} {max(times):8.1f}")
    print(f"worst of all pages: {worst_all:.1f} ms (budget 200 ms)")
    state.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
