"""Benchmark the network readers (run by scripts/bench_read.py; alone: .venv/bin/python scripts/bench_read_net.py).

1. sma_speedwire: 3 simulated meters sending every second on loopback multicast, in a private
   network namespace (as root: `unshare -n`, lo up, 224.0.0.0/4 on lo): datagrams and time per cycle,
   and the cost of a silent meter (its timeout).
2. snmp: Debian's snmpd on a loopback port, libratum_ur5i (17 OIDs), v2c and v3 (SHA, AES-128):
   requests and time per cycle (the vendor OIDs are not served there: noSuchObject, which costs the
   agent the same work), and the cost of a silent agent.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, drivers

REPO = Path(__file__).resolve().parent.parent
CYCLES = 5


def _cycles(config: cfg.Config, keys: list[str]) -> tuple[float, float, BusPoller]:
    devices = [config.devices[k] for k in keys]
    poller = BusPoller(devices[0].bus_id, devices, 10)
    poller.poll(0)  # sockets, discovery, first datagrams: outside the measurement
    times, reqs = [], []
    for i in range(CYCLES):
        time.sleep(1.0)
        t0 = time.perf_counter()
        r = poller.poll(10 * (i + 1))
        times.append(time.perf_counter() - t0)
        reqs.append(r["requests"])
        assert not r["errors"] or all("noSuch" in e for es in r["errors"].values() for e in es), r["errors"]
    return statistics.mean(reqs), statistics.median(times), poller


def speedwire(builtin: dict) -> None:
    from ammp_edge.simulate_speedwire import SpeedwireSender

    serials = [1900000001, 1900000002, 1900000003]
    senders = [SpeedwireSender(builtin["sma_emeter_speedwire"], s, interval=1.0).start() for s in serials]
    fields = list(builtin["sma_emeter_speedwire"]["fields"])
    devices = {
        f"m{s}": {
            "driver": "sma_emeter_speedwire",
            "reading_type": "sma_speedwire",
            "vendor_id": str(s),
            "timeout": 5,
            "address": {"serial": s},
        }  # fmt: skip
        for s in [*serials, 1900000009]
    }
    readings = {f"{k}_{f}": {"device": k, "var": f} for k in devices for f in fields}
    config = cfg.load({"devices": devices, "readings": readings}, builtin)
    try:
        reqs, cycle, _ = _cycles(config, [f"m{s}" for s in serials])
        print(f"sma_speedwire, 3 meters x {len(fields)} fields, one datagram a second each, median of {CYCLES}")
        print(f"  datagrams/cycle {reqs:.0f}   cycle {cycle * 1000:.1f} ms (one socket for the bus)")
        poller = BusPoller("speedwire", [config.devices["m1900000009"]], 10)
        t0 = time.perf_counter()
        poller.poll(0)
        print(f"  a silent meter (timeout 5 s) costs {time.perf_counter() - t0:.2f} s, then the backoff")
    finally:
        for s in senders:
            s.stop()


SNMPD_CONF = """[snmp] persistentDir {d}/persist
agentAddress udp:127.0.0.1:{port}
rocommunity public 127.0.0.1
createUser authpriv SHA "authpass123" AES "privpass123"
rouser authpriv priv
"""


def snmp(builtin: dict) -> None:
    if shutil.which("snmpd") is None:
        print("snmp: snmpd not installed (scripts/setup --test); skipped")
        return
    port = 16100 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as d:
        Path(d, "persist").mkdir()
        Path(d, "snmpd.conf").write_text(SNMPD_CONF.format(d=d, port=port))
        log = Path(d, "log")
        proc = subprocess.Popen(
            ["snmpd", "-f", "-Lf", str(log), "-C", "-c", f"{d}/snmpd.conf", "-p", f"{d}/pid"],
            env=dict(os.environ, MIBS=""),
        )
        try:
            deadline = time.monotonic() + 30
            while not (log.exists() and "NET-SNMP version" in log.read_text()) and time.monotonic() < deadline:
                time.sleep(0.05)
            v3 = {"version": 3, "user": "authpriv", "auth_protocol": "SHA", "auth_password": "authpass123",
                  "priv_protocol": "AES", "priv_password": "privpass123"}  # fmt: skip
            devices = {
                k: {
                    "driver": "libratum_ur5i",
                    "reading_type": "snmp",
                    "vendor_id": k,
                    "timeout": 2,
                    "address": {"host": "127.0.0.1", "port": p, **a},
                }  # fmt: skip
                for k, p, a in (("v2c", port, {}), ("v3", port, v3), ("silent", port + 1, {}))
            }
            fields = list(builtin["libratum_ur5i"]["fields"])
            readings = {f"{k}_{f}": {"device": k, "var": f} for k in devices for f in fields}
            config = cfg.load({"devices": devices, "readings": readings}, builtin)
            print(f"snmp, snmpd on loopback, libratum_ur5i ({len(fields)} OIDs), median of {CYCLES} cycles")
            for key in ("v2c", "v3"):
                reqs, cycle, _ = _cycles(config, [key])
                print(f"  {key:<4} requests/cycle {reqs:.0f}   cycle {cycle * 1000:.1f} ms")
            poller = BusPoller("snmp", [config.devices["silent"]], 10)
            t0 = time.perf_counter()
            poller.poll(0)
            print(f"  an agent port with nobody (ICMP unreachable) costs {time.perf_counter() - t0:.3f} s")
            import socket

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
                quiet.bind(("127.0.0.1", 0))
                silent = {**devices["silent"], "address": {"host": "127.0.0.1", "port": quiet.getsockname()[1]}}
                c2 = cfg.load({"devices": {"s": silent}, "readings": {"r": {"device": "s", "var": "temp"}}}, builtin)
                poller = BusPoller("snmp", [c2.devices["s"]], 10)
                t0 = time.perf_counter()
                poller.poll(0)
                print(f"  a silent agent (timeout 2 s) costs {time.perf_counter() - t0:.2f} s, then the backoff")
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> int:
    logging.disable(logging.WARNING)  # the silent devices' warnings are the point, not news
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    if "--in-netns" in sys.argv:
        speedwire(builtin)
        return 0
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        sys.stdout.flush()
        script = 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0" "$1" --in-netns'
        subprocess.run(["unshare", "-n", "sh", "-c", script, sys.executable, __file__], check=False)
    else:
        print("sma_speedwire: needs root for a private network namespace; skipped")
    print()
    snmp(builtin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
