"""Soak: the whole appliance for N minutes at a 1 s interval; prints numbers for the README.

  .venv/bin/python scripts/bench_soak.py [--minutes 30] [--drop-every 5] [--drop-seconds 20]

`ammp-edge up` (supervisord, mosquitto, bridge-config, publisher, node, webui, three bus programs: the
system and two simulated Modbus TCP gateways, two devices each) with no AMMP bridge and the custom
bridge (`mqtt_bridge_custom`, TLS with a CA and a password) to a second mosquitto standing in for the
cloud. Every --drop-every minutes that broker is stopped for --drop-seconds (a bridge drop; the bridge
comes back after its own 10..120 s backoff). At the end (after the backlog drained) it prints:

- cycles produced (a bus committed a readout with devices), arrived (every device of it at the remote
  broker), late (> 1 s after its last commit, or after the grouping grace period when a bus was
  missing), duplicated (a device of the cycle arrived more than once), over all cycles and over the
  steady ones (not within an outage: from 5 s before the drop, whose messages may not be confirmed
  yet and are sent again, until one cycle after the bridge was back);
- delivery latency p50 / p99 / max of the steady cycles, and the longest an outage cycle waited;
- RSS of each program at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a developer script: it reuses the tests' real-part helpers

from ammp_edge.core import drivers  # noqa: E402
from ammp_edge.simulate import Simulator  # noqa: E402
from helpers.appliance import Appliance, latencies, percentiles  # noqa: E402
from helpers.brokers import Recorder, cloud_broker, free_port, wait_until  # noqa: E402

NODE = "0123456789ab"
INTERVAL = 1
OUTAGE_BEFORE = 5  # s: a message sent this shortly before a drop may be unconfirmed then, and is sent again


def site(ports: list[int]) -> dict:
    devices: dict = {"logger": {"driver": "sys_generic", "reading_type": "sys", "vendor_id": "lg"}}
    readings: dict = {"lg": {"device": "logger", "var": "memory_usage"}}
    for g, port in enumerate(ports):
        for unit in (3, 4):
            name = f"inv{g}{unit}"
            devices[name] = {
                "driver": "sma_stp25000",
                "reading_type": "modbustcp",
                "vendor_id": name,
                "timeout": 1,
                "address": {"host": "127.0.0.1", "port": port, "unit_id": unit},
            }
            for var in ("P_total", "total_yield", "freq"):
                readings[f"{name}{var}"] = {"device": name, "var": var}
    return {"devices": devices, "readings": readings, "read_interval": INTERVAL, "read_roundtime": True}


def rss(app: Appliance) -> dict[str, float]:
    """MB of RSS per supervisord program (and supervisord itself)."""
    out: dict[str, float] = {}
    for name, info in app.programs().items():
        try:
            proc = psutil.Process(info["pid"])
            out[name] = (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))) / 2**20
        except (psutil.NoSuchProcess, ValueError):
            pass
    for p in app.tree():
        try:
            if "supervisord" in " ".join(p.cmdline()):
                out["supervisord"] = p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--drop-every", type=float, default=5.0, help="minutes between bridge drops")
    ap.add_argument("--drop-seconds", type=float, default=20.0)
    args = ap.parse_args()
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    drv = builtin["sma_stp25000"]
    topic = f"a/{NODE}/u/data"
    with tempfile.TemporaryDirectory(prefix="soak") as tmp:
        root = Path(tmp)
        sims = [Simulator({3: drv, 4: drv}, port).start() for port in [free_port() for _ in range(2)]]
        cloud = cloud_broker(root, node_user=NODE, node_password="node-secret")
        rec = Recorder(cloud.admin_port, topic, **cloud.admin_auth, client_id="soak-recorder").start()
        app = Appliance(root / "a", site([s.port for s in sims]), cloud, NODE, bridge="custom")
        outages: list[tuple[float, float]] = []  # (drop, back + one cycle)
        try:
            app.start()
            app.wait_back(120)
            start = time.time()
            rss_start = rss(app)
            end = start + args.minutes * 60
            next_drop = start + args.drop_every * 60
            while time.time() < end:
                if time.time() >= next_drop and time.time() + args.drop_seconds + 60 < end:
                    drop = time.time()
                    cloud.stop()
                    time.sleep(args.drop_seconds)
                    cloud.start()
                    back = app.wait_back(300, "the bridge back")
                    outages.append((drop, back + INTERVAL + 1))
                    print(
                        f"bridge drop at +{drop - start:.0f} s: down {args.drop_seconds:.0f} s, back after "
                        f"{back - drop:.1f} s",
                        flush=True,
                    )
                    next_drop += args.drop_every * 60
                time.sleep(0.5)
            rss_end = rss(app)
            stopped_at = time.time()
            # let the last cycles (and any backlog) arrive
            produced = {(t, d) for t, _, _, devs in app.commits() if t < stopped_at - 2 for d in devs}
            try:
                wait_until(
                    lambda: (
                        produced
                        <= {
                            (json.loads(m.payload)["t"], r["_d"])
                            for m in rec.on(topic)
                            for r in json.loads(m.payload)["r"]
                        }
                    ),
                    120,
                    1,
                )
            except AssertionError:
                pass
        finally:
            app.stop()
            rec.stop()
            cloud.stop()
            for s in sims:
                s.stop()
        report(app, rec, topic, start, stopped_at - 2, outages, rss_start, rss_end, args)
    return 0


def report(app, rec, topic, start, until, outages, rss_start, rss_end, args) -> None:
    lat = [x for x in latencies(app, rec, INTERVAL, topic) if start <= x.t < until]
    copies: Counter = Counter()
    for m in rec.on(topic):
        msg = json.loads(m.payload)
        for r in msg["r"]:
            copies[(msg["t"], r["_d"])] += 1

    def in_outage(t: int) -> bool:
        return any(a - OUTAGE_BEFORE <= t < b for a, b in outages)

    cycles: dict[int, list] = {}
    for x in lat:
        cycles.setdefault(x.t, []).append(x)
    devices_of = {}
    for t, _, _, devs in app.commits():
        devices_of.setdefault(t, set()).update(devs)

    def summary(ts: list[int]) -> tuple[int, int, int, int]:
        arrived = [t for t in ts if all(x.arrived is not None for x in cycles[t])]
        late = [t for t in arrived if max(x.delay or 0 for x in cycles[t]) > 1.0]
        dup = [t for t in ts if any(copies[(t, d)] > 1 for d in devices_of.get(t, ()))]
        return len(ts), len(arrived), len(late), len(dup)

    all_t = sorted(cycles)
    steady = [t for t in all_t if not in_outage(t)]
    held = [t for t in all_t if in_outage(t)]
    print(
        f"\nsoak: {args.minutes:.0f} min at {INTERVAL} s, 3 buses (sys + 2 Modbus TCP gateways x 2 devices), "
        f"custom bridge over TLS, {len(outages)} bridge drops of {args.drop_seconds:.0f} s"
    )
    for name, ts in (("all cycles", all_t), ("steady cycles", steady), ("cycles within an outage", held)):
        n, arrived, late, dup = summary(ts)
        print(f"  {name:<24} produced {n}, arrived {arrived}, late (>1 s) {late}, duplicated {dup}")
    delays = [max(x.delay or 0 for x in cycles[t]) for t in steady if all(x.arrived for x in cycles[t])]
    p50, p99, worst = percentiles(delays)
    print(f"  latency, steady cycles: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {worst * 1000:.0f} ms")
    waits = [max(x.delay or 0 for x in cycles[t]) for t in held if all(x.arrived for x in cycles[t])]
    if waits:
        print(f"  longest wait of a cycle within an outage: {max(waits):.1f} s")
    print(
        "  RSS MB (start -> end): "
        + ", ".join(
            f"{k} {rss_start.get(k, float('nan')):.0f}->{rss_end.get(k, float('nan')):.0f}"
            for k in sorted(set(rss_start) | set(rss_end))
        )
    )


if __name__ == "__main__":
    sys.exit(main())
