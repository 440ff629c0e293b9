"""Benchmark the durable data path end to end; prints numbers for the README.

  .venv/bin/python scripts/bench_pipeline.py [--backlog 10080] [--minutes 3]

The whole appliance (`ammp-edge up`: supervisord, mosquitto, bridge-config, publisher, node, three bus
programs polling three simulated Modbus TCP devices every 10 s) bridged over TLS with a password to a
second mosquitto standing in for the AMMP cloud. Prints:
1. time and messages per second to drain a backlog of --backlog messages (a week of one-minute
   readouts) to the cloud broker while live cycles continue, and how late the live cycles were;
2. cycle start jitter against the round time, p50 and p99, from the buses' commit logs;
3. total RSS of all programs except mosquitto (and with supervisord and `up`);
4. CPU seconds per hour of all programs at the 10 s interval, measured over --minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a developer script: it reuses the tests' real-part helpers

from ammp_edge.core import drivers  # noqa: E402
from ammp_edge.delivery.outbox import Outbox  # noqa: E402
from ammp_edge.simulate import Simulator  # noqa: E402
from helpers.appliance import Appliance  # noqa: E402
from helpers.brokers import Recorder, cloud_broker, free_port, wait_until  # noqa: E402

NODE = "0123456789ab"
DELAY = re.compile(r"committed t=(\d+) key=\d+ devices=\S* delay=([-\d.]+)")


def site(ports: list[int]) -> dict:
    devices, readings = {}, {}
    for i, port in enumerate(ports):
        devices[f"inv{i}"] = {
            "driver": "sma_stp25000",
            "reading_type": "modbustcp",
            "vendor_id": f"i{i}",
            "timeout": 2,
            "address": {"host": "127.0.0.1", "port": port, "unit_id": 3},
        }
        for var in ("P_total", "P_L1", "P_L2", "P_L3", "total_yield", "V_L1", "freq", "temp_internal"):
            readings[f"{i}{var}"] = {"device": f"inv{i}", "var": var}
    return {"devices": devices, "readings": readings, "read_interval": 10, "read_roundtime": True}


def prefill(app: Appliance, n: int) -> None:
    box = Outbox(app.data / "outbox")
    t0 = int(time.time()) // 60 * 60 - n * 60
    devs = [
        {
            "_d": f"inv{i}",
            "_vid": f"i{i}",
            "P_total": 12345.0,
            "P_L1": 4115.0,
            "P_L2": 4115.0,
            "P_L3": 4115.0,
            "total_yield": 240300950.0,
            "V_L1": 230.12,
            "freq": 50.01,
            "temp_internal": 41.5,
        }
        for i in range(3)
    ]
    for k in range(n):
        box.put({"t": t0 + 60 * k, "bus": "backlog", "devices": devs, "duration": 0.01, "requests": 3, "errors": {}})
    box.close()


def programs_memory_cpu(app: Appliance) -> tuple[dict[str, float], float]:
    """({"rss programs", "rss all", "pss all", "per program"} in MB, CPU seconds of the whole tree). "programs" are what
    supervisord runs, less mosquitto; "all" adds supervisord and `up`. PSS counts shared pages once."""
    mem = {"rss programs": 0.0, "rss all": 0.0, "pss all": 0.0}
    per_program: dict[str, float] = {}
    cpu = 0.0
    for p in app.tree():
        try:
            info = p.memory_full_info()
            t = p.cpu_times()
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        cpu += t.user + t.system
        if "mosquitto" in p.name():
            continue
        mem["rss all"] += info.rss / 2**20
        mem["pss all"] += info.pss / 2**20
        if "supervisord" not in cmd and " up" not in cmd:
            mem["rss programs"] += info.rss / 2**20
            name = cmd.split("ammp_edge ", 1)[-1].split(" --")[0][:28]
            per_program[name] = per_program.get(name, 0.0) + info.rss / 2**20
    mem["per program"] = per_program
    return mem, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=10080)
    ap.add_argument("--minutes", type=float, default=3.0)
    args = ap.parse_args()
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    with tempfile.TemporaryDirectory(prefix="bp") as tmp:
        tmp = Path(tmp)
        sims = [Simulator({3: builtin["sma_stp25000"]}, port).start() for port in [free_port() for _ in range(3)]]
        cloud = cloud_broker(tmp, node_user=NODE, node_password="node-secret")
        rec = Recorder(cloud.admin_port, f"a/{NODE}/u/data", **cloud.admin_auth).start()
        app = Appliance(tmp / "a", site([s.port for s in sims]), cloud, NODE)
        prefill(app, args.backlog)
        started = time.monotonic()
        app.start()
        try:

            def backlog_arrived():
                msgs = rec.on(f"a/{NODE}/u/data")
                return sum(1 for m in msgs if json.loads(m.payload)["t"] < started_wall) >= args.backlog

            started_wall = time.time() - 5
            wait_until(lambda: rec.on(f"a/{NODE}/u/data"), 120, 0.05, what="the first message at the cloud")
            first = time.monotonic()
            wait_until(backlog_arrived, 600, 0.2, what="the backlog at the cloud")
            drain = time.monotonic() - first
            live = [json.loads(m.payload) for m in rec.on(f"a/{NODE}/u/data")]
            live = [m for m in live if m["t"] >= started_wall]
            print(
                f"backlog: {args.backlog} messages drained to the cloud broker (TLS bridge) in {drain:.1f} s "
                f"= {args.backlog / drain:.0f} msg/s (first to last arrival; "
                f"`up` to the first: {first - started:.1f} s); "
                f"{len(live)} live cycles published meanwhile"
            )
            _, cpu0 = programs_memory_cpu(app)
            t0 = time.monotonic()
            time.sleep(args.minutes * 60)
            mem, cpu1 = programs_memory_cpu(app)
            per_hour = (cpu1 - cpu0) / (time.monotonic() - t0) * 3600
            delays = [float(d) * 1000 for _, d in DELAY.findall(app.logs("bus-"))]
            delays.sort()
            if delays:
                print(
                    f"cycle start jitter (start - round time) over {len(delays)} bus cycles: "
                    f"p50 {statistics.median(delays):.1f} ms, "
                    f"p99 {delays[int(0.99 * (len(delays) - 1))]:.1f} ms, max {delays[-1]:.1f} ms"
                )
            print(
                f"memory, all programs but mosquitto (3 buses, publisher, node, bridge-config, webui): "
                f"RSS {mem['rss programs']:.0f} MB; with supervisord and up: RSS {mem['rss all']:.0f} MB, "
                f"PSS {mem['pss all']:.0f} MB"
            )
            print("  RSS per program: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(mem["per program"].items())))
            print(
                f"CPU, all programs incl. mosquitto, 10 s interval, 3 simulated devices on 3 buses: "
                f"{per_hour:.0f} s per hour "
                f"(measured over {args.minutes:.1f} min)"
            )
        finally:
            app.stop()
            rec.stop()
            cloud.stop()
            for s in sims:
                s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
