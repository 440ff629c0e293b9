"""Benchmark Modbus RTU reading: our request planner against one request per field.

  .venv/bin/python scripts/bench_read_rtu.py [--cycles 5] [--baud 9600] [--latency-ms 20]

An eastron_sdm530 (24 fields, fncode 4 floats) is simulated as an RTU slave (pymodbus serial server)
on one end of a socat pty pair and read through our RtuTransport (minimalmodbus) on the other end,
all fields, for each plan:

  planner          the default plan (RTU max_gap 8 registers)
  planner gap 0    the planner without reading gap registers along
  one per field    address.merge: false (one request per field)

A pty carries bytes instantly, so the simulator emulates the line: each response is held back for
the airtime of the request and the response at the baud rate (8N1: 10 bits per byte) plus the
device latency. The master side is real: minimalmodbus waits the 3.5-character silence before each
request. The "line model" column is what those add up to per cycle:
sum over requests of (3.5 x 11 bits silence + (request + response bytes) x 10 bits) / baud + latency.
Requests and cycle time are averaged over the measured cycles (after one cycle that opens the port).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("AE_ROOT_DIR", str(REPO))

from ammp_edge.bus.poller import BusPoller  # noqa: E402
from ammp_edge.core import config as cfg, drivers  # noqa: E402
from ammp_edge.simulate import Simulator  # noqa: E402
from helpers.serial_lines import pty_pair  # noqa: E402

DRIVER = "eastron_sdm530"
PLANS = (("planner", {}), ("planner gap 0", {"max_gap": 0}), ("one per field", {"merge": False}))


def site(port: str, fields, baud: int, **addr) -> dict:
    return {
        "devices": {
            "meter": {
                "driver": DRIVER,
                "reading_type": "modbusrtu",
                "vendor_id": "bench",
                "timeout": 2,
                "address": {"device": port, "slaveaddr": 1, "baudrate": baud, **addr},
            }
        },
        "readings": {f: {"device": "meter", "var": f} for f in fields},
        "read_interval": 10,
    }


def line_model(blocks, baud: int, latency: float) -> float:
    silence = max(3.5 * 11 / baud, 0.00175)
    return sum(silence + (8 + 5 + 2 * b.count) * 10 / baud + latency for b in blocks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()
    builtin = drivers.load_builtin_drivers(REPO / "drivers")
    driver = builtin[DRIVER]
    fields = list(driver["fields"])
    latency = args.latency_ms / 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp, pty_pair(Path(tmp)) as (master, slave):
        sim = Simulator({1: driver}, serial_port=slave, baudrate=args.baud, delay=latency, emulate_airtime=True).start()
        try:
            for label, addr in PLANS:
                config = cfg.load(site(master, fields, args.baud, **addr), builtin)
                assert not config.errors, config.errors
                ((bus_id, devices),) = config.buses().items()
                poller = BusPoller(bus_id, devices, config.read_interval)
                try:
                    poller.poll(0)  # opens the port
                    times, reqs = [], []
                    for i in range(args.cycles):
                        t0 = time.perf_counter()
                        r = poller.poll(10 * (i + 1))
                        times.append(time.perf_counter() - t0)
                        reqs.append(r["requests"])
                        assert not r["errors"], r["errors"]
                        assert len(r["devices"][0]) == 2 + len(fields)
                    model = line_model(poller.readers["meter"].blocks, args.baud, latency)
                finally:
                    poller.close()
                rows.append((label, statistics.mean(reqs), statistics.mean(times), model))
        finally:
            sim.stop()

    print(
        f"Modbus RTU {args.baud} baud 8N1 (emulated airtime), {DRIVER} ({len(fields)} fields), "
        f"device latency {args.latency_ms:.0f} ms, mean of {args.cycles} cycles"
    )
    print(f"  {'plan':<15} {'requests/cycle':>15} {'cycle ms':>10} {'line model ms':>14}")
    for label, reqs, secs, model in rows:
        print(f"  {label:<15} {reqs:>15.0f} {secs * 1000:>10.1f} {model * 1000:>14.1f}")
    planner, single = rows[0], rows[-1]
    print(f"  planner: {single[1] / planner[1]:.1f}x fewer requests, cycle {single[2] / planner[2]:.1f}x shorter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
