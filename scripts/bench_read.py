"""Benchmark the reading engine; prints numbers for the README.

  .venv/bin/python scripts/bench_read.py [--cycles N] [--latency-ms MS]

1. Modbus TCP, upstream sma_stp25000 driver (31 fields), against a simulated device that adds
   MS (default 20) per response: requests per cycle and cycle wall time with our planner and with one
   request per field; the ratio of cycle time to requests x round trip.
2. Modbus RTU at 9600 baud, eastron_sdm530 (scripts/bench_read_rtu.py, if present); sma_speedwire and
   snmp (scripts/bench_read_net.py): datagrams or requests and time per cycle, a silent device's cost;
   rawserial and rawtcp devices, each with the cost of a silent one (scripts/bench_read_raw.py).
2a. The mqtt reader against a local mosquitto (scripts/bench_read_mqtt.py, if present).
   A SunSpec inverter through its generated driver (scripts/bench_read_sunspec.py): the model walk,
   requests per cycle against one per field.
3. Peak RSS (VmHWM) of a real `ammp-edge bus` process polling that device every second.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ammp_edge.bus.poller import BusPoller
from ammp_edge.core import config as cfg, drivers
from ammp_edge.simulate import Simulator

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site(port: int, driver: str, fields, merge: bool = True) -> dict:
    addr = {"host": "127.0.0.1", "port": port, "unit_id": 3}
    if not merge:
        addr["merge"] = False
    return {
        "devices": {
            "inv": {"driver": driver, "reading_type": "modbustcp", "vendor_id": "bench", "timeout": 5, "address": addr}
        },
        "readings": {f: {"device": "inv", "var": f} for f in fields},
        "read_interval": 1,
    }


def measure_tcp(builtin: dict, cycles: int, latency: float) -> dict:
    driver = builtin["sma_stp25000"]
    sim = Simulator({3: driver}, free_port(), delay=latency).start()
    out = {}
    try:
        for label, merge in (("planner", True), ("one per field", False)):
            config = cfg.load(site(sim.port, "sma_stp25000", list(driver["fields"]), merge), builtin)
            ((bus_id, devices),) = config.buses().items()
            poller = BusPoller(bus_id, devices, 1)
            poller.poll(0)  # connect outside the measurement
            times, reqs = [], []
            for i in range(cycles):
                t0 = time.perf_counter()
                r = poller.poll(i + 1)
                times.append(time.perf_counter() - t0)
                reqs.append(r["requests"])
                assert len(r["devices"][0]) == 2 + len(driver["fields"]), r["errors"]
            poller.close()
            out[label] = {"requests": statistics.mean(reqs), "cycle_s": statistics.median(times)}
        # round trip of one request as the device answers it (latency plus loopback)
        config = cfg.load(site(sim.port, "sma_stp25000", ["P_total"]), builtin)
        ((bus_id, devices),) = config.buses().items()
        poller = BusPoller(bus_id, devices, 1)
        poller.poll(0)
        rtts = []
        for i in range(cycles):
            t0 = time.perf_counter()
            poller.poll(i + 1)
            rtts.append(time.perf_counter() - t0)
        poller.close()
        out["rtt_s"] = statistics.median(rtts)
    finally:
        sim.stop()
    return out


def measure_rss(builtin: dict, seconds: float) -> float:
    driver = builtin["sma_stp25000"]
    sim = Simulator({3: driver}, free_port(), delay=0.02).start()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "c.json"
        conf.write_text(json.dumps(site(sim.port, "sma_stp25000", list(driver["fields"]))))
        env = dict(os.environ, AE_DATA_DIR=tmp, AE_TEMP_DIR=tmp, AE_ROOT_DIR=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "ammp_edge", "bus", f"tcp_127.0.0.1_{sim.port}", "--config", str(conf)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(seconds)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    sim.stop()
    return hwm / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--rss-seconds", type=float, default=12.0)
    args = ap.parse_args()
    os.environ.setdefault("AE_ROOT_DIR", str(REPO))
    builtin = drivers.load_builtin_drivers(REPO / "drivers")

    tcp = measure_tcp(builtin, args.cycles, args.latency_ms / 1000)
    p, o, rtt = tcp["planner"], tcp["one per field"], tcp["rtt_s"]
    print(
        f"Modbus TCP, sma_stp25000 (31 fields), device latency {args.latency_ms:.0f} ms, median of {args.cycles} cycles"
    )
    print(f"  {'plan':<15} {'requests/cycle':>15} {'cycle ms':>10} {'cycle / (requests x rtt)':>26}")
    for label, m in (("planner", p), ("one per field", o)):
        ratio = m["cycle_s"] / (m["requests"] * rtt)
        print(f"  {label:<15} {m['requests']:>15.0f} {m['cycle_s'] * 1000:>10.1f} {ratio:>26.2f}")
    fewer = o["requests"] / p["requests"]
    print(f"  one request round trip: {rtt * 1000:.1f} ms; planner sends {fewer:.1f}x fewer requests")

    for extra in ("bench_read_rtu.py", "bench_read_net.py", "bench_read_raw.py"):  # RTU; speedwire, snmp; raw
        if (REPO / "scripts" / extra).exists():
            print()
            sys.stdout.flush()
            subprocess.run([sys.executable, str(REPO / "scripts" / extra)], check=False)

    mqtt = REPO / "scripts" / "bench_read_mqtt.py"
    if mqtt.exists():
        print()
        sys.stdout.flush()
        subprocess.run([sys.executable, str(mqtt)], check=False)
    sunspec = REPO / "scripts" / "bench_read_sunspec.py"  # a SunSpec inverter through its generated driver
    if sunspec.exists():
        print()
        sys.stdout.flush()
        subprocess.run([sys.executable, str(sunspec), "--latency-ms", str(args.latency_ms)], check=False)

    rss = measure_rss(builtin, args.rss_seconds)
    print(f"\nbus process peak RSS (VmHWM) polling sma_stp25000 every 1 s for {args.rss_seconds:.0f} s: {rss:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
